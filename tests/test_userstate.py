"""Unit tests of UserState: sequence trimming, dedupe, co-occurrence partners, attribution, click counters."""

from __future__ import annotations

import pytest

from streamrank.config import Settings
from streamrank.events.types import TYPE_INDEX
from streamrank.stream import userstate
from streamrank.stream.userstate import PendingImpression, PendingRequest, UserState
from streamrank.v1 import events_pb2

CLICK, ATC, BUY = events_pb2.CLICK, events_pb2.ADD_TO_CART, events_pb2.PURCHASE
T0 = 1_700_000_000_000


def make_settings(**changes: object) -> Settings:
    s = Settings(**changes)  # type: ignore[arg-type]
    s.validate()
    return s


def add(user: UserState, item: str, etype: int, ts: int, settings: Settings, cat: str = "", session: str = "") -> None:
    """Appends one interaction the way the processor does: the newest event time first, then the behaviour."""
    user.max_ts = max(user.max_ts, ts)
    user.append_behavior(item, etype, ts, cat, session, settings)


def columns(user: UserState) -> list[tuple[str, int, int, str, str]]:
    return list(zip(user.seq_items, user.seq_types, user.seq_ts, user.seq_cats, user.seq_sessions, strict=True))


# --- sequence trimming -------------------------------------------------------------------------------
def test_sequence_keeps_newest_max_sequence_length_with_all_columns_aligned() -> None:
    s = make_settings(max_sequence_length=3, feature_sequence_length=2)
    u = UserState("u")
    for i in range(5):
        add(u, f"i{i}", CLICK if i % 2 else BUY, T0 + i, s, cat=f"c{i}", session=f"s{i}")
    assert columns(u) == [
        ("i2", BUY, T0 + 2, "c2", "s2"),
        ("i3", CLICK, T0 + 3, "c3", "s3"),
        ("i4", BUY, T0 + 4, "c4", "s4"),
    ]
    # snapshot() gives the newest feature_sequence_length behaviours, as copies.
    items, types, stamps, cats = u.snapshot(s.feature_sequence_length)
    assert (items, types, stamps, cats) == (["i3", "i4"], [CLICK, BUY], [T0 + 3, T0 + 4], ["c3", "c4"])
    items.append("mutated")
    assert u.seq_items == ["i2", "i3", "i4"]


def test_retention_is_per_type_relative_to_the_newest_event() -> None:
    s = make_settings(click_retention_ms=1_000, add_to_cart_retention_ms=2_000, purchase_retention_ms=5_000)
    u = UserState("u")
    add(u, "old-click", CLICK, T0, s)
    add(u, "old-cart", ATC, T0, s)
    add(u, "old-buy", BUY, T0, s)
    add(u, "edge-click", CLICK, T0 + 500, s)
    # Exactly click_retention_ms after the old click: still kept (the bound is inclusive).
    add(u, "c1", CLICK, T0 + 1_000, s)
    assert u.seq_items == ["old-click", "old-cart", "old-buy", "edge-click", "c1"]
    # 1.5 s after the old ones: the click is past its retention, the cart and the purchase are not.
    add(u, "c2", CLICK, T0 + 1_500, s)
    assert u.seq_items == ["old-cart", "old-buy", "edge-click", "c1", "c2"]
    add(u, "c3", CLICK, T0 + 2_001, s)
    assert u.seq_items == ["old-buy", "c2", "c3"]
    add(u, "c4", CLICK, T0 + 5_001, s)
    assert u.seq_items == ["c4"]


def test_an_equally_old_purchase_stays_while_the_click_is_dropped() -> None:
    s = make_settings(click_retention_ms=1_000, purchase_retention_ms=10_000)
    u = UserState("u")
    add(u, "click", CLICK, T0, s)
    add(u, "buy", BUY, T0, s)
    add(u, "now", CLICK, T0 + 3_000, s)
    assert columns(u) == [("buy", BUY, T0, "", ""), ("now", CLICK, T0 + 3_000, "", "")]


