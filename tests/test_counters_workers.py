"""Issue 20 at the broker: two worker processes of one group, each owning half of the partitions and trading
sealed counter buckets on the exchange topic, emit exactly the single worker's samples (bytes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from streamrank.bench.stream_scaling import read_samples
from streamrank.config import Settings
from streamrank.events.producer import produce_events
from streamrank.pipeline import end_offsets, start_worker, stop_worker, wait_group_caught_up
from streamrank.topics import ensure_topics
from streamrank.v1 import events_pb2
from tests.test_counters import _log
from tests.test_processor import WINDOW


def _run(settings: Settings, workers: int, events: list[events_pb2.Event], logs: Path) -> Counter[bytes]:
    group = [replace(settings, data_dir=str(Path(settings.data_dir) / f"w{i}")) for i in range(workers)]
    ensure_topics(settings)
    produce_events(settings, events, progress=False, strict=True)
    targets = end_offsets(settings, settings.topic("events"))
    procs = [start_worker(s, logs / f"{settings.topic_prefix}w{i}.log") for i, s in enumerate(group)]
    try:
        wait_group_caught_up(group, targets, procs, timeout_s=180)
    finally:
        for proc in procs:
            stop_worker(proc)
    return read_samples(settings)


def test_two_worker_processes_emit_the_single_workers_samples(settings: Settings, tmp_path: Path) -> None:
    events = [events_pb2.Event.FromString(raw) for raw in _log(seed=5, requests=150)]
    base = replace(settings, counter_bucket_ms=60_000, counter_idle_ms=1_000, label_policy="fake_negative",
                   attribution_window_ms=WINDOW)
    single = _run(replace(base, topic_prefix=base.topic_prefix + "one."), 1, events, tmp_path)
    pair = _run(replace(base, topic_prefix=base.topic_prefix + "two.", worker_id=base.worker_id + "-two",
                        data_dir=str(tmp_path / "two")), 2, events, tmp_path)
    assert sum(single.values()) > 0
    assert pair == single
