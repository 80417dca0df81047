"""BatchProcessor in-process over a real RocksDB StateStore (no broker): replay, windows, dead letters, restarts."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamrank.config import DAY_MS, Settings
from streamrank.events import validate
from streamrank.stream.processor import BatchProcessor, BatchResult, Record
from streamrank.stream.store import StateStore
from streamrank.v1 import events_pb2, features_pb2

IMP, CLICK, BUY = events_pb2.IMPRESSION, events_pb2.CLICK, events_pb2.PURCHASE
T0 = 1_700_000_000_000
NOW = T0 + DAY_MS  # the processor's fixed wall clock
WINDOW = 1_000


def make_settings(**changes: object) -> Settings:
    s = Settings(**{"attribution_window_ms": WINDOW, "worker_id": "w-test", **changes})  # type: ignore[arg-type]
    s.validate()
    return s


def event(eid: str, user: str, item_id: str, etype: int, ts: int, **fields: object) -> bytes:
    values: dict[str, object] = {"scenario": "web", "session_id": f"s-{user}", **fields}
    e = events_pb2.Event(event_id=eid, user_id=user, item_id=item_id, type=etype, ts_ms=ts,
                         **values)  # type: ignore[arg-type]
    return e.SerializeToString()


class Feed:
    """Hands out records with consecutive offsets per partition, like a topic would."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("events")
        self.next: Counter[int] = Counter()

    def __call__(self, value: bytes | None, partition: int = 0) -> Record:
        offset = self.next[partition]
        self.next[partition] += 1
        return Record(self.topic, partition, offset, None, value)


Opener = Callable[[Settings], tuple[StateStore, BatchProcessor]]


@pytest.fixture
def open_worker(tmp_path: Path) -> Iterator[Opener]:
    """Opens (store, processor) on one state directory; call it again after closing the store to 'restart'."""
    stores: list[StateStore] = []

    def _open(settings: Settings) -> tuple[StateStore, BatchProcessor]:
        store = StateStore(tmp_path / "state")
        stores.append(store)
        return store, BatchProcessor(settings, store, now_ms=NOW)

    yield _open
    for store in stores:
        with contextlib.suppress(Exception):  # most are closed by the test already
            store.close()


def run(proc: BatchProcessor, records: list[Record]) -> BatchResult:
    result = proc.process(records)
    proc.commit(result)
    return result


def samples_of(result: BatchResult) -> dict[str, features_pb2.TrainingSample]:
    out = {}
    for key, value in result.samples:
        sample = features_pb2.TrainingSample.FromString(value)
        assert key == sample.user_id.encode()
        assert sample.sample_id not in out
        out[sample.sample_id] = sample
    return out


def labels(sample: features_pb2.TrainingSample) -> tuple[bool, bool, bool]:
    return sample.labels.click, sample.labels.add_to_cart, sample.labels.purchase