def test_out_of_order_events_keep_arrival_order_and_are_trimmed_by_their_own_age() -> None:
    s = make_settings(click_retention_ms=1_000, purchase_retention_ms=10_000)
    u = UserState("u")
    add(u, "a", CLICK, T0 + 500, s)
    add(u, "late", CLICK, T0, s)  # arrives after a newer event
    assert u.seq_items == ["a", "late"]
    assert u.seq_ts == [T0 + 500, T0]
    assert u.max_ts == T0 + 500
    add(u, "b", CLICK, T0 + 1_200, s)
    # "late" (1.2 s old) is gone although it sits after "a" (0.7 s old) in the sequence.
    assert u.seq_items == ["a", "b"]
    # An event older than its retention relative to the user's newest one never enters the sequence...
    add(u, "stale-click", CLICK, T0 - 5_000, s)
    assert "stale-click" not in u.seq_items
    # ...while an equally old purchase does, at the end (arrival order).
    add(u, "stale-buy", BUY, T0 - 5_000, s)
    assert u.seq_items == ["a", "b", "stale-buy"]
    assert u.max_ts == T0 + 1_200


def test_length_and_retention_trim_together() -> None:
    s = make_settings(max_sequence_length=2, feature_sequence_length=2, click_retention_ms=1_000)
    u = UserState("u")
    add(u, "buy", BUY, T0, s)
    add(u, "x", CLICK, T0 + 10, s)
    add(u, "y", CLICK, T0 + 20, s)
    assert u.seq_items == ["x", "y"]
    add(u, "z", CLICK, T0 + 2_000, s)
    assert u.seq_items == ["z"]


# --- dedupe ------------------------------------------------------------------------------------------
def test_is_duplicate_recognises_a_repeat() -> None:
    s = make_settings(dedupe_horizon_ms=1_000)
    u = UserState("u")
    assert u.is_duplicate("e1", T0, s) is False
    assert u.is_duplicate("e1", T0, s) is True
    assert u.is_duplicate("e1", T0 + 500, s) is True  # a copy with another timestamp is still the same id
    assert u.is_duplicate("e2", T0, s) is False
    assert u.is_duplicate("e2", T0, s) is True


def test_dedupe_horizon_pruning_forgets_old_ids_and_keeps_recent_ones() -> None:
    s = make_settings(dedupe_horizon_ms=1_000)
    u = UserState("u")
    u.max_ts = T0
    assert u.is_duplicate("old", T0, s) is False
    u.max_ts = T0 + 10_000  # the user moved on far past the horizon
    fresh = [f"new{i}" for i in range(100)]
    for eid in fresh:
        assert u.is_duplicate(eid, T0 + 10_000, s) is False
    # The pruning is bounded: the state does not keep ids older than the horizon once it grows.
    assert "old" not in u.seen
    assert len(u.seen) <= 100
    assert u.is_duplicate("old", T0, s) is False, "an id older than the horizon is forgotten"
    for eid in fresh:
        assert u.is_duplicate(eid, T0 + 10_000, s) is True, "ids within the horizon survive the pruning"


def test_dedupe_ids_within_the_horizon_survive_pruning() -> None:
    s = make_settings(dedupe_horizon_ms=1_000)
    u = UserState("u")
    u.max_ts = T0 + 1_000
    assert u.is_duplicate("too-old", T0 - 251, s) is False  # more than 5/4 of the horizon old
    assert u.is_duplicate("edge", T0, s) is False  # exactly horizon old: still inside
    for i in range(100):
        assert u.is_duplicate(f"e{i}", T0 + 1_000, s) is False
    assert "too-old" not in u.seen, "the pruning ran"
    assert u.is_duplicate("edge", T0, s) is True


def test_dedupe_memory_is_bounded_and_keeps_the_newest_ids() -> None:
    s = make_settings(dedupe_horizon_ms=10**12)  # nothing leaves by age: only the cap prunes
    u = UserState("u")
    cap = userstate.MAX_SEEN_IDS
    peak = 0
    for i in range(3 * cap):
        assert u.is_duplicate(f"e{i}", T0 + i, s) is False
        peak = max(peak, len(u.seen))
    assert cap <= peak <= cap + cap // 4, peak
    newest = [f"e{i}" for i in range(2 * cap, 3 * cap)]
    assert all(u.is_duplicate(eid, T0, s) for eid in newest), "the newest MAX_SEEN_IDS ids are always kept"
    assert "e0" not in u.seen


# --- co-occurrence partners --------------------------------------------------------------------------
def test_cooc_partners_same_session_or_within_window() -> None:
    s = make_settings(cooc_window_ms=1_000)
    u = UserState("u")
    add(u, "a", CLICK, T0, s, session="s1")
    add(u, "b", CLICK, T0 + 100, s, session="s1")
    add(u, "c", CLICK, T0 + 5_000, s, session="s2")
    # Same session reaches back beyond the window; the time window reaches across sessions.
    assert sorted(u.cooc_partners(T0 + 5_500, "s1", "x", s)) == ["a", "b", "c"]
    assert u.cooc_partners(T0 + 5_500, "s3", "x", s) == ["c"]
    # The window bound is strict: exactly cooc_window_ms apart does not co-occur.
    assert u.cooc_partners(T0 + 6_000, "s3", "x", s) == []
    assert u.cooc_partners(T0 + 5_999, "s3", "x", s) == ["c"]


