"""The README's main job: the pipeline end to end on the embedded broker.

It starts the broker, the stream worker and the online trainer (AW-MoE & CL), replays MovieLens into
them, and prints the state the worker built, the versions the trainer published and its prequential
AUC. Later stages (scorer, simulator) join here as they are built.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from streamrank.broker import EmbeddedBroker
from streamrank.config import load_settings
from streamrank.events.producer import open_source, produce_events, produce_items
from streamrank.pipeline import end_offsets, start_trainer, start_worker, stop_worker, wait_caught_up
from streamrank.registry.store import Registry
from streamrank.stream.summary import print_summary
from streamrank.topics import ensure_topics
from streamrank.train.online import trainer_dir

MODEL = "aw_moe_cl"


def _trainer_progress(path: Path) -> str:
    try:
        status = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return "starting"
    m = status["metrics"]
    return (f"{int(m['samples_learned']):,} samples learned, prequential AUC {m['prequential_auc']:.4f}, "
            f"{status['publications']} versions published")


def run_demo(dataset: str = "ml-100k", limit: int | None = None, data_dir: str = "var/demo") -> int:
    """Runs broker + worker + trainer + replay of `dataset`; prints what they built; returns an exit code."""
    base = Path(data_dir)
    if base.exists():
        shutil.rmtree(base)  # the embedded broker starts empty, so the state must too
    base.mkdir(parents=True)
    started = time.monotonic()
    print(f"[demo] starting the embedded broker (logs in {base})", flush=True)
    with EmbeddedBroker(log_path=base / "broker.log") as broker:
        settings = load_settings(bootstrap_servers=broker.bootstrap_servers, data_dir=str(base),
                                 train_batch_size=256, checkpoint_every_s=10.0, publish_every_s=15.0)
        ensure_topics(settings)
        print(f"[demo] starting the stream worker and the online trainer ({MODEL})", flush=True)
        worker = start_worker(settings, log_path=base / "worker.log")
        trainer = start_trainer(settings, MODEL, log_path=base / "trainer.log", extra_args=["--idle-exit", "20"])
        status_file = trainer_dir(settings, MODEL) / "status.json"
        try:
            source = open_source(f"movielens:{dataset}", limit=limit)
            print(f"[demo] publishing the {dataset} catalog and its request stream", flush=True)
            assert source.items is not None
            print("  " + produce_items(settings, source.items).summary(), flush=True)
            print("  " + produce_events(settings, source.events).summary(), flush=True)
            t0 = time.monotonic()
            status = wait_caught_up(settings, end_offsets(settings, settings.topic("events")), proc=worker,
                                    progress=True)
            print(f"[demo] worker caught up {time.monotonic() - t0:.1f}s after the last event was published; "
                  f"counters: {status.get('counters')}", flush=True)
            print("[demo] waiting for the trainer to learn every sample (it stops 20 s after the last)", flush=True)
            while trainer.poll() is None:
                print(f"  trainer: {_trainer_progress(status_file)}", flush=True)
                time.sleep(10)
            if trainer.returncode != 0:
                print(f"[demo] the trainer failed (exit {trainer.returncode}); see {base / 'trainer.log'}")
                return 1
        finally:
            code = stop_worker(worker)
            stop_worker(trainer)
            print(f"[demo] worker stopped (exit code {code})", flush=True)
        print_summary(settings)
        print(f"trainer {MODEL}: {_trainer_progress(status_file)}")
        registry = Registry(settings.registry_root(), MODEL)
        live = registry.current()
        if live is not None:
            auc = live.meta["metrics"]["prequential_auc"]
            print(f"  live version v{live.version} (checksum {live.checksum[:12]}), prequential AUC {auc:.4f}, "
                  f"versions kept: {registry.list_versions()}  ({registry.base})")
    print(f"[demo] done in {time.monotonic() - started:.0f}s", flush=True)
    return 0
