"""Unit tests of the worker-wide aggregates: co-occurrence counts and scenario statistics."""

from __future__ import annotations

from streamrank.config import Settings
from streamrank.stream.aggregates import CoocCounts, ScenarioStats
from streamrank.v1 import events_pb2

IMP, CLICK, ATC, BUY = events_pb2.IMPRESSION, events_pb2.CLICK, events_pb2.ADD_TO_CART, events_pb2.PURCHASE


def make_settings(**changes: object) -> Settings:
    s = Settings(**changes)  # type: ignore[arg-type]
    s.validate()
    return s


# --- CoocCounts --------------------------------------------------------------------------------------
# Counts are read after take_delta(), the end of a batch: that is when the worker reads and persists them.
def test_cooc_counts_are_symmetric() -> None:
    cooc = CoocCounts(make_settings())
    cooc.add_pairs("a", ["b", "c"])
    cooc.add_pairs("b", ["a"])
    cooc.take_delta()
    assert cooc.counts == {"a": {"b": 2, "c": 1}, "b": {"a": 2}, "c": {"a": 1}}
    for item, neighbours in cooc.counts.items():
        for other, n in neighbours.items():
            assert cooc.counts[other][item] == n
    assert cooc.neighbours("a") == [("b", 2), ("c", 1)]
    assert cooc.neighbours("a", k=1) == [("b", 2)]
    assert cooc.neighbours("missing") == []


def test_add_pairs_with_no_partners_counts_nothing() -> None:
    cooc = CoocCounts(make_settings())
    cooc.add_pairs("a", [])
    delta, _ = cooc.take_delta()
    assert all(not neighbours for neighbours in delta.values())
    assert cooc.neighbours("a") == []


def test_take_delta_returns_the_changes_since_the_last_call_and_resets() -> None:
    cooc = CoocCounts(make_settings())
    cooc.add_pairs("a", ["b", "c"])
    cooc.add_pairs("b", ["c"])
    delta, dirty = cooc.take_delta()
    assert delta == {"a": {"b": 1, "c": 1}, "b": {"a": 1, "c": 1}, "c": {"a": 1, "b": 1}}
    assert dirty == {"a", "b", "c"}
    assert cooc.take_delta() == ({}, set())
    cooc.add_pairs("a", ["b"])
    cooc.add_pairs("b", ["a"])
    delta, dirty = cooc.take_delta()
    assert delta == {"a": {"b": 2}, "b": {"a": 2}}
    assert dirty == {"a", "b"}
    # The totals accumulate across batches; taking a delta does not reset them.
    assert cooc.counts == {"a": {"b": 3, "c": 1}, "b": {"a": 3, "c": 1}, "c": {"a": 1, "b": 1}}
    assert cooc.take_delta() == ({}, set())
    assert cooc.counts["a"] == {"b": 3, "c": 1}


def test_top_m_trimming_only_above_twice_m_and_keeps_the_largest() -> None:
    cooc = CoocCounts(make_settings(cooc_top_m=2))
    for partners in (["a", "b", "c", "d"], ["c", "d"], ["d"]):
        cooc.add_pairs("x", partners)
        cooc.take_delta()
    # 4 neighbours = 2 * M: no trimming yet.
    assert cooc.counts["x"] == {"a": 1, "b": 1, "c": 2, "d": 3}
    cooc.add_pairs("x", ["e"])
    cooc.take_delta()
    # 5 > 2 * M: trimmed to the M largest.
    assert cooc.counts["x"] == {"d": 3, "c": 2}
    assert cooc.neighbours("x") == [("d", 3), ("c", 2)]
    # The neighbours keep their side of the pair (trimming is per item).
    assert cooc.counts["a"] == {"x": 1}
    assert cooc.counts["e"] == {"x": 1}


def test_top_m_ties_are_broken_by_id_whatever_the_insertion_order() -> None:
    cooc = CoocCounts(make_settings(cooc_top_m=2))
    cooc.add_pairs("y", ["t", "q", "s", "r", "p"])
    cooc.take_delta()
    assert cooc.counts["y"] == {"p": 1, "q": 1}
    other = CoocCounts(make_settings(cooc_top_m=2))
    other.add_pairs("y", ["p", "q", "r", "s", "t"])
    other.take_delta()
    assert other.counts["y"] == cooc.counts["y"]


def test_top_m_trimming_applies_to_the_partner_side_too() -> None:
    cooc = CoocCounts(make_settings(cooc_top_m=2))
    for i in (5, 4, 3, 2, 1):
        cooc.add_pairs(f"i{i}", ["hub"])
    delta, dirty = cooc.take_delta()
    assert cooc.counts["hub"] == {"i1": 1, "i2": 1}
    # Trimming is per item: the other side keeps its own count (documented as order-dependent).
    assert cooc.counts["i5"] == {"hub": 1}
    # Deltas are the exact increments, trimmed or not (consumers sum them).
    assert delta["hub"] == {f"i{i}": 1 for i in range(1, 6)}
    assert dirty == {"hub", "i1", "i2", "i3", "i4", "i5"}


# --- ScenarioStats -----------------------------------------------------------------------------------
BUCKET = 1_000
T = 1_000_000  # a bucket boundary


def stats_settings() -> Settings:
    # recent window = 4 buckets; buckets are kept for window + grace = 6 s behind the low watermark
    return make_settings(stats_bucket_ms=BUCKET, stats_window_ms=4 * BUCKET, stats_grace_ms=2 * BUCKET)