def test_cooc_partners_empty_session_ids_do_not_match_each_other() -> None:
    s = make_settings(cooc_window_ms=1_000)
    u = UserState("u")
    add(u, "a", CLICK, T0, s, session="")
    assert u.cooc_partners(T0 + 60_000, "", "x", s) == []
    assert u.cooc_partners(T0 + 500, "", "x", s) == ["a"]


def test_cooc_partners_respects_the_lookback() -> None:
    s = make_settings(cooc_lookback=3)
    u = UserState("u")
    for i in range(6):
        add(u, f"i{i}", CLICK, T0 + i, s, session="s")
    assert sorted(u.cooc_partners(T0 + 10, "s", "x", s)) == ["i3", "i4", "i5"]


def test_cooc_partners_are_distinct() -> None:
    s = make_settings()
    u = UserState("u")
    for i, item in enumerate(["a", "b", "a", "b", "a"]):
        add(u, item, CLICK, T0 + i, s, session="s")
    partners = u.cooc_partners(T0 + 10, "s", "x", s)
    assert sorted(partners) == ["a", "b"]
    assert len(partners) == 2


def test_cooc_partners_empty_when_the_item_is_already_in_the_window() -> None:
    s = make_settings(cooc_window_ms=1_000, cooc_lookback=3)
    u = UserState("u")
    add(u, "a", CLICK, T0, s, session="s1")
    add(u, "b", CLICK, T0 + 10, s, session="s1")
    assert u.cooc_partners(T0 + 20, "s1", "a", s) == []  # e.g. a purchase after its click
    assert u.cooc_partners(T0 + 20, "s1", "b", s) == []
    # The same item outside the window (other session, long ago) does not block new partners.
    add(u, "c", CLICK, T0 + 100_000, s, session="s2")
    assert u.cooc_partners(T0 + 100_010, "s2", "a", s) == ["c"]
    # Nor does it outside the lookback.
    add(u, "d", CLICK, T0 + 100_001, s, session="s1")
    add(u, "e", CLICK, T0 + 100_002, s, session="s1")
    assert sorted(u.cooc_partners(T0 + 100_010, "s1", "a", s)) == ["c", "d", "e"]


# --- attribution -------------------------------------------------------------------------------------
def open_request(user: UserState, request_id: str, ts: int, *items: str) -> PendingRequest:
    req = PendingRequest(ts, "web", b"")
    for pos, item in enumerate(items):
        req.impressions[item] = PendingImpression(f"{request_id}-{item}", pos, "", "", "", None, (0, 0, 0, 0, 0))
    user.pending[request_id] = req
    return req


def labels(user: UserState, request_id: str, item: str) -> list[bool]:
    return user.pending[request_id].impressions[item].labels


def test_attribute_with_request_id_labels_only_that_request() -> None:
    s = make_settings(attribution_window_ms=1_000)
    u = UserState("u")
    open_request(u, "r1", T0, "a", "b")
    open_request(u, "r2", T0 + 100, "a")
    assert u.label_open(CLICK, "a", "r1", T0 + 200, s) is not None
    assert labels(u, "r1", "a") == [True, False, False]
    assert labels(u, "r2", "a") == [False, False, False], "the newer request is not labelled"
    assert labels(u, "r1", "b") == [False, False, False]
    assert u.label_open(BUY, "b", "r1", T0 + 300, s) is not None
    assert u.label_open(ATC, "b", "r1", T0 + 300, s) is not None
    assert labels(u, "r1", "b") == [False, True, True]


def test_attribute_with_request_id_refuses_other_requests_items_and_times() -> None:
    s = make_settings(attribution_window_ms=1_000)
    u = UserState("u")
    open_request(u, "r1", T0, "a")
    open_request(u, "r2", T0, "b")
    assert u.label_open(CLICK, "a", "nope", T0 + 10, s) is None
    assert u.label_open(CLICK, "b", "r1", T0 + 10, s) is None, "the item was not shown in r1"
    assert u.label_open(CLICK, "a", "r1", T0 - 1, s) is None, "before the impression"
    assert u.label_open(CLICK, "a", "r1", T0 + 1_001, s) is None, "after the window"
    assert labels(u, "r1", "a") == [False, False, False]
    assert labels(u, "r2", "b") == [False, False, False]
    assert u.label_open(CLICK, "a", "r1", T0 + 1_000, s) is not None, "the window end is inclusive"
    assert labels(u, "r1", "a") == [True, False, False]


