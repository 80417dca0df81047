"""Delayed feedback on a MovieLens stream: the online AUC on final labels, per label policy and correction.

The worker's processor (in-process, `bench.throughput.movielens_samples`) turns a MovieLens request stream
into the `fake_negative` stream, every emission in the order the worker sends it: each impression as a
provisional negative at once, again as a positive when clicked, and at its window's close (1 h, the default)
with its final labels. That one stream is what every row learns, with `OnlineLearner` test-then-train and the
trainer's defaults, so the rows differ only in what they learn from it (`train_fake_negative`):
  window  only the window-closed emissions, as a trainer of the `window` policy does (learns an hour late);
  fnw     provisional negatives and positives, FNW importance weights in the loss (Ktena et al., 2019);
  fnc     the same, plain log loss, scores calibrated p = b / (1 - b);
  none    the same, plain log loss, no correction (the bias left in).
Every row is scored on the same impressions against the same final labels: its prediction made before it
learned from the impression (window: at the window's close; the others: at impression time). Held-out set:
the last 10% of those impressions by impression time. Each (row, seed) is saved to the JSON as it finishes,
so an interrupted run resumes.

    python -m streamrank.bench.delayed_feedback --dataset ml-1m --ratings 250000 --seeds 0,1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamrank.bench.online_decomposition import parse, read_cache_bytes, write_cache
from streamrank.bench.trainbench_common import DOCS, machine
from streamrank.config import Settings, load_settings
from streamrank.train.learner import OnlineLearner
from streamrank.train.metrics import auc, log_loss
from streamrank.v1 import features_pb2

MODES = ("window", "fnw", "fnc", "none")
DESCRIPTIONS = {
    "window": "window policy: learns each impression when its 1 h window closes",
    "fnw": "fake_negative + FNW (importance weights 1+p / (1-p)(1+p))",
    "fnc": "fake_negative + FNC (plain log loss, p = b/(1-b))",
    "none": "fake_negative, no correction",
}


def run_mode(settings: Settings, preset: str, stream: list[features_pb2.TrainingSample], mode: str,
             seed: int) -> dict[str, Any]:
    """One pass of a learner over the stream; its final-label predictions by sample id."""
    s = dataclasses.replace(settings, train_fake_negative=mode)
    learner = OnlineLearner(s, preset, seed=seed)
    ids: list[str] = []
    stamps: list[int] = []
    ys: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    t0 = time.perf_counter()
    size = s.train_batch_size
    for start in range(0, len(stream), size):
        report = learner.learn(stream[start:start + size])
        if report.predictions is not None:
            i, t, y, p = report.predictions
            ids += i  # scored rows are keyed by sample id (a positive emission is never scored)
            stamps += t
            ys.append(y)
            ps.append(p)
        if start // size % 200 == 0:
            print(f"  {mode} seed {seed}: {start + size:,}/{len(stream):,} emissions", flush=True)
    learner.drain()
    return {"ids": ids, "stamps": np.array(stamps), "labels": np.concatenate(ys), "probs": np.concatenate(ps),
            "learned": learner.learned, "seconds": time.perf_counter() - t0, "pending_left": len(learner.pending)}


def paired_auc_difference(labels: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int = 300,
                          seed: int = 0) -> dict[str, float]:
    """AUC(a) - AUC(b) on the same samples, with a paired bootstrap 95% interval and two-sided p-value
    (scipy.stats.bootstrap resamples samples, keeping each sample's two predictions together)."""
    from scipy.stats import bootstrap

    def stat(y: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> float:
        return auc(pa, y) - auc(pb, y)

    res = bootstrap((labels, a, b), stat, paired=True, vectorized=False, n_resamples=resamples,
                    method="percentile", rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution
    p = 2 * min(float(np.mean(dist <= 0)), float(np.mean(dist >= 0)))
    return {"difference": stat(labels, a, b), "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "p_value": min(1.0, p)}


def evaluate(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per row: AUC / log-loss over every scored impression and over the held-out last 10%, on the ids every
    row scored; and each row's held-out AUC difference against `window`, paired."""
    common = set.intersection(*(set(r["ids"]) for r in rows.values()))
    first = next(iter(rows.values()))
    order = [i for i in first["ids"] if i in common]
    position = {i: n for n, i in enumerate(first["ids"])}
    stamps = first["stamps"][[position[i] for i in order]]
    held = stamps >= np.quantile(stamps, 0.9)
    aligned: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for mode, r in rows.items():
        where = {i: n for n, i in enumerate(r["ids"])}
        idx = [where[i] for i in order]
        aligned[mode] = (r["labels"][idx], r["probs"][idx])
    out: dict[str, Any] = {"scored": len(order), "held_out": int(held.sum())}
    labels = aligned[next(iter(aligned))][0]
    for mode, (y, p) in aligned.items():
        assert np.array_equal(y, labels), "every row is scored against the same final labels"
        out[mode] = {"auc": auc(p[held], y[held]), "logloss": log_loss(p[held], y[held]),
                     "auc_all": auc(p, y), "learned": rows[mode]["learned"], "seconds": rows[mode]["seconds"]}
        if mode != "window" and "window" in aligned:
            out[mode]["vs_window"] = paired_auc_difference(y[held], p[held], aligned["window"][1][held])
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: make (or read) the stream, run the (mode, seed) pairs not in the partial JSON, write the report."""
    parser = argparse.ArgumentParser(prog="python -m streamrank.bench.delayed_feedback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--ratings", type=int, default=250_000, help="first N ratings by time (0 = all)")
    parser.add_argument("--model", default="din")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default="", help="stream cache (default: /tmp/streamrank-fn-<dataset>-<ratings>)")
    parser.add_argument("--out", default=str(DOCS))
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= set(MODES) or "window" not in modes:
        parser.error(f"--modes: a comma-separated subset of {', '.join(MODES)} that includes window")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"delayed-feedback-{args.dataset}"
    settings = load_settings(label_policy="fake_negative", data_dir="/tmp/streamrank-delayed-feedback")
    cache = Path(args.cache or f"/tmp/streamrank-fn-{args.dataset}-{args.ratings}.samples")
    if not cache.exists():
        from streamrank.bench.throughput import movielens_samples

        print(f"making the fake_negative stream of {args.dataset} ({args.ratings or 'all'} ratings)", flush=True)
        write_cache(cache, movielens_samples(settings, args.dataset, args.ratings or None))
    stream = [parse(b) for b in read_cache_bytes(cache)]
    kinds = {k: sum(s.emission == v for s in stream) for k, v in (
        ("impression", features_pb2.EMISSION_IMPRESSION), ("positive", features_pb2.EMISSION_POSITIVE),
        ("window_closed", features_pb2.EMISSION_WINDOW_CLOSED))}
    print(f"{len(stream):,} emissions: {kinds}", flush=True)
    partial = out / f"{name}.json"
    result: dict[str, Any] = json.loads(partial.read_text()) if partial.exists() else {"seeds": {}}
    for seed in [int(x) for x in args.seeds.split(",")]:
        if str(seed) in result["seeds"]:
            continue
        rows = {mode: run_mode(settings, args.model, stream, mode, seed) for mode in modes}
        result["seeds"][str(seed)] = evaluate(rows)
        result.update({"dataset": args.dataset, "ratings": args.ratings, "model": args.model, "emissions": kinds,
                       "modes": modes, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
                       "command": "python -m streamrank.bench.delayed_feedback "
                                  + " ".join(argv if argv is not None else sys.argv[1:])})
        partial.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({m: result["seeds"][str(seed)][m]["auc"] for m in modes}), flush=True)
    summarise(result)
    partial.write_text(json.dumps(result, indent=1) + "\n")
    write_report(out / f"{name}.md", result)
    return 0


def summarise(result: dict[str, Any]) -> None:
    """Means over seeds per mode (`auc`, `logloss`, `auc_vs_window`), into result["policies"]."""
    seeds = list(result["seeds"].values())
    result["policies"] = {
        mode: {"auc": statistics.mean(s[mode]["auc"] for s in seeds),
               "logloss": statistics.mean(s[mode]["logloss"] for s in seeds),
               "auc_vs_window": statistics.mean(s[mode]["auc"] - s["window"]["auc"] for s in seeds),
               "p_vs_window": [s[mode]["vs_window"]["p_value"] for s in seeds if "vs_window" in s[mode]],
               "seeds": len(seeds)}
        for mode in result["modes"]}


def write_report(path: Path, result: dict[str, Any]) -> None:
    """The markdown table of `result` (after `summarise`)."""
    seeds = result["seeds"]
    first = next(iter(seeds.values()))
    k = result["emissions"]
    lines = [
        f"# Delayed feedback on {result['dataset']}: online AUC on final labels per label policy", "",
        f"Command: `{result['command']}` ({result['date']}, CPU, {result['machine']['cpus']} cores)", "",
        f"The {result['model'].upper()} learner over the worker's fake_negative stream of the first "
        f"{result['ratings']:,} ratings ({k['impression']:,} impressions, {k['positive']:,} positive emissions, "
        f"{k['window_closed']:,} window-closed emissions; 1 h attribution window), test-then-train with the "
        f"trainer's defaults. {first['scored']:,} impressions scored by every row against their final labels; "
        f"held-out: the last 10% by impression time ({first['held_out']:,}). Means over {len(seeds)} seed(s); "
        "the difference to `window` with a paired bootstrap 95% interval per seed (300 resamples).", "",
        "| row | held-out AUC | log-loss | AUC - window | 95% interval (seed 0) | p (per seed) | learned |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for mode, row in result["policies"].items():
        s0 = first[mode]
        vs = s0.get("vs_window")
        interval = f"[{vs['ci_low']:+.4f}, {vs['ci_high']:+.4f}]" if vs else ""
        ps = ", ".join(f"{p:.3f}" for p in row["p_vs_window"])
        lines.append(f"| {DESCRIPTIONS[mode]} | {row['auc']:.4f} | {row['logloss']:.4f} | "
                     f"{row['auc_vs_window']:+.4f} | {interval} | {ps} | {s0['learned']:,} |")
    lines.append("")
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
