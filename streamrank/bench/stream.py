"""Stream worker throughput: events/s from the events topic to durable RocksDB state.

Each run publishes a fresh copy of a MovieLens request stream to the embedded broker, then reads it three
ways, one after the other on the same topic:
  ceiling   a raw kafka-python consumer that parses every event (no state): what the broker can deliver;
  faust     a bare Faust agent with take_events (no processing): the framework's own per-event cost;
  worker    `streamrank worker` as a separate process: parse, validate, dedupe, fold into state, emit
            samples / snapshots / co-occurrence updates, commit RocksDB + offsets, write the state changelog;
  no changelog  the same worker with `changelog = false` (`median.worker_no_changelog`): what the
            changelog costs, measured side by side.
Each rate is records / (time of the last record - time of the first record). Medians over the runs, and
the worker's ratio to the ceiling, are written to docs/benchmarks/stream-throughput.{md,json}.

    python -m streamrank.bench.stream --runs 3            (make bench-stream)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

from streamrank.broker import EmbeddedBroker
from streamrank.config import Settings, load_settings
from streamrank.data.movielens import load_movielens
from streamrank.data.requests import movielens_events
from streamrank.events.producer import produce_events
from streamrank.pipeline import end_offsets, start_worker, stop_worker, wait_caught_up
from streamrank.topics import ensure_topics
from streamrank.v1 import events_pb2

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
RATES = ("ceiling", "faust", "worker", "worker_no_changelog")


def raw_consumer_rate(settings: Settings, expected: int) -> float:
    """Events/s of a kafka-python consumer that parses every record (the ceiling)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic("events")
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             max_poll_records=20_000, fetch_max_bytes=16 * 1024 * 1024,
                             max_partition_fetch_bytes=4 * 1024 * 1024)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        n, t0, t1 = 0, 0.0, 0.0
        event = events_pb2.Event()
        while n < expected:
            for records in consumer.poll(timeout_ms=1000).values():
                if not t0:
                    t0 = time.time()
                for rec in records:
                    event.ParseFromString(rec.value)
                n += len(records)
                t1 = time.time()
        return n / (t1 - t0)
    finally:
        consumer.close()


def faust_rate(settings: Settings, expected: int) -> float:
    """Events/s of a bare Faust take_events agent, run as a child process."""
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.json"
        env = {**os.environ, "BOOTSTRAP": settings.bootstrap_servers, "RESULT_PATH": str(path)}
        subprocess.run([sys.executable, "-m", "streamrank.bench.faust_baseline", settings.topic("events"),
                        str(expected)], env=env, capture_output=True, timeout=600, check=False)
        if not path.exists():
            raise RuntimeError("the Faust baseline did not finish")
        result = json.loads(path.read_text())
    return result["records"] / result["seconds"]


def worker_rate(settings: Settings, log_dir: Path) -> tuple[float, dict]:
    """Events/s of `streamrank worker` from its first fetched record to its last durable batch."""
    targets = end_offsets(settings, settings.topic("events"))
    worker = start_worker(settings, log_dir / f"{settings.worker_id}.log")
    try:
        status = wait_caught_up(settings, targets, proc=worker, timeout_s=900)
    finally:
        stop_worker(worker)
    seconds = status["last_batch_at"] - status["first_record_at"]
    return status["counters"]["records"] / seconds, status


def run(dataset: str, ratings: int | None, runs: int, with_faust: bool) -> dict:
    """All runs; returns the figures written to the JSON file."""
    ml = load_movielens(dataset)  # type: ignore[arg-type]
    events = list(movielens_events(ml, limit=ratings))
    rows: list[dict] = []
    with TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        for i in range(runs):
            settings = load_settings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"bench{i}.",
                                     worker_id=f"bench-worker-{i}", data_dir=str(Path(tmp) / f"run{i}"))
            ensure_topics(settings)
            produce_events(settings, events, progress=False, strict=True)
            row = {"run": i + 1, "events": len(events)}
            row["ceiling"] = raw_consumer_rate(settings, len(events))
            if with_faust:
                row["faust"] = faust_rate(settings, len(events))
            row["worker"], status = worker_rate(settings, Path(tmp))
            row["samples"] = status["counters"].get("samples", 0)
            bare = replace(settings, changelog=False, worker_id=f"{settings.worker_id}-nocl",
                           data_dir=str(Path(tmp) / f"run{i}-nocl"))
            row["worker_no_changelog"], _ = worker_rate(bare, Path(tmp))
            rows.append(row)
            print(f"run {i + 1}/{runs}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in row.items() if k in RATES),
                  flush=True)
    medians = {k: statistics.median(r[k] for r in rows) for k in RATES if k in rows[0]}
    return {
        "dataset": dataset, "ratings": ratings, "events": len(events), "runs": rows, "median": medians,
        "worker_vs_ceiling": medians["worker"] / medians["ceiling"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }


def write(result: dict, command: str) -> Path:
    """Writes the markdown table and the JSON beside it; returns the markdown path."""
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "stream-throughput.json").write_text(json.dumps({**result, "command": command}, indent=1) + "\n")
    med = result["median"]
    lines = [
        "# Stream worker throughput",
        "",
        f"Command: `{command}`  ",
        f"Data: {result['dataset']} request stream ({result['events']:,} events), embedded broker (tansu), "
        f"{result['machine']['cpus']} CPUs, Python {result['machine']['python']}, {result['date']}.",
        "",
        "Events per second from the events topic; the worker's figure is topic to durable RocksDB state "
        "(samples, snapshots and co-occurrence updates sent and acknowledged, offsets committed).",
        "",
        "| run | raw kafka-python consumer (ceiling) | bare Faust take_events | streamrank worker | "
        "worker without the changelog |",
        "|---|---:|---:|---:|---:|",
    ]
    nan = float("nan")
    for r in result["runs"]:
        lines.append(f"| {r['run']} | {r['ceiling']:,.0f} | {r.get('faust', nan):,.0f} | "
                     f"{r['worker']:,.0f} | {r.get('worker_no_changelog', nan):,.0f} |")
    lines.append(f"| **median** | **{med['ceiling']:,.0f}** | **{med.get('faust', nan):,.0f}** | "
                 f"**{med['worker']:,.0f}** | **{med.get('worker_no_changelog', nan):,.0f}** |")
    lines += [
        "",
        f"Worker / ceiling (medians): {result['worker_vs_ceiling']:.2f}.",
        "",
        "The bare Faust column is Faust's stream path with no work at all; the worker reads the events topic "
        "with its own batched aiokafka consumer inside the Faust app for that reason (docs/design.md).",
        "",
    ]
    path = DOCS / "stream-throughput.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI of the benchmark (`streamrank bench stream ...`)."""
    parser = argparse.ArgumentParser(prog="streamrank bench stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--ratings", type=int, default=80_000,
                        help="ratings replayed (about 3.6 events each; default gives ~290k events)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-faust", action="store_true", help="skip the bare Faust column")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.runs < 1 or (args.ratings is not None and args.ratings < 1):
        parser.error("--runs and --ratings must be >= 1")
    result = run(args.dataset, args.ratings, args.runs, not args.no_faust)
    command = "python -m streamrank.bench.stream " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(result["median"], indent=1))
    print(f"worker / ceiling: {result['worker_vs_ceiling']:.2f}")
    if not args.no_write:
        print(f"wrote {write(result, command.strip())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
