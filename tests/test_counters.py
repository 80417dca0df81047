"""Deterministic item counters (stream/counters.py): a sample's counters are a function of the events, not of
how partitions interleave or batch; waiting impressions survive restarts; a quiet partition holds them until
it is idle. In-process over real RocksDB (the broker-level checks are in test_stream_replay.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from streamrank.config import Settings
from streamrank.events.partitioning import partition_of
from streamrank.stream.counters import SealedCounters
from streamrank.stream.processor import BatchProcessor, ExchangeRecord, Record
from streamrank.stream.store import StateFormatError, StateStore
from streamrank.stream.summary import summarize
from streamrank.v1 import events_pb2, features_pb2
from tests import reference
from tests.test_processor import BUY, CLICK, IMP, NOW, T0, event, make_settings

PARTS = 4
BUCKET = 60_000


def _settings(**changes: object) -> Settings:
    return make_settings(partitions=PARTS, counter_bucket_ms=BUCKET, cooc_top_m=1_000_000, **changes)


def _log(seed: int = 0, requests: int = 120, users: int = 10) -> list[bytes]:
    """A shop log in time order: requests of two items, some clicked and bought, items shared by all users."""
    rng = random.Random(seed)
    out = []
    for k in range(requests):
        user = f"u{rng.randrange(users)}"
        ts = T0 + k * 7_000
        shown = rng.sample([f"i{j}" for j in range(6)], 2)
        for pos, item in enumerate(shown):
            out.append(event(f"e{k}-{pos}", user, item, IMP, ts + pos, request_id=f"r{k}", position=pos))
        if rng.random() < 0.5:
            out.append(event(f"c{k}", user, shown[0], CLICK, ts + 300, request_id=f"r{k}"))
            if rng.random() < 0.3:
                out.append(event(f"b{k}", user, shown[0], BUY, ts + 600, request_id=f"r{k}"))
    return out


def _records(log: list[bytes], settings: Settings) -> dict[int, list[Record]]:
    """The log as each partition holds it (keyed by user, offsets in log order)."""
    parts: dict[int, list[Record]] = {p: [] for p in range(settings.partitions)}
    for raw in log:
        p = partition_of(events_pb2.Event.FromString(raw).user_id, settings.partitions)
        parts[p].append(Record(settings.topic("events"), p, len(parts[p]), None, raw))
    return parts


def _replay(tmp: Path, settings: Settings, order: list[Record], batch: int,
            stats: list[bytes] | None = None) -> list[bytes]:
    """Runs records through a fresh worker in the given order and batch size, then lets every partition go
    idle; returns the serialized samples it emitted (and adds its item-stats records to `stats`)."""
    store = StateStore(tmp / "state")
    proc = BatchProcessor(settings, store, now_ms=NOW)
    proc.assigned = set(range(settings.partitions))
    out: list[bytes] = []
    for i in range(0, len(order), batch):
        result = proc.process(order[i:i + batch])
        proc.commit(result)
        out.extend(v for _, v in result.samples)
        if stats is not None:
            stats.extend(v for _, v in result.item_stats)
    proc.idle = set(range(settings.partitions))  # the stream ended: every partition caught up and quiet
    result = proc.tick()
    proc.commit(result)
    out.extend(v for _, v in result.samples)
    if stats is not None:
        stats.extend(v for _, v in result.item_stats)
    assert not proc.waiting
    store.close()
    return out


def _interleaved(parts: dict[int, list[Record]]) -> list[Record]:
    merged = [r for p in sorted(parts) for r in parts[p]]
    return sorted(merged, key=lambda r: events_pb2.Event.FromString(r.value).ts_ms)


def _partition_after_partition(parts: dict[int, list[Record]]) -> list[Record]:
    return [r for p in sorted(parts, reverse=True) for r in parts[p]]


def test_effective_time_cut_and_fold() -> None:
    c = SealedCounters(BUCKET)
    assert c.effective_time(1_000, 5_000, 0) == 5_000  # a late event counts as of its partition's watermark
    assert c.cut_of(125_000) == 120_000
    c.add(0, ("web", "i"), 0, 10_000)
    c.add(0, ("web", "i"), 1, 70_000)
    c.seal(0, 120_000)
    c.fold_to(60_000)
    assert c.sealed(("web", "i")) == [1, 0, 0, 0]
    assert c.sealed_changed == {("web", "i")}
    c.frontier = 120_000
    assert c.effective_time(1_000, 5_000, 0) == 5_000  # a live partition's watermark is above the frontier
    c.resume(0)  # ...unless it was idle and the frontier passed it: then it counts from the frontier on
    assert c.effective_time(1_000, 5_000, 0) == 120_000


def test_samples_are_byte_identical_whatever_the_interleaving_and_batching(tmp_path: Path) -> None:
    for policy in ("window", "fake_negative"):
        settings = _settings(label_policy=policy)
        log = _log()
        parts = _records(log, settings)
        a = _replay(tmp_path / f"{policy}-a", settings, _interleaved(parts), batch=7)
        b = _replay(tmp_path / f"{policy}-b", settings, _partition_after_partition(parts), batch=50)
        assert len(a) > 100
        assert sorted(a) == sorted(b), f"{policy}: samples differ between two orders of the same log"
        # and the counters are the offline reference's, computed from the log alone
        ref = reference.compute([events_pb2.Event.FromString(r) for r in log], settings, {})
        got = {}
        for raw in a:
            s = features_pb2.TrainingSample.FromString(raw)
            got[s.sample_id] = (s.counts.item_impressions, s.counts.item_clicks, s.counts.item_purchases)
        assert {k: got[k] for k in ref.samples} == {k: ref.sample_counts[k] for k in ref.samples}
        assert any(sum(v) for v in got.values()), "the log must give non-zero counters"


def test_an_emission_held_for_the_counters_keeps_the_labels_it_was_emitted_with(tmp_path: Path) -> None:
    """A click's positive emission that waits for its impression's counters carries the click alone, also when
    the purchase is processed before the frontier releases it (it used to take the labels of release time, so
    its bytes depended on how far the other partitions were)."""
    settings = _settings(label_policy="fake_negative", attribution_window_ms=10_000)
    proc = BatchProcessor(settings, StateStore(tmp_path / "state"), now_ms=NOW)
    proc.assigned = {0, 1}
    ts = T0 + 5 * BUCKET + 10
    feed = [Record(settings.topic("events"), 0, n, None, raw) for n, raw in enumerate([
        event("e1", "u1", "i1", IMP, ts, request_id="r1"),
        event("c1", "u1", "i1", CLICK, ts + 300, request_id="r1"),
        event("b1", "u1", "i1", BUY, ts + 600, request_id="r1")])]
    result = proc.process(feed)
    proc.commit(result)
    assert result.samples == [], "partition 1 holds the frontier: the emissions wait"
    proc.idle = {1}
    result = proc.tick()
    proc.commit(result)
    emitted = sorted((s.emitted_ts_ms, s.labels.click, s.labels.purchase)
                     for s in (features_pb2.TrainingSample.FromString(v) for _, v in result.samples))
    assert emitted == [(ts, False, False), (ts + 300, True, False), (ts + 600, True, True)]


def test_an_impression_waits_for_a_quiet_partition_until_it_is_idle(tmp_path: Path) -> None:
    settings = _settings(label_policy="fake_negative")
    store = StateStore(tmp_path / "state")
    proc = BatchProcessor(settings, store, now_ms=NOW)
    proc.assigned = {0, 1}
    feed = [Record(settings.topic("events"), 0, 0, None,
                   event("e1", "u1", "i1", IMP, T0 + 5 * BUCKET + 10, request_id="r1"))]
    result = proc.process(feed)
    proc.commit(result)
    assert result.samples == [], "partition 1 has not reached the impression's bucket: it must wait"
    assert len(proc.waiting) == 1
    proc.idle = {1}
    result = proc.tick()
    proc.commit(result)
    emitted = [features_pb2.TrainingSample.FromString(v) for _, v in result.samples]
    assert [s.emission for s in emitted] == [features_pb2.EMISSION_IMPRESSION]
    assert not proc.waiting
    store.close()


def test_waiting_impressions_and_held_emissions_survive_a_restart(tmp_path: Path) -> None:
    settings = _settings(label_policy="fake_negative")
    log = _log(seed=1, requests=40)
    parts = _records(log, settings)
    order = _partition_after_partition(parts)
    expected = _replay(tmp_path / "straight", settings, order, batch=25)
    # The same order, with the worker restarted (state reopened from RocksDB) after every batch.
    out: list[bytes] = []
    for i in range(0, len(order), 25):
        store = StateStore(tmp_path / "restarted" / "state")
        proc = BatchProcessor(settings, store, now_ms=NOW)
        proc.assigned = set(range(PARTS))
        result = proc.process(order[i:i + 25])
        proc.commit(result)
        out.extend(v for _, v in result.samples)
        waiting = len(proc.waiting)
        snapshot = store.snapshot_state()
        store.close()
    assert waiting > 0, "the order must leave impressions waiting across a restart"
    stats = summarize(snapshot)
    assert stats["impressions_waiting_for_counters"] == waiting
    assert stats["counter_frontier_ms"] == proc.counters.frontier
    store = StateStore(tmp_path / "restarted" / "state")
    proc = BatchProcessor(settings, store, now_ms=NOW)
    proc.assigned = set(range(PARTS))
    assert len(proc.waiting) == waiting
    proc.idle = set(range(PARTS))
    result = proc.tick()
    proc.commit(result)
    out.extend(v for _, v in result.samples)
    store.close()
    assert sorted(out) == sorted(expected)


def test_state_of_an_older_layout_is_refused_with_one_line(tmp_path: Path) -> None:
    db = Rdict(str(tmp_path / "state"), Options(raw_mode=True))
    db.put(b"o" + b"streamrank.events\x000", b"41")  # offsets, as format 1 wrote them, and no format stamp
    db.close()
    with pytest.raises(StateFormatError, match="older streamrank") as info:
        StateStore(tmp_path / "state")
    assert "\n" not in str(info.value)
    fresh = StateStore(tmp_path / "fresh")  # a new database is stamped and opens again
    fresh.close()
    StateStore(tmp_path / "fresh").close()


def _two_workers(tmp: Path, settings: Settings, parts: dict[int, list[Record]], split: set[int], batch: int,
                 seed: int, restarts: bool = False, stats: list[bytes] | None = None) -> list[bytes]:
    """Two processors own complementary partitions and trade exchange records after every batch, in a random
    order of turns; with `restarts`, each record is delivered twice and a worker restarts from its store
    after some turns. Returns the samples both emitted (and adds their item-stats records to `stats`, each
    checked to come from the key's owner)."""
    owned = [split, set(range(settings.partitions)) - split]
    ended = [False, False]  # the stream ended: a (re)started worker finds its partitions idle

    def start(i: int) -> BatchProcessor:
        proc = BatchProcessor(settings, StateStore(tmp / f"w{i}" / "state"), now_ms=NOW)
        proc.assigned = set(owned[i])
        proc.idle = set(owned[i]) if ended[i] else set()
        proc.all_partitions = set(range(settings.partitions))  # the others hold the frontier until heard of
        return proc

    procs = [start(0), start(1)]
    queues = [[r for p in sorted(own) for r in parts[p]] for own in owned]
    rng = random.Random(seed)
    out: list[bytes] = []

    def run(i: int, records: list[Record]) -> list[ExchangeRecord]:
        result = procs[i].process(records) if records else procs[i].tick()
        procs[i].commit(result)
        out.extend(v for _, v in result.samples)
        for _, value in result.item_stats:
            msg = features_pb2.ItemStats.FromString(value)
            assert procs[i].stats_owner((msg.scenario, msg.item_id)) in owned[i], "published by a non-owner"
            if stats is not None:
                stats.append(value)
        return result.exchange

    def turn(i: int, records: list[Record]) -> None:
        exchange = run(i, records)
        procs[1 - i].apply_exchange(exchange * (2 if restarts else 1))  # a re-sent record changes nothing
        if restarts and rng.random() < 0.3:
            # The receiver restarts from its store; what it applied is durable once a batch commits (the
            # service stores the exchange topic's offsets with it and re-reads what came after).
            procs[i].apply_exchange(run(1 - i, []))
            procs[1 - i].store.close()
            procs[1 - i] = start(1 - i)

    while any(queues):
        i = rng.choice([k for k in (0, 1) if queues[k]])
        turn(i, queues[i][:batch])
        queues[i] = queues[i][batch:]
    for i in (0, 1):  # the stream ended: each worker's partitions go idle
        ended[i] = True
        procs[i].idle = set(owned[i])
    for _ in range(3):
        turn(0, [])
        turn(1, [])
    assert not procs[0].waiting and not procs[1].waiting
    for proc in procs:
        proc.store.close()
    return out


@pytest.mark.parametrize("policy", ["window", "fake_negative"])
def test_two_workers_trading_sealed_buckets_emit_the_single_workers_samples(tmp_path: Path, policy: str) -> None:
    """Issue 20: workers that own different partitions give exactly the single worker's samples (bytes),
    whatever their relative speed, because each applies the others' sealed buckets before its frontier
    passes them."""
    settings = _settings(label_policy=policy)
    parts = _records(_log(seed=3, requests=150), settings)
    single_stats: list[bytes] = []
    single = _replay(tmp_path / "single", settings, _interleaved(parts), batch=40, stats=single_stats)
    expected_stats = _newest_stats(single_stats)
    assert expected_stats
    cases = [({0, 1}, 15, False), ({0}, 40, False), ({1, 2, 3}, 7, False), ({0, 2}, 11, True), ({3}, 5, True)]
    for seed, (split, batch, restarts) in enumerate(cases):
        stats: list[bytes] = []
        pair = _two_workers(tmp_path / f"pair{seed}", settings, parts, split, batch, seed, restarts, stats)
        assert sorted(pair) == sorted(single), f"split {split}, batch {batch}, restarts {restarts}"
        # The item stats a scorer ends with (the newest frontier per key) are the single worker's: every
        # worker folds to the same final frontier (the newest watermark over the topic, when all are idle).
        assert _newest_stats(stats) == expected_stats, f"split {split}: item stats differ"


def _newest_stats(values: list[bytes]) -> dict[tuple[str, str], tuple[int, list[int]]]:
    """(scenario, item) -> (frontier, counts) of the newest item-stats record per key, as a scorer keeps them."""
    out: dict[tuple[str, str], tuple[int, list[int]]] = {}
    for value in values:
        msg = features_pb2.ItemStats.FromString(value)
        key = (msg.scenario, msg.item_id)
        if key not in out or msg.updated_ms >= out[key][0]:
            out[key] = (msg.updated_ms, [msg.impressions, msg.clicks, msg.add_to_carts, msg.purchases])
    return out
