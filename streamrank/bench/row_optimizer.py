"""Which optimizer for the embedding tables? Prequential AUC of the online learner over a whole MovieLens
request stream, per model and row-wise optimizer (kind, learning rate); the dense layers keep AdamW at
settings.train_lr throughout.

The samples come from the worker's own processor in-process (as in `bench train`); each configuration
learns the whole stream once, test-then-train, in micro-batches of settings.train_batch_size, and is scored
on its predictions before learning: over the whole stream, its second half and its last 10%.

    python -m streamrank.bench.row_optimizer                       # ML-100K, DNN / DIN / AW-MoE
    python -m streamrank.bench.row_optimizer --models din --grid adagrad:0.2,adam:0.01
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

from streamrank.bench.throughput import movielens_samples
from streamrank.bench.trainbench_common import DOCS, machine
from streamrank.config import load_settings
from streamrank.models.ranking.config import DISPLAY_NAMES
from streamrank.train.metrics import auc
from streamrank.v1 import features_pb2

GRID = "adam:0.001,adam:0.01,adagrad:0.05,adagrad:0.2,adagrad:0.5"


def parse_grid(text: str) -> list[tuple[str, float]]:
    """'kind:lr,kind:lr' -> [(kind, lr)]; ValueError on anything else."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kind, _, lr = part.partition(":")
        if kind not in ("adam", "adagrad") or not lr:
            raise ValueError(f"grid entries are adam:LR or adagrad:LR, not {part!r}")
        if float(lr) <= 0:
            raise ValueError(f"learning rate must be > 0 in {part!r}")
        out.append((kind, float(lr)))
    if not out:
        raise ValueError("the grid is empty")
    return out


def prequential(raw: list[bytes], preset: str, kind: str, lr: float, data_dir: str) -> dict[str, float]:
    """One configuration over the whole stream: AUC of its predictions before learning, and seconds."""
    from streamrank.train.learner import OnlineLearner

    settings = load_settings(data_dir=data_dir, train_row_optimizer=kind, train_row_lr=lr)
    learner = OnlineLearner(settings, preset)
    size = settings.train_batch_size
    probs, labels = [], []
    t0 = time.perf_counter()
    for start in range(0, len(raw), size):
        batch = []
        for value in raw[start:start + size]:
            sample = features_pb2.TrainingSample()
            sample.ParseFromString(value)
            batch.append(sample)
        report = learner.learn(batch)
        assert report.predictions is not None
        labels.append(report.predictions[2])
        probs.append(report.predictions[3])
    p, y = np.concatenate(probs), np.concatenate(labels)
    n = len(p)
    return {"auc": auc(y, p), "second_half_auc": auc(y[n // 2:], p[n // 2:]),
            "last10_auc": auc(y[-n // 10:], p[-n // 10:]), "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    """CLI of the benchmark; writes docs/benchmarks/row-optimizer.{md,json}."""
    parser = argparse.ArgumentParser(prog="python -m streamrank.bench.row_optimizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--ratings", type=int, help="ratings replayed (default: all)")
    parser.add_argument("--models", default="dnn,din,aw_moe")
    parser.add_argument("--grid", default=GRID, help="row optimizers as kind:lr, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DOCS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    try:
        grid = parse_grid(args.grid)
    except ValueError as exc:
        parser.error(str(exc))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in DISPLAY_NAMES]
    if unknown or not models:
        parser.error(f"unknown ranking presets {unknown}; known: {', '.join(DISPLAY_NAMES)}")
    torch.set_num_threads(args.threads)
    rows = []
    with TemporaryDirectory() as tmp:
        raw = movielens_samples(load_settings(data_dir=tmp), args.dataset, args.ratings)
        print(f"{len(raw):,} samples of {args.dataset}", flush=True)
        for model in models:
            for kind, lr in grid:
                r = {"model": model, "row_optimizer": kind, "row_lr": lr,
                     **prequential(raw, model, kind, lr, str(Path(tmp) / f"{model}-{kind}-{lr}"))}
                rows.append(r)
                print(f"{model} {kind} lr {lr}: AUC {r['auc']:.4f}, second half {r['second_half_auc']:.4f}, "
                      f"last 10% {r['last10_auc']:.4f} ({r['seconds']:.0f} s)", flush=True)
    if args.no_write:
        return 0
    command = ("python -m streamrank.bench.row_optimizer " + " ".join(argv if argv is not None else sys.argv[1:]))
    result = {"dataset": args.dataset, "ratings": args.ratings, "samples": len(raw), "rows": rows,
              "threads": args.threads, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "command": command.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "row-optimizer.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Row-wise optimizer of the embedding tables: online (prequential) AUC", "",
             f"Command: `{command.strip()}`  ",
             f"Data: the {args.dataset} request stream ({len(raw):,} TrainingSamples from the worker's processor), "
             f"learned once, test-then-train; dense layers: AdamW at the default train_lr. {result['date']}, "
             f"{machine()['cpus']} CPUs.", "",
             "| model | row optimizer | row lr | AUC (whole stream) | AUC (second half) | AUC (last 10%) |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {DISPLAY_NAMES[r['model']]} | {r['row_optimizer']} | {r['row_lr']:g} | {r['auc']:.4f} | "
              f"{r['second_half_auc']:.4f} | {r['last10_auc']:.4f} |" for r in rows]
    lines += ["", "The choice and its reasons: docs/online-training.md, 'The optimizer'.", ""]
    (args.out / "row-optimizer.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'row-optimizer.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
