"""Does the trainer keep up with the stream? The stream benchmark's ML-1M events through broker, worker and
`streamrank train`, with the trainer's lag (samples the worker has emitted and the trainer has not learned)
sampled over time.

The events are published first, so the worker runs at its full speed (as after an outage, or a backfill);
then the worker and the trainer start together as processes, the way an operator runs them, sharing the
machine with the embedded broker. Every `--interval` seconds: samples emitted (the samples topic's end
offsets, read from fetch high-watermarks) and samples consumed by the trainer (its status file, rewritten
at each checkpoint: `checkpoint_every_s` is set to the interval, so the trainer's figure is at most one
interval old). The run ends when the trainer has consumed every sample of the finished worker, or at the
timeout. Results: docs/benchmarks/train-keepup.{md,json,png}.

    python -m streamrank.bench.keepup                      # ML-1M, 80k ratings, AW-MoE & CL
    python -m streamrank.bench.keepup --model din --ratings 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from streamrank.bench.movielens_cli import parse_overrides
from streamrank.bench.trainbench_common import DOCS, machine
from streamrank.broker import EmbeddedBroker
from streamrank.config import Settings, load_settings
from streamrank.data.movielens import load_movielens
from streamrank.data.requests import movielens_events
from streamrank.events.producer import produce_events
from streamrank.pipeline import end_offsets, processed_through, read_status, start_trainer, start_worker, stop_worker
from streamrank.topics import ensure_topics
from streamrank.train.online import trainer_dir


def _trainer_consumed(settings: Settings, model: str) -> int:
    """Samples the trainer has consumed (the sum of its checkpointed next offsets), 0 before its first."""
    try:
        status = json.loads((trainer_dir(settings, model) / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(int(v) for v in status.get("offsets", {}).values())


def _worker_done(settings: Settings, targets: dict[int, int]) -> bool:
    done = processed_through(read_status(settings), settings.topic("events"))
    return all(done.get(p, -1) + 1 >= end for p, end in targets.items() if end > 0)


def run_keepup(dataset: str, ratings: int | None, model: str, interval_s: float, timeout_s: float,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run (with `extra` settings for worker and trainer); returns the time series and the summary."""
    events = list(movielens_events(load_movielens(dataset), limit=ratings))  # type: ignore[arg-type]
    with TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        overrides: dict[str, Any] = {"bootstrap_servers": broker.bootstrap_servers, "data_dir": tmp,
                                     "checkpoint_every_s": interval_s, **(extra or {})}
        settings = load_settings(**overrides)
        ensure_topics(settings)
        produce_events(settings, events, progress=False, strict=True)
        targets = end_offsets(settings, settings.topic("events"))
        logs = Path(tmp)
        worker = start_worker(settings, logs / "worker.log")
        trainer = start_trainer(settings, model, logs / "trainer.log")
        series: list[dict[str, float]] = []
        t0 = time.monotonic()
        worker_done_s: float | None = None
        try:
            while time.monotonic() - t0 < timeout_s:
                for name, proc in (("worker", worker), ("trainer", trainer)):
                    if proc.poll() is not None:
                        tail = (logs / f"{name}.log").read_text()[-2000:]
                        raise RuntimeError(f"the {name} exited with code {proc.returncode}:\n{tail}")
                emitted = sum(end_offsets(settings, settings.topic("samples")).values())
                consumed = _trainer_consumed(settings, model)
                now = time.monotonic() - t0
                series.append({"t_s": round(now, 2), "emitted": emitted, "trained": consumed,
                               "lag": emitted - consumed})
                print(f"  {now:6.1f}s  worker {emitted:>8,} samples  trainer {consumed:>8,}  "
                      f"lag {emitted - consumed:>8,}", flush=True)
                if worker_done_s is None and _worker_done(settings, targets):
                    worker_done_s = now
                if worker_done_s is not None and consumed >= emitted > 0:
                    break
                time.sleep(interval_s)
        finally:
            stop_worker(trainer)
            stop_worker(worker)
    last = series[-1]
    at_worker_end = next((r for r in series if worker_done_s is not None and r["t_s"] >= worker_done_s), last)
    drained = worker_done_s is not None and last["lag"] <= 0
    first_trained = next((r for r in series if r["trained"] > 0), last)
    trainer_rate = ((last["trained"] - first_trained["trained"]) / (last["t_s"] - first_trained["t_s"])
                    if last["t_s"] > first_trained["t_s"] else float("nan"))
    return {
        "dataset": dataset, "ratings": ratings, "events": len(events), "model": model,
        "interval_s": interval_s, "series": series, "settings": extra or {},
        "samples": last["emitted"], "worker_done_s": worker_done_s,
        "worker_samples_per_s": (at_worker_end["emitted"] / worker_done_s) if worker_done_s else float("nan"),
        "trainer_samples_per_s": trainer_rate,
        "lag_at_worker_end": at_worker_end["lag"], "max_lag": max(r["lag"] for r in series),
        "final_lag": last["lag"], "drained": drained, "drained_s": last["t_s"] if drained else None,
        "kept_up": bool(drained and max(r["lag"] for r in series) <= 2 * 1024),
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
    }


