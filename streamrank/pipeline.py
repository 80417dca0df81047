"""Running the services as processes: start a worker, wait until it has folded in a topic, stop it.

Used by the demo, the integration tests and the benchmarks, so all three drive the system the way an
operator does (separate processes talking through the broker), not through in-process shortcuts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streamrank import kafka_security
from streamrank.config import Settings
from streamrank.stream.app import status_path


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce these settings in a child process."""
    env = dict(os.environ)
    for f in dataclasses.fields(settings):
        if f.name != "extra":
            env[f"STREAMRANK_{f.name.upper()}"] = str(getattr(settings, f.name))
    return env


def start_worker(settings: Settings, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Starts `streamrank worker` as a child process with these settings."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - child owns it
    status = status_path(settings)
    if status.exists():
        status.unlink()
    return subprocess.Popen(
        [sys.executable, "-m", "streamrank.cli", "worker"], env=settings_env(settings),
        stdout=out, stderr=subprocess.STDOUT,
    )


def read_status(settings: Settings) -> dict | None:
    """The worker's last status file, or None before it wrote one."""
    path = status_path(settings)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """partition -> next offset (high watermark) of a topic, read from fetch responses.

    tansu under-reports ListOffsets(LATEST) after multi-record batches, while fetch high-watermarks are
    right, so this polls each partition once instead of asking for end offsets.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             **kafka_security.kafka_python(settings),
                             max_poll_records=1, fetch_max_wait_ms=50)
    try:
        parts: set[int] = set()
        deadline = time.monotonic() + 20
        while not parts and time.monotonic() < deadline:  # metadata may not know the topic on the first ask
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        marks: dict[int, int] = {}
        deadline = time.monotonic() + 20
        while len(marks) < len(tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200, max_records=1)
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None:
                    marks[tp.partition] = hw
        return marks
    finally:
        consumer.close()


def processed_through(status: dict | None, topic: str) -> dict[int, int]:
    """partition -> last offset folded into durable state, from a status dict."""
    out: dict[int, int] = {}
    for key, offset in (status or {}).get("offsets", {}).items():
        name, part = key.rsplit(":", 1)
        if name == topic:
            out[int(part)] = int(offset)
    return out


def wait_caught_up(settings: Settings, targets: dict[int, int], proc: subprocess.Popen[bytes] | None = None,
                   timeout_s: float = 600, progress: bool = False) -> dict:
    """Waits until the worker's durable offsets reach `targets` (partition -> end offset) and no impression
    waits for its item counters; returns the worker's status."""
    return wait_group_caught_up([settings], targets, [proc] if proc is not None else [], timeout_s, progress)[0]


def wait_group_caught_up(group: list[Settings], targets: dict[int, int], procs: list[subprocess.Popen[bytes]],
                         timeout_s: float = 600, progress: bool = False) -> list[dict]:
    """Waits until the workers of one group (one state folder each) have together folded every record of
    `targets` into durable state and none has an impression waiting for its item counters; returns their
    statuses, in the order of `group`."""
    topic = group[0].topic("events")
    total = sum(targets.values())
    deadline = time.monotonic() + timeout_s
    last_print = 0.0
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with code {proc.returncode} before catching up")
        statuses = [read_status(s) or {} for s in group]
        done: dict[int, int] = {}
        for status in statuses:
            for part, offset in processed_through(status, topic).items():
                done[part] = max(done.get(part, -1), offset)
        # Caught up: every record folded in, and no impression still waiting for the counters' frontier
        # (the worker moves it once the partitions are idle; docs/design.md, "Deterministic item counters").
        if (all(done.get(p, -1) + 1 >= end for p, end in targets.items() if end > 0)
                and all(status.get("waiting_impressions", 0) == 0 for status in statuses)):
            return statuses
        if progress and time.monotonic() - last_print > 5:
            count = sum(min(done.get(p, -1) + 1, end) for p, end in targets.items())
            print(f"  worker: {count:,}/{total:,} events folded into state", flush=True)
            last_print = time.monotonic()
        time.sleep(0.2)
    raise TimeoutError(f"worker did not catch up with {targets} within {timeout_s}s")


def read_topic(settings: Settings, logical: str, ends: dict[int, int]) -> list:
    """Every record of a topic up to the given end offsets (kafka-python, no consumer group)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic(logical)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             max_poll_records=5000, **kafka_security.kafka_python(settings))
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out = []
        while any(consumer.position(tp) < ends[tp.partition] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    """Stops a worker gracefully (SIGTERM), killing it if it does not exit in time; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_trainer(settings: Settings, model: str, log_path: Path | None = None,
                  extra_args: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Starts `streamrank train --model MODEL` as a child process with these settings."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "streamrank.cli", "train", "--model", model, *(extra_args or [])],
        env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT,
    )


def start_scorer(settings: Settings, log_path: Path | None = None,
                 ready_timeout_s: float = 300, wait: bool = True) -> subprocess.Popen[bytes]:
    """Starts `streamrank serve` with these settings and (with `wait`) waits until its health check says
    SERVING, which it does once its default model has a version.

    settings.serve_port must be a real port (not 0): the caller connects to it.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from streamrank.serve.tls import channel as tls_channel

    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - child owns it
    proc = subprocess.Popen([sys.executable, "-m", "streamrank.cli", "serve"], env=settings_env(settings),
                            stdout=out, stderr=subprocess.STDOUT)
    if not wait:
        return proc
    deadline = time.monotonic() + ready_timeout_s
    with tls_channel(f"{settings.serve_host}:{settings.serve_port}", settings.serve_tls_ca_file) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the scorer exited with code {proc.returncode}" +
                                   (f"; see {log_path}" if log_path else ""))
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return proc
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    proc.kill()
    raise TimeoutError(f"the scorer was not SERVING within {ready_timeout_s}s")

