"""The producer against a real embedded broker: keys, partitions, validation, rate limit, sources."""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrank.broker import EmbeddedBroker
from streamrank.config import Settings, load_settings
from streamrank.data.eventlog import write_events, write_items
from streamrank.data.movielens import load_movielens
from streamrank.data.requests import SizedIterator, count_events
from streamrank.events.producer import (
    ProduceError,
    TokenBucket,
    make_producer,
    open_source,
    produce_events,
    produce_items,
)
from streamrank.events.validate import BAD_TIMESTAMP, FUTURE_TIMESTAMP, MISSING_FIELD, OVERSIZED, UNKNOWN_TYPE
from streamrank.topics import ensure_topics
from streamrank.v1 import events_pb2

PARTITIONS = 4


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def settings(broker: EmbeddedBroker) -> Settings:
    """Fresh topics per test (a unique prefix), created with PARTITIONS partitions."""
    fresh = load_settings(bootstrap_servers=broker.bootstrap_servers, partitions=PARTITIONS,
                          topic_prefix=f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(fresh, ["events", "items"])
    return fresh


def read_back(settings: Settings, topic: str, expected: int, timeout_s: float = 20.0) -> list[Any]:
    """All records of a topic, read with manual assignment (no group join), until `expected` arrive."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        # Anything beyond what was expected would be a bug: give it a short chance to show up.
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def _event(i: int, user: str = "u", **changes: Any) -> events_pb2.Event:
    fields: dict[str, Any] = {"event_id": f"e{i}", "user_id": user, "item_id": f"i{i % 7}",
                              "type": events_pb2.CLICK, "ts_ms": 1_700_000_000_000 + i}
    fields.update(changes)
    return events_pb2.Event(**fields)


def test_events_keyed_by_user_and_spread(settings: Settings) -> None:
    source = open_source("movielens:ml-100k", negatives=1, limit=600)
    events = list(source.events)
    report = produce_events(settings, events, progress=False)
    assert report.sent == len(events) and report.invalid == {} and report.failed == 0
    assert report.topic == settings.topic("events") and report.rate > 0
    records = read_back(settings, settings.topic("events"), len(events))
    assert len(records) == len(events)
    partitions_of_user: dict[str, set[int]] = defaultdict(set)
    by_partition: dict[int, list[events_pb2.Event]] = defaultdict(list)
    for record in records:
        event = events_pb2.Event.FromString(record.value)
        assert record.key == event.user_id.encode()
        partitions_of_user[event.user_id].add(record.partition)
        by_partition[record.partition].append(event)
    assert all(len(parts) == 1 for parts in partitions_of_user.values())
    assert len(by_partition) == PARTITIONS
    received = sorted(e.event_id for part in by_partition.values() for e in part)
    assert received == sorted(e.event_id for e in events)
    # A user's events keep their order within the partition.
    position = {e.event_id: i for i, e in enumerate(events)}
    for part in by_partition.values():
        order = [position[e.event_id] for e in part]
        assert order == sorted(order)


def test_producers_say_nothing_about_idempotence(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """acks=1 turns kafka-python's idempotent default off; the producers state it, so it warns nothing."""
    from streamrank.registry.publisher import RegistryPublisher
    from streamrank.v1 import registry_pb2

    ensure_topics(settings)
    caplog.set_level(logging.WARNING, logger="kafka")
    producer = make_producer(settings)
    producer.send(settings.topic("events"), b"x")
    producer.flush()
    producer.close()
    publisher = RegistryPublisher(settings, "din")
    publisher.send(registry_pb2.ModelAnnouncement(model="din", version=1))
    publisher.close()
    assert not [r for r in caplog.records if "dempoten" in r.getMessage()]


def test_items_keyed_by_item_id(settings: Settings) -> None:
    items = list(open_source("movielens:ml-100k").items or [])[:300]
    bad = events_pb2.Item(item_id="", title="no id")
    report = produce_items(settings, [*items, bad], progress=False)
    assert report.sent == 300 and report.invalid == {MISSING_FIELD: 1}
    records = read_back(settings, settings.topic("items"), 300)
    assert len(records) == 300
    assert all(r.key == events_pb2.Item.FromString(r.value).item_id.encode() for r in records)


def test_invalid_events_are_counted_not_sent(settings: Settings) -> None:
    good = [_event(i, user=f"u{i % 5}") for i in range(50)]
    bad = [
        _event(100, user=""),
        _event(101, event_id=""),
        _event(102, type=events_pb2.EVENT_TYPE_UNSPECIFIED),
        _event(103, ts_ms=0),
        _event(104, ts_ms=int(time.time() * 1000) + 10 * 86_400_000),
        _event(105, query="q" * 20_000),
    ]
    mixed = good[:20] + bad + good[20:]
    report = produce_events(settings, mixed, progress=False)
    assert report.sent == 50
    assert report.invalid == {MISSING_FIELD: 2, UNKNOWN_TYPE: 1, BAD_TIMESTAMP: 1, FUTURE_TIMESTAMP: 1,
                              OVERSIZED: 1}
    assert report.invalid_total == 6 and len(report.examples) == 5
    assert "missing_field" in report.summary()
    records = read_back(settings, settings.topic("events"), 50)
    assert sorted(events_pb2.Event.FromString(r.value).event_id for r in records) == sorted(
        e.event_id for e in good)


def test_strict_stops_at_first_invalid(settings: Settings) -> None:
    events = [_event(0), _event(1), _event(2, item_id=""), _event(3)]
    with pytest.raises(ProduceError, match="missing_field") as caught:
        produce_events(settings, events, progress=False, strict=True)
    assert caught.value.report.sent == 2 and caught.value.report.invalid == {MISSING_FIELD: 1}
    assert len(read_back(settings, settings.topic("events"), 2, timeout_s=5)) == 2


def test_rate_limit(settings: Settings) -> None:
    events = [_event(i, user=f"u{i % 9}") for i in range(500)]
    started = time.monotonic()
    report = produce_events(settings, SizedIterator(iter(events), 500), rate=1_000, progress=False)
    elapsed = time.monotonic() - started
    assert report.sent == 500
    # 500 events at 1,000/s with a 50-event burst: at least ~0.45 s of pacing.
    assert 0.42 <= report.seconds <= elapsed < 2.5
    assert report.rate < 1_150


def test_token_bucket_with_fake_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(100, burst=10, clock=lambda: now[0], sleep=sleep)
    for _ in range(1_010):
        bucket.acquire()
    assert now[0] == pytest.approx(10.0, rel=0.01)  # 1,000 beyond the burst at 100/s
    assert min(slept) >= 0.001
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_open_source_files(tmp_path: Path) -> None:
    events = [_event(i) for i in range(10)]
    write_events(tmp_path / "events.jsonl", events)
    write_items(tmp_path / "items.jsonl", [events_pb2.Item(item_id="i1", title="x")])
    source = open_source(str(tmp_path / "events.jsonl"), items_path=str(tmp_path / "items.jsonl"), limit=4,
                         as_is=True)
    assert list(source.events) == events[:4]
    assert [i.item_id for i in source.items or []] == ["i1"]
    items, only_events = open_source(str(tmp_path / "events.jsonl"), as_is=True)
    assert items is None and len(list(only_events)) == 10
    # Clicks only, no impressions: by default each click becomes a request (the clicked item + 1 negative).
    items, stream = open_source(str(tmp_path / "events.jsonl"), negatives=1, limit=4)
    stream = list(stream)
    assert [e.type for e in stream].count(events_pb2.IMPRESSION) == 8
    assert [e.item_id for e in stream if e.type == events_pb2.CLICK] == [e.item_id for e in events[:4]]
    assert sorted(i.item_id for i in items or []) == sorted({e.item_id for e in events})  # the items it names
    with pytest.raises(FileNotFoundError, match="movielens:"):
        open_source(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="unknown MovieLens"):
        open_source("movielens:ml-10m")


def test_open_source_movielens() -> None:
    source = open_source("movielens:ml-100k", negatives=2, seed=5, scenario_field="none", limit=10)
    events = list(source.events)
    assert len(events) == count_events(load_movielens("ml-100k"), negatives=2, limit=10)
    assert {e.scenario for e in events} == {""}
    assert sum(e.type == events_pb2.IMPRESSION for e in events) == 30
    assert len(list(source.items or [])) == 1_682