def test_all_time_counts_per_scenario_and_item() -> None:
    stats = ScenarioStats(stats_settings())
    for scenario, item, etype in [("web", "a", IMP), ("web", "a", IMP), ("web", "a", CLICK), ("web", "b", BUY),
                                  ("web", "b", ATC), ("app", "a", IMP)]:
        stats.add(scenario, item, etype, T)
    assert stats.scenario == {"web": [2, 1, 1, 1], "app": [1, 0, 0, 0]}
    assert stats.item_counts("web", "a") == [2, 1, 0, 0]
    assert stats.item_counts("web", "b") == [0, 0, 1, 1]
    assert stats.item_counts("app", "a") == [1, 0, 0, 0]
    assert stats.item_counts("app", "b") == [0, 0, 0, 0]
    assert stats.dirty == {("web", ""), ("app", ""), ("web", "a"), ("web", "b"), ("app", "a")}


def test_recent_sums_the_buckets_of_the_window_ending_at_the_newest_event() -> None:
    stats = ScenarioStats(stats_settings())
    stats.add("web", "a", IMP, T + 10)            # bucket T
    stats.add("web", "a", CLICK, T + 1_500)       # bucket T + 1000
    stats.add("web", "b", IMP, T + 2_999)         # bucket T + 2000
    assert stats.watermark == T + 2_999
    assert stats.recent("web") == [2, 1, 0, 0]
    stats.add("web", "a", BUY, T + 5_000)         # bucket T + 5000; window start T + 1000
    assert stats.watermark == T + 5_000
    assert stats.recent("web") == [1, 1, 0, 1], "bucket T ended at the window start: out"
    assert stats.recent("web", "a") == [0, 1, 0, 1]
    assert stats.recent("web", "b") == [1, 0, 0, 0]
    assert stats.recent("app") == [0, 0, 0, 0]
    # An out-of-order event does not move the window back.
    stats.add("web", "a", IMP, T + 100)
    assert stats.watermark == T + 5_000
    assert stats.recent("web", "a") == [0, 1, 0, 1]
    assert stats.item_counts("web", "a") == [2, 1, 0, 1], "all-time counts include everything"


def test_expire_drops_buckets_older_than_low_watermark_minus_window_and_grace() -> None:
    stats = ScenarioStats(stats_settings())
    stats.add("web", "a", IMP, T)                 # bucket T
    stats.add("web", "a", CLICK, T + 1_000)       # bucket T + 1000
    stats.add("web", "b", IMP, T + 1_000)         # bucket T + 1000
    stats.add("web", "a", BUY, T + 2_000)         # bucket T + 2000
    stats.dirty.clear()
    stats.expire(T + 7_999)                       # horizon T + 1999: only bucket T has fully ended
    assert sorted(stats.buckets[("web", "a")]) == [T + 1_000, T + 2_000]
    assert stats.dirty == {("web", ""), ("web", "a")}
    stats.dirty.clear()
    stats.expire(T + 8_000)                       # horizon T + 2000: bucket T + 1000 ends exactly there
    assert sorted(stats.buckets[("web", "a")]) == [T + 2_000]
    assert sorted(stats.buckets[("web", "")]) == [T + 2_000]
    assert ("web", "b") not in stats.buckets, "an emptied series is dropped entirely"
    assert ("web", "b") in stats.dirty
    # All-time counts are not affected by expiry.
    assert stats.scenario["web"] == [2, 1, 0, 1]
    assert stats.item_counts("web", "b") == [1, 0, 0, 0]


def test_expire_never_moves_the_low_watermark_back() -> None:
    stats = ScenarioStats(stats_settings())
    stats.expire(T + 8_000)
    stats.expire(T)
    assert stats.low_watermark == T + 8_000
    stats.add("web", "a", IMP, T + 1_000)
    assert stats.late == 1


def test_late_events_count_all_time_but_land_in_no_bucket() -> None:
    stats = ScenarioStats(stats_settings())
    stats.add("web", "a", IMP, T + 9_000)
    stats.expire(T + 8_000)                       # late = older than T + 8000 - 6000 = T + 2000
    stats.add("web", "a", CLICK, T + 1_999)
    stats.add("web", "b", BUY, T)
    assert stats.late == 2
    assert stats.item_counts("web", "a") == [1, 1, 0, 0]
    assert stats.item_counts("web", "b") == [0, 0, 0, 1]
    assert stats.scenario["web"] == [1, 1, 0, 1]
    assert ("web", "b") not in stats.buckets
    assert list(stats.buckets[("web", "a")]) == [T + 9_000]
    # Exactly at the horizon is not late, and neither is an event behind the newest one but within grace.
    stats.add("web", "a", CLICK, T + 2_000)
    stats.add("web", "a", CLICK, T + 4_500)
    assert stats.late == 2
    assert sorted(stats.buckets[("web", "a")]) == [T + 2_000, T + 4_000, T + 9_000]


def test_lateness_is_judged_against_the_low_watermark_not_the_newest_event() -> None:
    stats = ScenarioStats(stats_settings())
    stats.add("web", "a", IMP, T + 100_000)
    stats.add("web", "a", IMP, T)                 # far behind the newest event, but no low watermark yet
    assert stats.late == 0
    assert T in stats.buckets[("web", "a")]
