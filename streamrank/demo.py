"""The README's main job: the pipeline end to end on the embedded broker.

Today it starts the broker and the stream worker, replays MovieLens into them and prints the state the
worker built; later stages (trainer, scorer, simulator) join here as they are built.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from streamrank.broker import EmbeddedBroker
from streamrank.config import load_settings
from streamrank.events.producer import open_source, produce_events, produce_items
from streamrank.pipeline import end_offsets, start_worker, stop_worker, wait_caught_up
from streamrank.stream.summary import print_summary
from streamrank.topics import ensure_topics


def run_demo(dataset: str = "ml-100k", limit: int | None = None, data_dir: str = "var/demo") -> int:
    """Runs broker + worker + replay of `dataset`, prints the resulting state; returns an exit code."""
    base = Path(data_dir)
    if base.exists():
        shutil.rmtree(base)  # the embedded broker starts empty, so the state must too
    base.mkdir(parents=True)
    started = time.monotonic()
    print(f"[demo] starting the embedded broker (log: {base / 'broker.log'})", flush=True)
    with EmbeddedBroker(log_path=base / "broker.log") as broker:
        settings = load_settings(bootstrap_servers=broker.bootstrap_servers, data_dir=str(base))
        ensure_topics(settings)
        print("[demo] starting the stream worker", flush=True)
        worker = start_worker(settings, log_path=base / "worker.log")
        try:
            source = open_source(f"movielens:{dataset}", limit=limit)
            print(f"[demo] publishing the {dataset} catalog and its request stream", flush=True)
            assert source.items is not None
            print("  " + produce_items(settings, source.items).summary(), flush=True)
            report = produce_events(settings, source.events)
            print("  " + report.summary(), flush=True)
            targets = end_offsets(settings, settings.topic("events"))
            t0 = time.monotonic()
            status = wait_caught_up(settings, targets, proc=worker, progress=True)
            print(f"[demo] worker caught up {time.monotonic() - t0:.1f}s after the last event was published; "
                  f"counters: {status.get('counters')}", flush=True)
        finally:
            code = stop_worker(worker)
            print(f"[demo] worker stopped (exit code {code})", flush=True)
        print_summary(settings)
    print(f"[demo] done in {time.monotonic() - started:.0f}s", flush=True)
    return 0
