"""What freshness buys through the scorer: an online A/B of two label policies in the drifting synthetic world.

One embedded broker, one worker under the `fake_negative` policy (1 h attribution window, the default), and
two trainers of the same preset on its samples, side by side under two registry names: `<preset>_window`
learns only the window-closed emissions (what a `window` worker gives: every label an hour late), and
`<preset>_fnw` learns the provisional negatives and the positives at once with the FNW correction. One
scorer serves both; the simulator's synthetic world (`simulator.environment`, preferences drifting every
`--drift-period` event-time seconds) sends each user's requests to one arm's model through Rank and
publishes the impressions, clicks and purchases back to Kafka: the feedback loop of production.

Before a trainer's first version the arm is served by its fallback (random order), so the early part of the
run compares a model with no model; CTR is reported over the whole run and over its second half (both arms
served by models), with the simulator's per-user bootstrap interval and permutation p-value.

    python -m streamrank.bench.delayed_feedback_ab --requests 40000 --rate 60 --drift-period 7200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from streamrank.bench.trainbench_common import DOCS, machine

ARMS = ("window", "fnw")


def run_ab(model: str, requests: int, rate: float, drift_period_s: float, seed: int, work: Path) -> dict[str, Any]:
    """The pipeline, the A/B and its analysis (CTR per arm, whole run and second half)."""
    from simulator.analysis import arm_summary, comparisons, online_metrics
    from simulator.arms import Arm
    from simulator.client import ScorerClient
    from simulator.environment import Environment, EnvParams
    from simulator.online import run_online
    from simulator.publish import KafkaSink
    from streamrank.broker import EmbeddedBroker, free_port
    from streamrank.config import load_settings
    from streamrank.pipeline import start_scorer, start_trainer, start_worker, stop_worker
    from streamrank.topics import ensure_topics

    names = {arm: f"{model}_{arm}" for arm in ARMS}
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        settings = load_settings(
            bootstrap_servers=broker.bootstrap_servers, data_dir=str(work / "data"), label_policy="fake_negative",
            serve_models=",".join(names[a] for a in reversed(ARMS)), serve_retrieval="", serve_port=free_port(),
            serve_metrics_port=0, serve_poll_s=0.25, checkpoint_every_s=2.0, publish_every_s=2.0,
            min_samples_to_publish=200, train_torch_threads=1, train_batch_within_s=0.5, batch_within_s=0.2)
        ensure_topics(settings)
        procs = [start_worker(settings, work / "worker.log")]
        for arm in ARMS:
            mode = settings.with_overrides(train_fake_negative="window" if arm == "window" else "fnw")
            procs.append(start_trainer(mode, model, work / f"trainer-{arm}.log", ["--name", names[arm]]))
        procs.append(start_scorer(settings, work / "scorer.log", wait=False))
        env = Environment(EnvParams(seed=seed, drift_period_ms=round(drift_period_s * 1000)))
        arms = [Arm(arm, model=names[arm]) for arm in ARMS]
        client = ScorerClient(f"{settings.serve_host}:{settings.serve_port}", max_inflight=64)
        sink = KafkaSink(settings)
        t0 = time.monotonic()
        try:
            result = run_online(env, arms, requests, salt="delayed-feedback", client=client, sink=sink,
                                concurrency=16, hit_k=5, rate=rate, progress_every=5000)
        finally:
            sink.close()
            client.close()
            for proc in reversed(procs):
                stop_worker(proc)
        wall_s = time.monotonic() - t0
    columns = result.columns()
    metrics = online_metrics(result.hit_k, int(result.params.get("slate_size", 10)))[:1]  # CTR
    n = len(columns["arm"])
    halves = {"whole run": np.ones(n, dtype=bool), "second half": np.arange(n) >= n // 2}
    out: dict[str, Any] = {"requests": n, "wall_s": wall_s, "event_time_h": (columns["ts_ms"][-1] - columns["ts_ms"][0])
                           / 3_600_000, "parts": {}}
    versions = np.asarray(columns["model_version"])
    for part, mask in halves.items():
        summary = arm_summary(columns, metrics, list(ARMS), 1000, seed, mask)
        compared = comparisons(columns, metrics, "window", list(ARMS), 1000, 1000, seed, mask)
        out["parts"][part] = {
            "ctr": {s["arm"]: s["CTR"]["value"] for s in summary},
            "ctr_ci": {s["arm"]: s["CTR"]["ci"] for s in summary},
            "fallback_share": {arm: float(np.mean(versions[mask & (columns["arm"] == arm)] < 0)) for arm in ARMS},
            "relative": compared[0]["relative"], "diff_ci": compared[0]["diff_ci"], "p_value": compared[0]["p_value"],
        }
    return out


def run_key(drift_period_s: float, seed: int) -> str:
    """The JSON key of one run: drift_7200s_seed0."""
    return f"drift_{drift_period_s:g}s_seed{seed}"


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    """docs/benchmarks/delayed-feedback-ab.{md,json}: every run kept (`report["runs"]`), one table row per run
    and part."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "delayed-feedback-ab.json").write_text(json.dumps(report, indent=1) + "\n")
    runs = report["runs"]
    first = next(iter(runs.values()))
    lines = [
        "# What freshness buys: fake_negative + FNW against the window policy, online A/B in a drifting world", "",
        f"{first['requests']:,} requests of the synthetic world per run (preferences drifting every *drift* s of "
        f"event time; {first['event_time_h']:.1f} h of event time in about {first['wall_s'] / 60:.0f} min of wall "
        f"time at {first['rate']:g} requests/s), users split 50/50 between two {first['model'].upper()} trainers "
        "on the same fake_negative stream (1 h window): `window` learns each impression when its window closes, "
        "`fnw` at once with the FNW correction. Both behind one scorer, each model's versions published every "
        "2 s. CTR = clicks / impressions with a per-user bootstrap 95% interval; p: permutation test over users. "
        "Until a trainer's first version its arm is served by the fallback (random order).", "",
        "| run | part | CTR window | CTR fnw | fnw vs window | 95% interval of the difference | p | served by the "
        "fallback (window / fnw) |", "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for run in runs.values():
        for part, r in run["parts"].items():
            lo, hi = r["diff_ci"]
            fb = r["fallback_share"]
            lines.append(f"| drift {run['drift_period_s']:g} s, seed {run['seed']} | {part} | "
                         f"{r['ctr']['window']:.4f} | {r['ctr']['fnw']:.4f} | {r['relative']:+.1%} | "
                         f"[{lo:+.4f}, {hi:+.4f}] | {r['p_value']:.3f} | {fb['window']:.0%} / {fb['fnw']:.0%} |")
    lines += ["", "Commands (CPU, 2 cores):", "", *[f"- `{run['command']}` ({run['date']})" for run in runs.values()],
              ""]
    path = out_dir / "delayed-feedback-ab.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI of the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m streamrank.bench.delayed_feedback_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="din")
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=60.0, help="requests per wall-clock second")
    parser.add_argument("--drift-period", type=float, default=7200.0, help="event-time seconds (0: no drift)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    if args.requests < 1000 or args.rate <= 0 or args.drift_period < 0:
        parser.error("--requests >= 1000, --rate > 0, --drift-period >= 0")
    with TemporaryDirectory() as tmp:
        result = run_ab(args.model, args.requests, args.rate, args.drift_period, args.seed, Path(tmp))
    result.update({"model": args.model, "rate": args.rate, "drift_period_s": args.drift_period, "seed": args.seed,
                   "machine": machine(), "date": time.strftime("%Y-%m-%d"),
                   "command": "python -m streamrank.bench.delayed_feedback_ab "
                              + " ".join(argv if argv is not None else sys.argv[1:])})
    path = args.out / "delayed-feedback-ab.json"
    report = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    report["runs"][run_key(args.drift_period, args.seed)] = result
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
