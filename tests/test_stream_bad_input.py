"""Bad input lands in the dead-letter topic with its reason; good events around it are processed once."""

from __future__ import annotations

import time

from kafka import KafkaProducer

from streamrank.config import Settings
from streamrank.events import validate
from streamrank.pipeline import end_offsets, read_topic, start_worker, stop_worker, wait_caught_up
from streamrank.topics import ensure_topics
from streamrank.v1 import events_pb2
from tests.streamtools import load_state, log_path

T0 = 1_700_000_000_000


def _event(i: int, **over: object) -> events_pb2.Event:
    e = events_pb2.Event(event_id=f"e{i}", user_id=f"u{i % 3}", item_id=f"i{i % 5}", type=events_pb2.CLICK,
                         ts_ms=T0 + i * 1000, session_id="s", scenario="web")
    for k, v in over.items():
        setattr(e, k, v)
    return e


def test_bad_events_go_to_dlq_with_reasons_and_good_ones_count_once(settings: Settings) -> None:
    ensure_topics(settings)
    good = [_event(i) for i in range(30)]
    truncated = _event(100, query="a fairly long query so the cut lands inside a field").SerializeToString()[:-9]
    bad: list[tuple[bytes, str]] = [
        (truncated, validate.MALFORMED),
        (b"\xff\xff\xff\xff", validate.MALFORMED),
        (_event(101, user_id="").SerializeToString(), validate.MISSING_FIELD),
        (_event(102, item_id="").SerializeToString(), validate.MISSING_FIELD),
        (_event(103, ts_ms=-5).SerializeToString(), validate.BAD_TIMESTAMP),
        (_event(104, ts_ms=int(time.time() * 1000) + 30 * 86_400_000).SerializeToString(),
         validate.FUTURE_TIMESTAMP),
        (_event(105, type=9).SerializeToString(), validate.UNKNOWN_TYPE),
        (_event(106, query="x" * (settings.max_event_bytes + 10)).SerializeToString(), validate.OVERSIZED),
        (_event(107, position=-1).SerializeToString(), validate.BAD_POSITION),
        (_event(108, user_id="a\x01").SerializeToString(), validate.BAD_ID),  # the scorer refuses such ids too
        (_event(109, item_id="it\x1b[31m").SerializeToString(), validate.BAD_ID),
    ]
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, max_request_size=4_000_000)
    topic = settings.topic("events")
    # Interleave bad records with good ones, and send every good event twice (duplicates).
    for i, e in enumerate(good):
        producer.send(topic, key=e.user_id.encode(), value=e.SerializeToString())
        if i < len(bad):
            producer.send(topic, key=e.user_id.encode(), value=bad[i][0])
        producer.send(topic, key=e.user_id.encode(), value=e.SerializeToString())
    producer.flush()
    producer.close()

    worker = start_worker(settings, log_path(settings, "worker"))
    try:
        status = wait_caught_up(settings, end_offsets(settings, topic), proc=worker, timeout_s=120)
    finally:
        assert stop_worker(worker) == 0

    counters = status["counters"]
    assert counters["dead_letters"] == len(bad)
    assert counters["duplicates"] == len(good)
    assert counters["processed"] == len(good)

    dlq = read_topic(settings, "events.dlq", end_offsets(settings, settings.topic("events.dlq")))
    got = sorted((dict(r.headers)["x-reason"].decode(), r.value) for r in dlq)
    assert got == sorted((reason, raw[: 1024 * 1024]) for raw, reason in bad)
    for record in dlq:
        headers = dict(record.headers)
        assert headers["x-detail"], "every dead letter says why"
        assert headers["x-source-topic"].decode() == topic
        assert int(headers["x-source-offset"]) >= 0

    state = load_state(settings)
    clicks = sum(u.totals[1] for u in state["users"].values())
    assert clicks == len(good), "each good event counted exactly once"
    assert sum(sum(v) for v in state["scenario"].values()) == len(good)
