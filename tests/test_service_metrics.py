"""Prometheus /metrics of the stream worker (a real worker process) and of the online trainer."""

from __future__ import annotations

import logging
import re
import time
import urllib.request

import pytest
from kafka import KafkaProducer

from streamrank.broker import free_port
from streamrank.config import Settings
from streamrank.events.producer import open_source, produce_events
from streamrank.observability import ProgressLog, serve_metrics
from streamrank.pipeline import end_offsets, start_worker, stop_worker, wait_caught_up
from streamrank.topics import ensure_topics
from streamrank.train.online import OnlineTrainer
from tests.streamtools import log_path
from tests.synthetic_samples import make_samples


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def _value(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert found, f"{series} not in /metrics"
    return float(found.group(1))


def test_worker_metrics(settings: Settings) -> None:
    port = free_port()
    s = settings.with_overrides(worker_metrics_port=port, progress_every_s=0.5)
    ensure_topics(s)
    events = list(open_source("movielens:ml-100k", limit=300).events)
    produce_events(s, events, progress=False)
    raw = KafkaProducer(bootstrap_servers=s.bootstrap_servers)  # past the producer's own validation
    raw.send(s.topic("events"), key=b"u", value=b"\xff\xff\xff\xff")
    raw.flush()
    raw.close()
    worker = start_worker(s, log_path(s, "worker"))
    try:
        wait_caught_up(s, end_offsets(s, s.topic("events")), proc=worker, timeout_s=120)
        deadline = time.monotonic() + 30
        while True:  # the endpoint answers once the worker's loop runs
            try:
                text = _scrape(port)
                break
            except OSError:
                assert time.monotonic() < deadline, "worker /metrics never answered"
                time.sleep(0.5)
    finally:
        assert stop_worker(worker) == 0
    assert _value(text, 'streamrank_worker_events_total{outcome="processed"}') == len(events)
    assert _value(text, "streamrank_worker_records_total") >= len(events) + 1  # re-reads after a rebalance count
    assert _value(text, 'streamrank_worker_dead_letters_total{reason="malformed_protobuf"}') == 1
    assert _value(text, "streamrank_worker_batch_seconds_count") >= 1
    assert "streamrank_worker_lag_records{partition=" in text
    assert _value(text, "process_cpu_seconds_total") > 0  # process metrics come along
    # the worker's log: one format for every library (Faust's included), no terminal escape codes, and the
    # steady progress line
    lines = [line for line in log_path(s, "worker").read_text().splitlines() if line.strip()]
    assert lines and not any("\x1b[" in line for line in lines)
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
    assert all(stamp.match(line) for line in lines), [line for line in lines if not stamp.match(line)][:3]
    progress = [line for line in lines if re.search(r"worker \S+: [\d,]+ records \([\d,]+/s\), [\d,]+ samples", line)]
    assert progress and "dead letters, lag" in progress[-1] and "mean batch" in progress[-1]


def test_trainer_metrics(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    s = settings.with_overrides(train_batch_size=256, train_batch_within_s=0.2, publish_every_s=0.0,
                                min_samples_to_publish=100_000, progress_every_s=0.3)
    caplog.set_level(logging.INFO, logger="streamrank.train.online")
    ensure_topics(s)
    producer = KafkaProducer(bootstrap_servers=s.bootstrap_servers, linger_ms=20)
    samples = make_samples(600)
    for sample in samples:
        producer.send(s.topic("samples"), key=sample.user_id.encode(), value=sample.SerializeToString())
    producer.flush()
    producer.close()
    trainer = OnlineTrainer(s, "din")
    trainer.run(idle_exit_s=2.0)
    port, server = serve_metrics(trainer.metric_series, "127.0.0.1", 0)
    try:
        text = _scrape(port)
    finally:
        server.shutdown()
        server.server_close()
    assert _value(text, 'streamrank_trainer_samples_learned_total{model="din"}') == len(samples)
    assert _value(text, 'streamrank_trainer_lag_samples{model="din"}') == 0  # caught up
    assert 0.0 <= _value(text, 'streamrank_trainer_prequential_auc{model="din"}') <= 1.0
    assert _value(text, 'streamrank_trainer_versions_published_total{model="din"}') == 0  # below the minimum
    assert "process_resident_memory_bytes" in text
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trainer din: ")]
    assert lines, "the trainer writes its progress line while it runs (here: while idle before it exits)"
    assert re.match(r"trainer din: 600 samples learned \([\d,]+/s\), lag 0, prequential AUC [0-9.]+, "
                    r"versions published 0, blocked 0, replay paused in \d+% of batches$", lines[-1]), lines[-1]


def test_the_progress_log_keeps_its_interval_and_its_rates() -> None:
    now = [100.0]
    logger = logging.getLogger("tests.progress")
    seen: list[tuple[dict, dict]] = []

    def render(counters: object, rates: object) -> str:
        seen.append((dict(counters), dict(rates)))  # type: ignore[call-overload]
        return "line"

    progress = ProgressLog(logger, 10.0, base={"n": 1000}, clock=lambda: now[0])
    assert not progress.maybe({"n": 1500}, render), "not due before the interval"
    now[0] = 110.0
    assert progress.maybe({"n": 1500}, render) and seen[-1][1] == {"n": 50.0}, "rate from the base, not from 0"
    now[0] = 115.0
    assert not progress.maybe({"n": 9999}, render)
    now[0] = 130.0
    assert progress.maybe({"n": 2500}, render) and seen[-1][1] == {"n": 50.0}
    assert progress.lines == 2
    off = ProgressLog(logger, 0.0, clock=lambda: now[0])
    now[0] = 1e9
    assert not off.maybe({"n": 1}, render) and off.lines == 0