# --- offsets and restarts ----------------------------------------------------------------------------
def test_replayed_offsets_are_skipped_after_a_restart(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    records = [feed(event(f"e{i}", f"u{i % 2}", f"i{i % 3}", CLICK, T0 + i * 100)) for i in range(6)]
    store, proc = open_worker(settings)
    first = run(proc, records)
    assert (first.processed, first.replayed, first.duplicates) == (6, 0, 0)
    before = store.snapshot_state()
    assert before["offsets"] == {(settings.topic("events"), 0): 5}
    store.close()

    store, proc = open_worker(settings)  # a restarted worker re-reads from its last durable offsets
    again = run(proc, records)
    assert again.replayed == 6
    assert (again.processed, again.duplicates) == (0, 0), "replays are skipped before dedupe, not counted"
    assert again.samples == again.snapshots == again.cooc == again.dead == []
    assert store.snapshot_state() == before

    # A redelivery that overlaps the stored offset: at or below it is skipped, above it is new.
    tail = run(proc, [*records[4:], feed(event("e6", "u0", "i9", CLICK, T0 + 700))])
    assert (tail.replayed, tail.processed) == (2, 1)
    users = store.snapshot_state()["users"]
    assert users["u0"].totals == [0, 4, 0, 0]
    assert users["u1"].totals == [0, 3, 0, 0]
    assert users["u0"].seq_items == ["i0", "i2", "i1", "i9"]


def test_uncommitted_batch_is_redone_after_a_restart(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    records = [feed(event(f"e{i}", "u", f"i{i}", CLICK, T0 + i)) for i in range(4)]
    store, proc = open_worker(settings)
    run(proc, records[:2])
    proc.process(records[2:])  # crash before commit: this batch is lost
    store.close()
    store, proc = open_worker(settings)
    result = run(proc, records)
    assert (result.replayed, result.processed) == (2, 2)
    assert store.snapshot_state()["users"]["u"].seq_items == ["i0", "i1", "i2", "i3"]


# --- attribution windows and samples -----------------------------------------------------------------
def test_samples_are_emitted_once_the_window_closes_with_labels_and_point_in_time_sequence(
    open_worker: Opener,
) -> None:
    settings = make_settings()
    feed = Feed(settings)
    store, proc = open_worker(settings)
    shown = T0 + 100
    history = [
        feed(event("h1", "u", "hist", CLICK, T0, item={"category": "books"})),
        feed(event("h2", "u", "a", CLICK, T0 + 10)),
    ]
    request = [
        feed(event("imp-a", "u", "a", IMP, shown, request_id="r1", position=0, query="boots",
                   item={"category": "shoes", "brand": "acme", "shop": "s1", "price": 9.5})),
        feed(event("imp-b", "u", "b", IMP, shown, request_id="r1", position=1, query="boots")),
        feed(event("imp-c", "u", "c", IMP, shown, request_id="r1", position=2, query="boots")),
    ]
    answers = [
        feed(event("k-a", "u", "a", CLICK, T0 + 200, request_id="r1")),
        feed(event("p-b", "u", "b", BUY, T0 + 300)),  # no request id: the newest open impression of b
        feed(event("k-z", "u", "z", CLICK, T0 + 400)),  # not shown
    ]
    first = run(proc, history + request + answers)
    assert first.samples == []
    assert set(store.snapshot_state()["users"]["u"].pending) == {"r1"}

    # Another partition's event time does not close this partition's windows.
    other = run(proc, [feed(event("w1", "w", "x", CLICK, T0 + 50_000), partition=1)])
    assert other.samples == []
    # Exactly at the deadline the window is still open.
    at_deadline = run(proc, [feed(event("v1", "v", "x", CLICK, shown + WINDOW))])
    assert at_deadline.samples == []

    # The first event past the deadline closes it; a click on c that late is not attributed.
    closing = run(proc, [feed(event("k-c", "u", "c", CLICK, shown + WINDOW + 1, request_id="r1"))])
    samples = samples_of(closing)
    assert set(samples) == {"imp-a", "imp-b", "imp-c"}
    assert labels(samples["imp-a"]) == (True, False, False)
    assert labels(samples["imp-b"]) == (False, False, True)
    assert labels(samples["imp-c"]) == (False, False, False)
    for sample in samples.values():
        assert (sample.user_id, sample.request_id, sample.impression_ts_ms) == ("u", "r1", shown)
        assert (sample.scenario, sample.session_id, sample.query) == ("web", "s-u", "boots")
        # Point in time: the behaviours before the impression only, not the clicks/purchase after it.
        assert list(sample.behaviors.item_ids) == ["hist", "a"]
        assert list(sample.behaviors.types) == [CLICK, CLICK]
        assert list(sample.behaviors.ts_ms) == [T0, T0 + 10]
        assert list(sample.behaviors.categories) == ["books", ""]
    a = samples["imp-a"]
    assert (a.item_id, a.position) == ("a", 0)
    assert (a.item.category, a.item.brand, a.item.shop, a.item.price) == ("shoes", "acme", "s1", 9.5)
    assert a.counts.user_item_clicks == 1, "the click on a before the impression"
    assert a.counts.item_impressions == 0, "counters are taken before this impression"
    assert (samples["imp-b"].item_id, samples["imp-b"].position) == ("b", 1)
    assert not samples["imp-b"].item.HasField("price")
    assert closing.counters["samples"] == 3

    user = store.snapshot_state()["users"]["u"]
    assert user.pending == {}
    assert user.totals == [3, 5, 0, 1]
    later = run(proc, [feed(event("v2", "v", "x", CLICK, shown + 10 * WINDOW))])
    assert later.samples == [], "a closed request is emitted once"


def test_sample_sequence_is_the_newest_feature_sequence_length_behaviours(open_worker: Opener) -> None:
    settings = make_settings(max_sequence_length=5, feature_sequence_length=2)
    feed = Feed(settings)
    _, proc = open_worker(settings)
    history = [feed(event(f"h{i}", "u", f"i{i}", CLICK, T0 + i)) for i in range(4)]
    result = run(proc, [*history, feed(event("imp", "u", "a", IMP, T0 + 10)),
                        feed(event("v", "v", "x", CLICK, T0 + 11 + WINDOW))])
    (sample,) = samples_of(result).values()
    assert list(sample.behaviors.item_ids) == ["i2", "i3"]
    assert list(sample.behaviors.ts_ms) == [T0 + 2, T0 + 3]


def test_closing_a_window_touches_its_user_and_emits_a_snapshot(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    _, proc = open_worker(settings)
    run(proc, [feed(event("imp", "u", "a", IMP, T0, request_id="r"))])
    closing = run(proc, [feed(event("v1", "v", "x", CLICK, T0 + WINDOW + 1))])
    assert set(samples_of(closing)) == {"imp"}
    assert {key for key, _ in closing.snapshots} == {b"u", b"v"}
    assert set(closing.touched) == {"u", "v"}


def test_impression_without_request_id_is_its_own_request(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    _, proc = open_worker(settings)
    result = run(proc, [
        feed(event("imp1", "u", "a", IMP, T0)),
        feed(event("imp2", "u", "a", IMP, T0 + 50)),
        feed(event("k", "u", "a", CLICK, T0 + 60)),
        feed(event("v", "v", "x", CLICK, T0 + 60 + WINDOW)),
    ])
    samples = samples_of(result)
    assert {sid: s.request_id for sid, s in samples.items()} == {"imp1": "imp1", "imp2": "imp2"}
    assert labels(samples["imp2"]) == (True, False, False), "the newest open impression gets the click"
    assert labels(samples["imp1"]) == (False, False, False)


def test_pending_requests_survive_a_restart_and_close_after_it(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    store, proc = open_worker(settings)
    run(proc, [
        feed(event("imp-a", "u", "a", IMP, T0, request_id="r1", position=0), partition=3),
        feed(event("imp-b", "u", "b", IMP, T0, request_id="r1", position=1), partition=3),
    ])
    store.close()

    store, proc = open_worker(settings)
    assert [u.user_id for u in store.load_pending_users()] == ["u"]
    clicked = run(proc, [feed(event("k-b", "u", "b", CLICK, T0 + 500, request_id="r1"), partition=3)])
    assert clicked.samples == []
    store.close()

    # Another restart, then only another user's event: the deadline must come from the stored state.
    store, proc = open_worker(settings)
    closing = run(proc, [feed(event("v1", "v", "x", CLICK, T0 + WINDOW + 1), partition=3)])
    samples = samples_of(closing)
    assert set(samples) == {"imp-a", "imp-b"}
    assert labels(samples["imp-b"]) == (True, False, False)
    assert labels(samples["imp-a"]) == (False, False, False)
    assert store.load_pending_users() == []
    store.close()

    store, proc = open_worker(settings)
    after = run(proc, [feed(event("v2", "v", "x", CLICK, T0 + 10 * WINDOW), partition=3)])
    assert after.samples == [], "closed requests are not re-emitted after a restart"


# --- bad input and duplicates ------------------------------------------------------------------------
def test_invalid_values_go_to_dead_letters_with_their_reason(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    store, proc = open_worker(settings)
    good = event("g1", "u", "a", CLICK, T0)
    bad = [
        (None, validate.MALFORMED),
        (b"\xff\xff\xff\xff", validate.MALFORMED),
        (good[:-3], validate.MALFORMED),
        (event("b1", "", "a", CLICK, T0), validate.MISSING_FIELD),
        (event("b2", "u", "", CLICK, T0), validate.MISSING_FIELD),
        (event("", "u", "a", CLICK, T0), validate.MISSING_FIELD),
        (event("b3", "u" * (settings.max_id_length + 1), "a", CLICK, T0), validate.ID_TOO_LONG),
        (event("b4", "u", "a", 9, T0), validate.UNKNOWN_TYPE),
        (event("b5", "u", "a", CLICK, -5), validate.BAD_TIMESTAMP),
        (event("b6", "u", "a", CLICK, NOW + settings.max_future_skew_ms + 1), validate.FUTURE_TIMESTAMP),
        (event("b7", "u", "a", IMP, T0, position=-1), validate.BAD_POSITION),
        (event("b8", "u", "a", CLICK, T0, item={"price": -1.0}), validate.BAD_PRICE),
        (event("b9", "u", "a", CLICK, T0, item={"price": float("nan")}), validate.BAD_PRICE),
        (event("b10", "u", "a", CLICK, T0, query="q" * settings.max_event_bytes), validate.OVERSIZED),
    ]
    records = [feed(good)] + [feed(value) for value, _ in bad] + [feed(event("g2", "u", "b", CLICK, T0 + 1))]
    result = run(proc, records)
    assert [(d.record, d.reason) for d in result.dead] == [(r, reason) for r, (_, reason) in zip(records[1:-1], bad,
                                                                                                  strict=True)]
    assert all(d.detail for d in result.dead), "every dead letter says why"
    assert result.processed == 2
    assert result.counters == Counter({f"dlq.{reason}": n for reason, n in Counter(r for _, r in bad).items()})
    # The dead letters' offsets are durable too: a restart does not see them again.
    store.close()
    store, proc = open_worker(settings)
    assert store.load_offsets() == {(settings.topic("events"), 0): len(records) - 1}
    assert run(proc, records).replayed == len(records)
    assert store.snapshot_state()["users"]["u"].totals == [0, 2, 0, 0]


def test_event_at_the_future_skew_limit_is_accepted(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    _, proc = open_worker(settings)
    result = run(proc, [feed(event("e", "u", "a", CLICK, NOW + settings.max_future_skew_ms))])
    assert (result.processed, result.dead) == (1, [])


def test_duplicates_are_counted_and_folded_once_also_across_restarts(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    store, proc = open_worker(settings)
    e1 = event("e1", "u", "a", CLICK, T0)
    first = run(proc, [feed(e1), feed(e1), feed(event("e2", "u", "b", CLICK, T0 + 1))])
    assert (first.processed, first.duplicates) == (2, 1)
    second = run(proc, [feed(e1)])  # a copy at a new offset (e.g. a producer retry)
    assert (second.processed, second.duplicates) == (0, 1)
    store.close()
    store, proc = open_worker(settings)
    third = run(proc, [feed(event("e2", "u", "b", CLICK, T0 + 1)), feed(e1)])
    assert (third.processed, third.duplicates, third.replayed) == (0, 2, 0)
    state = store.snapshot_state()
    assert state["users"]["u"].totals == [0, 2, 0, 0]
    assert state["users"]["u"].seq_items == ["a", "b"]
    assert state["scenario"]["web"] == [0, 2, 0, 0]


# --- outputs -----------------------------------------------------------------------------------------
def test_snapshots_are_emitted_for_the_touched_users_only(open_worker: Opener) -> None:
    settings = make_settings(max_sequence_length=3, feature_sequence_length=2)
    feed = Feed(settings)
    _, proc = open_worker(settings)
    first = run(proc, [
        feed(event("e1", "u1", "a", CLICK, T0)),
        feed(event("e2", "u1", "b", CLICK, T0 + 1)),
        feed(event("e3", "u1", "c", BUY, T0 + 2)),
        feed(event("e4", "u2", "a", IMP, T0 + 3)),
    ])
    assert sorted(key for key, _ in first.snapshots) == [b"u1", b"u2"]
    snaps = {key.decode(): features_pb2.UserFeatures.FromString(value) for key, value in first.snapshots}
    u1 = snaps["u1"]
    assert (u1.user_id, u1.updated_ms) == ("u1", T0 + 2)
    assert (u1.impressions, u1.clicks, u1.add_to_carts, u1.purchases) == (0, 2, 0, 1)
    assert list(u1.behaviors.item_ids) == ["b", "c"], "the newest feature_sequence_length behaviours"
    assert list(u1.behaviors.types) == [CLICK, BUY]
    assert snaps["u2"].impressions == 1
    assert list(snaps["u2"].behaviors.item_ids) == []

    second = run(proc, [feed(event("e5", "u2", "b", CLICK, T0 + 10))])
    assert [key for key, _ in second.snapshots] == [b"u2"]
    assert features_pb2.UserFeatures.FromString(second.snapshots[0][1]).clicks == 1


def test_cooc_updates_are_emitted_and_counts_persisted(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    store, proc = open_worker(settings)
    result = run(proc, [
        feed(event("e1", "u", "a", CLICK, T0)),
        feed(event("e2", "u", "b", CLICK, T0 + 1)),
        feed(event("e3", "u", "b", BUY, T0 + 2)),  # b is already in the window: no new pair
    ])
    assert sorted(key for key, _ in result.cooc) == [b"a", b"b"]
    for key, value in result.cooc:
        update = features_pb2.CoocUpdate.FromString(value)
        assert (update.item_id, update.producer, update.batch) == (key.decode(), "w-test", proc.batch_seq)
    assert store.snapshot_state()["cooc"] == {"a": {"b": 1}, "b": {"a": 1}}
    store.close()
    store, proc = open_worker(settings)
    assert proc.cooc.counts == {"a": {"b": 1}, "b": {"a": 1}}
    assert proc.batch_seq == 1


# --- cache bound and key encoding --------------------------------------------------------------------
def test_user_evicted_from_the_cache_mid_batch_keeps_the_batch_changes(open_worker: Opener) -> None:
    settings = make_settings(user_cache_size=1)
    feed = Feed(settings)
    store, proc = open_worker(settings)
    run(proc, [
        feed(event("e1", "a", "x", CLICK, T0)),
        feed(event("e2", "b", "x", CLICK, T0 + 1)),
        feed(event("e3", "a", "y", CLICK, T0 + 2)),
    ])
    assert store.snapshot_state()["users"]["a"].seq_items == ["x", "y"]


def test_scenario_item_counts_survive_a_restart_whatever_the_scenario_string(open_worker: Opener) -> None:
    settings = make_settings()
    feed = Feed(settings)
    store, proc = open_worker(settings)
    odd = "we/b:c|d ü=é"  # separators of other formats, non-ASCII: all allowed in a scenario
    result = run(proc, [feed(event("e1", "u", "x", IMP, T0, scenario=odd)),
                        feed(event("e2", "u", "x", IMP, T0, scenario="we\x00b"))])
    assert [d.reason for d in result.dead] == [validate.BAD_ID]  # control characters: refused, like the scorer
    assert proc.stats.item_counts(odd, "x") == [1, 0, 0, 0]
    store.close()
    store, proc = open_worker(settings)
    assert proc.stats.item_counts(odd, "x") == [1, 0, 0, 0]
