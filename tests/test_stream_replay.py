"""A MovieLens-100K replay through the embedded broker and a real worker equals the offline computation."""

from __future__ import annotations

import os
import signal
import time

import pytest

from streamrank.config import Settings
from streamrank.data.movielens import load_movielens
from streamrank.data.requests import movielens_events, movielens_items
from streamrank.events.producer import produce_events, produce_items
from streamrank.pipeline import (
    end_offsets,
    processed_through,
    read_status,
    read_topic,
    start_worker,
    stop_worker,
    wait_caught_up,
)
from streamrank.topics import ensure_topics
from streamrank.v1 import features_pb2
from tests import reference
from tests.streamtools import (
    assert_resent_identical,
    assert_state_matches,
    categories_of,
    load_state,
    log_path,
    sample_counts_by_id,
    samples_by_id,
)


def _publish(settings: Settings, limit: int | None) -> tuple[list, list]:
    ml = load_movielens("ml-100k")
    items = list(movielens_items(ml))
    events = list(movielens_events(ml, limit=limit))
    ensure_topics(settings)
    produce_items(settings, items, progress=False)
    report = produce_events(settings, events, progress=False, strict=True)
    assert report.sent == len(events)
    return items, events


def _check(settings: Settings, items: list, events: list) -> None:
    ref = reference.compute(events, settings, categories_of(items))
    assert_state_matches(load_state(settings), ref)
    samples_end = end_offsets(settings, settings.topic("samples"))
    records = read_topic(settings, "samples", samples_end)
    emitted = samples_by_id(records)
    assert emitted == ref.samples
    # Item counters are a function of the events (effective time, cut), not of how partitions interleaved,
    # and a re-sent sample is byte for byte its first copy.
    assert sample_counts_by_id(records) == ref.sample_counts
    assert_resent_identical(records)
    # The compacted item-stats topic (what scorers read for the candidates' counters): the latest record
    # of every (scenario, item) carries the counts below the final frontier, the definition samples use.
    latest: dict[tuple[str, str], list[int]] = {}
    for rec in read_topic(settings, "item-stats", end_offsets(settings, settings.topic("item-stats"))):
        msg = features_pb2.ItemStats.FromString(rec.value)
        latest[(msg.scenario, msg.item_id)] = [msg.impressions, msg.clicks, msg.add_to_carts, msg.purchases]
    assert latest == ref.sealed_item


@pytest.mark.slow
def test_full_ml100k_replay_equals_offline_state(settings: Settings) -> None:
    # top_m above any real neighbour count: trimming is order-dependent, exact counts are not.
    settings = settings.with_overrides(cooc_top_m=1_000_000)
    items, events = _publish(settings, limit=None)
    assert len(events) > 300_000
    worker = start_worker(settings, log_path(settings, "worker"))
    try:
        status = wait_caught_up(settings, end_offsets(settings, settings.topic("events")), proc=worker)
    finally:
        assert stop_worker(worker) == 0
    assert status["counters"]["dead_letters"] == 0
    assert status["late_stat_events"] == 0
    _check(settings, items, events)


@pytest.mark.slow
def test_kill_9_mid_stream_loses_and_double_counts_nothing(settings: Settings) -> None:
    settings = settings.with_overrides(cooc_top_m=1_000_000, batch_size=5000)
    items, events = _publish(settings, limit=30_000)
    assert len(events) >= 100_000
    targets = end_offsets(settings, settings.topic("events"))
    total = sum(targets.values())
    worker = start_worker(settings, log_path(settings, "worker-1"))
    # Kill once a good part, but not all, of the stream is durable.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = sum(o + 1 for o in processed_through(read_status(settings), settings.topic("events")).values())
        if done >= total * 0.3:
            break
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert done < total, "the worker finished before it could be killed; lower the kill threshold"
    restarted = start_worker(settings, log_path(settings, "worker-2"))
    try:
        status = wait_caught_up(settings, targets, proc=restarted)
    finally:
        assert stop_worker(restarted) == 0
    assert status["counters"]["processed"] < len(events), "restart should resume, not start over"
    _check(settings, items, events)