def write_keepup(result: dict, command: str, out_dir: Path = DOCS) -> Path:
    """Writes train-keepup.{md,json,png}; returns the markdown path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train-keepup.json").write_text(json.dumps({**result, "command": command}, indent=1) + "\n")
    s = result["series"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([r["t_s"] for r in s], [r["emitted"] for r in s], label="samples emitted (worker)")
    ax.plot([r["t_s"] for r in s], [r["trained"] for r in s], label="samples consumed (trainer)")
    ax.plot([r["t_s"] for r in s], [r["lag"] for r in s], label="lag", linestyle="--")
    if result["worker_done_s"]:
        ax.axvline(result["worker_done_s"], color="grey", linewidth=0.8)
    ax.set_xlabel("seconds since worker and trainer started")
    ax.set_ylabel("samples")
    ax.set_title(f"{result['model']} trainer vs the worker, {result['dataset']} ({result['events']:,} events)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "train-keepup.png", dpi=100)
    plt.close(fig)
    m = result["machine"]
    every = max(1, len(s) // 25)
    lines = [
        "# Does the trainer keep up with the stream?", "",
        f"Command: `{command}`  ",
        f"Data: {result['dataset']} request stream ({result['events']:,} events, {result['samples']:,} samples), "
        f"published before the worker starts; embedded broker, `streamrank worker` and `streamrank train --model "
        f"{result['model']}` as processes on {m['cpus']} CPUs, Python {m['python']}, torch {m['torch']}, "
        f"{result['date']}." + (f" Settings: {result['settings']}." if result.get("settings") else ""), "",
        "| figure | value |", "|---|---:|",
        f"| worker: samples/s while it ran | {result['worker_samples_per_s']:,.0f} |",
        f"| trainer: samples/s (first to last consumed sample) | {result['trainer_samples_per_s']:,.0f} |",
        f"| worker finished after | {result['worker_done_s'] or float('nan'):.1f} s |",
        f"| lag when the worker finished | {result['lag_at_worker_end']:,} samples |",
        f"| largest lag | {result['max_lag']:,} samples |",
        f"| lag at the end | {result['final_lag']:,} samples"
        + (f" (drained after {result['drained_s']:.1f} s)" if result["drained"] else " (not drained: timeout)")
        + " |",
        f"| kept up (drained, and never more than two micro-batches behind) | {'yes' if result['kept_up'] else 'no'} |",
        "", "![lag over time](train-keepup.png)", "",
        f"The trainer's figure comes from its status file, rewritten at every checkpoint (every "
        f"{result['interval_s']} s here), so it trails the truth by up to that much.", "",
        "| t (s) | emitted | trained | lag |", "|---:|---:|---:|---:|",
        *(f"| {r['t_s']:.1f} | {r['emitted']:,} | {r['trained']:,} | {r['lag']:,} |" for r in s[::every]), "",
    ]
    path = out_dir / "train-keepup.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI of the benchmark (`streamrank bench keepup ...`)."""
    parser = argparse.ArgumentParser(prog="streamrank bench keepup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--ratings", type=int, default=80_000, help="ratings replayed (the stream benchmark's)")
    parser.add_argument("--model", default="aw_moe_cl")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples of the lag")
    parser.add_argument("--timeout", type=float, default=1800.0, help="longest run in seconds")
    parser.add_argument("--out", type=Path, default=DOCS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for worker and trainer (e.g. train_torch_threads=1); repeatable")
    args = parser.parse_args(argv)
    if args.ratings < 1 or args.interval <= 0 or args.timeout <= 0:
        parser.error("--ratings must be >= 1, --interval and --timeout > 0")
    result = run_keepup(args.dataset, args.ratings, args.model, args.interval, args.timeout,
                        parse_overrides(args.set))
    summary = {k: result[k] for k in ("worker_samples_per_s", "trainer_samples_per_s", "lag_at_worker_end",
                                      "max_lag", "final_lag", "drained", "kept_up")}
    print(json.dumps(summary, indent=1))
    if not args.no_write:
        command = "python -m streamrank.bench.keepup " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"wrote {write_keepup(result, command.strip(), args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
