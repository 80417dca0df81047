"""Prometheus /metrics of the stream worker (a real worker process) and of the online trainer."""

from __future__ import annotations

import re
import time
import urllib.request

from kafka import KafkaProducer

from streamrank.broker import free_port
from streamrank.config import Settings
from streamrank.events.producer import open_source, produce_events
from streamrank.observability import serve_metrics
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
    s = settings.with_overrides(worker_metrics_port=port)
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


def test_trainer_metrics(settings: Settings) -> None:
    s = settings.with_overrides(train_batch_size=256, train_batch_within_s=0.2, publish_every_s=0.0,
                                min_samples_to_publish=100_000)
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