def test_attribute_without_request_id_newest_open_request_wins() -> None:
    s = make_settings(attribution_window_ms=1_000)
    u = UserState("u")
    open_request(u, "r2", T0 + 100, "a")
    open_request(u, "r1", T0, "a")
    open_request(u, "r3", T0 + 50, "z")
    assert u.label_open(CLICK, "a", "", T0 + 200, s) is not None
    assert labels(u, "r2", "a") == [True, False, False]
    assert labels(u, "r1", "a") == [False, False, False]


def test_attribute_without_request_id_ignores_requests_opened_after_the_event() -> None:
    s = make_settings(attribution_window_ms=1_000)
    u = UserState("u")
    open_request(u, "r1", T0, "a")
    open_request(u, "r2", T0 + 100, "a")
    assert u.label_open(BUY, "a", "", T0 + 50, s) is not None
    assert labels(u, "r1", "a") == [False, False, True]
    assert labels(u, "r2", "a") == [False, False, False]


def test_attribute_outside_the_attribution_window_is_not_attributed() -> None:
    s = make_settings(attribution_window_ms=1_000)
    u = UserState("u")
    open_request(u, "old", T0, "a")
    open_request(u, "new", T0 + 900, "a")
    # "new" is the newest; at T0 + 1_500 "old" is out of its window anyway.
    assert u.label_open(CLICK, "a", "", T0 + 1_500, s) is not None
    assert labels(u, "new", "a") == [True, False, False]
    assert labels(u, "old", "a") == [False, False, False]
    # Outside every window: not attributed, nothing labelled.
    assert u.label_open(BUY, "a", "", T0 + 1_901, s) is None
    assert labels(u, "new", "a")[2] is False
    assert u.label_open(CLICK, "unknown-item", "", T0 + 950, s) is None


def test_attribute_tie_goes_to_the_request_opened_last() -> None:
    s = make_settings(attribution_window_ms=1_000)
    u = UserState("u")
    open_request(u, "first", T0, "a")
    open_request(u, "second", T0, "a")
    assert u.label_open(CLICK, "a", "", T0 + 10, s) is not None
    assert labels(u, "second", "a") == [True, False, False]
    assert labels(u, "first", "a") == [False, False, False]


# --- click counters ----------------------------------------------------------------------------------
def test_count_click_counts_items_and_non_empty_categories() -> None:
    u = UserState("u")
    u.count_click("a", "shoes")
    u.count_click("a", "shoes")
    u.count_click("b", "")
    assert u.item_clicks == {"a": 2, "b": 1}
    assert u.category_clicks == {"shoes": 2}


def test_count_click_counters_are_bounded_dropping_the_oldest_inserted_keys() -> None:
    bound = userstate.MAX_CROSS_KEYS
    u = UserState("u")
    for i in range(bound + 100):
        u.count_click(f"i{i}", f"c{i}")
    assert len(u.item_clicks) == bound
    assert len(u.category_clicks) == bound
    assert list(u.item_clicks) == [f"i{i}" for i in range(100, bound + 100)]
    assert "c99" not in u.category_clicks and f"c{bound + 99}" in u.category_clicks
    u.count_click(f"i{bound + 99}", "")
    assert u.item_clicks[f"i{bound + 99}"] == 2
    assert len(u.item_clicks) == bound


def test_type_index() -> None:
    assert [TYPE_INDEX[t] for t in (events_pb2.IMPRESSION, CLICK, ATC, BUY)] == [0, 1, 2, 3]
    with pytest.raises(KeyError):
        TYPE_INDEX[events_pb2.EVENT_TYPE_UNSPECIFIED]


def test_user_snapshot_bytes_do_not_depend_on_counter_order() -> None:
    """Re-sent snapshots equal their first copy: map fields are written in key order, not hash order."""
    from streamrank.stream.encode import user_snapshot

    s = make_settings()
    keys = [f"item{i}" for i in range(60)]
    first, second = UserState("u"), UserState("u")
    first.item_clicks = {k: i for i, k in enumerate(keys)}
    second.item_clicks = {k: first.item_clicks[k] for k in reversed(keys)}
    first.category_clicks = {"a": 1, "b": 2}
    second.category_clicks = {"b": 2, "a": 1}
    assert user_snapshot(first, s) == user_snapshot(second, s)
