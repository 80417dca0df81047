"""Where the online model loses AUC to a batch model: one row per suspected cause, on the same samples.

The samples are a MovieLens request stream made by the worker's processor in-process (the order the worker
emits them), cached in a file so that every row, and a resumed run, sees the same bytes. The held-out set is
the last 10% by impression time, as in `bench online`. Rows:
  offline  the preset fitted on the samples before the split (`fit`, the same optimizer as the online
           trainer): one epoch in stream order, one epoch shuffled, and the best of up to `--max-epochs`
           with early stopping on the last 10% of the training part (patience 2);
  online   `OnlineLearner` over the whole stream in order, test-then-train, its predictions on the
           held-out set; first with the defaults, then with one setting changed per row (a cause removed,
           or a remedy added).
Each finished row is saved in the JSON at once, so an interrupted run resumes where it stopped.

    python -m streamrank.bench.online_decomposition --dataset ml-1m --ratings 250000 --model din
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch

from streamrank.bench.trainbench_common import DOCS, machine
from streamrank.config import Settings, load_settings
from streamrank.features.raw import RawExample
from streamrank.features.spec import FeatureSpec
from streamrank.features.tensorize import Tensorizer
from streamrank.models.factory import build_model
from streamrank.train.learner import OnlineLearner
from streamrank.train.metrics import auc, log_loss
from streamrank.train.offline import ListSource, TrainConfig, fit, predict
from streamrank.train.tensor_data import TensorDataset
from streamrank.v1 import features_pb2

YEAR_MS = 365 * 24 * 3600 * 1000
# The online rows change one thing each from this configuration (the trainer's defaults before issue 16), so
# that the table keeps its meaning when the defaults move; "online_tuned" is today's defaults (a test holds it).
BASE: dict[str, Any] = {"train_batch_size": 1024, "train_lr": 1e-3, "train_weight_decay": 1e-2,
                        "train_row_optimizer": "adagrad", "train_row_lr": 0.2, "train_passes": 1,
                        "train_replay_buffer": 0, "train_replay_ratio": 1.0, "train_shuffle_pool": 0,
                        "train_replay_mixed": False}
# Today's defaults as overrides of BASE (replay and learning rates); the rows named "online_tuned*" are on
# them (tests/test_replay.py holds TUNED equal to Settings()).
TUNED: dict[str, Any] = {"train_replay_buffer": 100_000, "train_replay_ratio": 2.0, "train_lr": 3e-3,
                         "train_row_lr": 0.4}
# (key, what the row changes, settings overrides); "order" is not a setting: the stream is shuffled in blocks.
ONLINE_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("online", "online as before issue 16 (the base of the rows below)", {}),
    ("online_adam_tables", "tables on lazy Adam at the dense lr (the optimizer family before issue 15)",
     {"train_row_optimizer": "adam", "train_row_lr": 0.0}),
    ("online_no_decay", "no weight decay", {"train_weight_decay": 0.0}),
    ("online_no_expiry", "no vocabulary expiry", {"vocab_ttl_ms": 10 * YEAR_MS}),
    ("online_lr_x3", "dense learning rate x3 (3e-3)", {"train_lr": 3e-3}),
    ("online_row_lr_half", "table learning rate / 2 (0.1)", {"train_row_lr": 0.1}),
    ("online_row_lr_x2", "table learning rate x 2 (0.4)", {"train_row_lr": 0.4}),
    ("online_batch_256", "micro-batch 256", {"train_batch_size": 256}),
    ("online_block_shuffled", "stream shuffled within blocks of 20,000 samples (a user's session spread out; "
     "look-ahead: a sample may be predicted after later ones of its block were learned)",
     {"order": "block_shuffle"}),
    ("online_passes_2", "remedy: 2 passes over each micro-batch", {"train_passes": 2}),
    ("online_replay_1", "remedy: replay 1:1 from the last 100,000 samples",
     {"train_replay_buffer": 100_000, "train_replay_ratio": 1.0}),
    ("online_replay_2", "remedy: replay 2:1 from the last 100,000 samples",
     {"train_replay_buffer": 100_000, "train_replay_ratio": 2.0}),
    ("online_replay_4", "remedy: replay 4:1 from the last 100,000 samples",
     {"train_replay_buffer": 100_000, "train_replay_ratio": 4.0}),
    ("online_replay_4_all", "remedy: replay 4:1 from every sample learned so far",
     {"train_replay_buffer": 1_000_000, "train_replay_ratio": 4.0}),
    ("online_tuned", "the defaults: replay 2:1 from the last 100,000, dense lr 3e-3, table lr 0.4", TUNED),
    ("online_tuned_no_replay", "dense lr 3e-3 and table lr 0.4 without replay",
     {"train_lr": 3e-3, "train_row_lr": 0.4}),
    ("online_lr_1e-2_row_0.4", "dense lr 1e-2 and table lr 0.4 without replay",
     {"train_lr": 1e-2, "train_row_lr": 0.4}),
    ("online_lr_3e-3_row_0.8", "dense lr 3e-3 and table lr 0.8 without replay",
     {"train_lr": 3e-3, "train_row_lr": 0.8}),
    # what is left of the gap at the defaults: order and passes, each on top of them
    ("online_tuned_block_shuffled", "the defaults on the stream shuffled within blocks of 20,000 samples "
     "(look-ahead, as above)",
     TUNED | {"order": "block_shuffle"}),
    ("online_tuned_passes_2", "the defaults with 2 passes over each fresh micro-batch", TUNED | {"train_passes": 2}),
    # the deployable form of a shuffled order: predicted on arrival, learned later in random order
    ("online_tuned_pool_5k", "the defaults with a shuffle pool of 5,000 samples (`train_shuffle_pool`: learned in "
     "random order, predicted on arrival)", TUNED | {"train_shuffle_pool": 5_000}),
    ("online_tuned_pool_20k", "the defaults with a shuffle pool of 20,000 samples",
     TUNED | {"train_shuffle_pool": 20_000}),
    ("online_tuned_pool_1k", "the defaults with a shuffle pool of 1,000 samples",
     TUNED | {"train_shuffle_pool": 1_000}),
    # more looks at older samples: what a one-pass learner can have of the offline model's epochs
    ("online_tuned_replay_4", "the defaults with replay 4:1", TUNED | {"train_replay_ratio": 4.0}),
    ("online_tuned_replay_all", "the defaults with replay from the last 1,000,000 samples",
     TUNED | {"train_replay_buffer": 1_000_000}),
    ("online_tuned_replay_1", "the defaults with replay 1:1", TUNED | {"train_replay_ratio": 1.0}),
    ("online_tuned_lr_half", "the defaults with both learning rates halved (dense 1.5e-3, tables 0.2)",
     TUNED | {"train_lr": 1.5e-3, "train_row_lr": 0.2}),
    ("online_tuned_replay_mixed", "the defaults with the replayed samples in the fresh batch's step "
     "(`train_replay_mixed`: one step on both)", TUNED | {"train_replay_mixed": True}),
]
DEFAULT_RATINGS = 250_000
OFFLINE_ROWS = [("offline_stream_order", "offline, 1 epoch in stream order"),
                ("offline_shuffled", "offline, 1 epoch shuffled"),
                ("offline_best", "offline, best epoch (early stopping)")]


def write_cache(path: Path, samples: list[bytes]) -> None:
    """Length-prefixed serialized TrainingSamples."""
    with open(path, "wb") as fh:
        for b in samples:
            fh.write(struct.pack("<I", len(b)))
            fh.write(b)


def read_cache_bytes(path: Path) -> list[bytes]:
    """Inverse of `write_cache`: the serialized samples (a parsed sample takes several times its bytes)."""
    out: list[bytes] = []
    with open(path, "rb") as fh:
        while head := fh.read(4):
            (n,) = struct.unpack("<I", head)
            out.append(fh.read(n))
    return out


def parse(blob: bytes) -> features_pb2.TrainingSample:
    """One serialized TrainingSample."""
    s = features_pb2.TrainingSample()
    s.ParseFromString(blob)
    return s


def stream_blobs(settings: Settings, dataset: str, ratings: int | None, cache: Path) -> list[bytes]:
    """The request stream's samples in worker order, serialized, made once and cached. They stay serialized
    in memory and are parsed a micro-batch at a time: the full ML-1M stream (2M samples, 3.9 GB serialized)
    takes more than the 24 GB of this machine once parsed."""
    if not cache.exists():
        from streamrank.bench.throughput import movielens_samples

        print(f"making the samples of {dataset} ({ratings or 'all'} ratings) in-process", flush=True)
        write_cache(cache, movielens_samples(settings, dataset, ratings))
    return read_cache_bytes(cache)


def online_row(settings: Settings, preset: str, samples: list[bytes], test: set[str],
               overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """One pass of OnlineLearner over the stream; AUC of its predictions on the held-out ids."""
    overrides = dict(overrides)
    order = overrides.pop("order", None)
    s = dataclasses.replace(settings, **(BASE | overrides))
    s.validate()
    stream = samples
    if order == "block_shuffle":
        rng = np.random.default_rng(seed)
        idx = np.concatenate([rng.permutation(np.arange(b, min(b + 20_000, len(samples))))
                              for b in range(0, len(samples), 20_000)])
        stream = [samples[int(i)] for i in idx]
    learner = OnlineLearner(s, preset, seed=seed)
    ys, ps, all_y, all_p = [], [], [], []
    t0 = time.perf_counter()
    for ids, labels, probs in _prequential(learner, stream, s.train_batch_size):
        all_y.append(labels)
        all_p.append(probs)
        keep = np.array([i in test for i in ids])
        ys.append(labels[keep])
        ps.append(probs[keep])
    y, p = np.concatenate(ys), np.concatenate(ps)
    ay, ap = np.concatenate(all_y), np.concatenate(all_p)
    return {"auc": auc(p, y), "logloss": log_loss(p, y), "prequential_auc_all": auc(ap, ay),
            "test_examples": len(y), "seconds": time.perf_counter() - t0, "replayed": learner.replayed,
            "settings": {k: getattr(s, k) for k in BASE} | ({"order": order} if order else {})}


def _prequential(learner: OnlineLearner, stream: list[bytes], size: int
                 ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """(ids, labels, predictions) of each micro-batch, predicted by the learner just before it learns it (with
    a shuffle pool: on arrival; what the pool holds at the end is learned out)."""
    for start in range(0, len(stream), size):
        report = learner.learn([parse(b) for b in stream[start:start + size]])
        assert report.predictions is not None
        ids, _, labels, probs = report.predictions
        yield ids, labels, probs
    learner.drain()


def offline_rows(settings: Settings, preset: str, samples: list[features_pb2.TrainingSample], split_ts: int,
                 max_epochs: int, seed: int, todo: list[str], save: Any) -> None:
    """The offline rows named in `todo`, each saved as it finishes."""
    train = [RawExample.from_sample(s) for s in samples if s.impression_ts_ms < split_ts]  # stream order
    test = [RawExample.from_sample(s) for s in samples if s.impression_ts_ms >= split_ts]
    spec = FeatureSpec().fit(train)
    tz = Tensorizer(spec)
    print(f"tensorising {len(train):,} training and {len(test):,} held-out samples", flush=True)
    train_ds = TensorDataset.build(ListSource(train), tz, progress=True)
    test_ds = TensorDataset.build(ListSource(test), tz, progress=True)
    n_valid = max(1, len(train) // 10)
    fit_ds = train_ds.subset(np.arange(len(train) - n_valid))
    valid_ds = train_ds.subset(np.arange(len(train) - n_valid, len(train)))
    plans = {"offline_stream_order": (train_ds, None, 1, False), "offline_shuffled": (train_ds, None, 1, True),
             "offline_best": (fit_ds, valid_ds, max_epochs, True)}
    for key in todo:
        part, valid, epochs, shuffle = plans[key]
        torch.manual_seed(seed)
        model = build_model(preset, spec)
        cfg = TrainConfig(lr=settings.train_lr, weight_decay=settings.train_weight_decay,
                          batch_size=settings.train_batch_size, max_epochs=epochs, patience=2, seed=seed,
                          valid_metric="auc", shuffle=shuffle, progress=True,
                          row_optimizer=settings.train_row_optimizer,  # type: ignore[arg-type]
                          row_lr=settings.train_row_lr or None)
        result = fit(model, tz, part, valid, cfg)
        probs = predict(model, tz, test_ds)
        labels = np.asarray(test_ds.labels, dtype=np.float32)
        save(key, {"auc": auc(probs, labels), "logloss": log_loss(probs, labels), "train_examples": len(part),
                   "best_epoch": result.best_epoch, "epochs_run": len(result.history), "seconds": result.seconds,
                   "test_examples": len(test)})


def report(result: dict[str, Any]) -> list[str]:
    """The markdown table of the decomposition."""
    rows = result["rows"]
    base_key = next((k for k in ("online", "online_tuned") if k in rows), "online")  # a partial run's base
    base = rows.get(base_key, {}).get("auc", float("nan"))
    best = rows.get("offline_best", {}).get("auc", float("nan"))
    lines = [f"| row | what it changes | held-out AUC | vs {base_key} | vs offline best | log-loss | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for key, what in [(k, w) for k, w in OFFLINE_ROWS] + [(k, w) for k, w, _ in ONLINE_ROWS]:
        r = rows.get(key)
        if r is None:
            lines.append(f"| {key} | {what} | not run | | | | |")
            continue
        extra = f" (best epoch {r['best_epoch'] + 1} of {r['epochs_run']})" if "best_epoch" in r else ""
        lines.append(f"| {key} | {what}{extra} | {r['auc']:.4f} | {r['auc'] - base:+.4f} | {r['auc'] - best:+.4f} | "
                     f"{r['logloss']:.4f} | {r['seconds']:.0f} |")
    lines.append("| guardrail | the guardrail | = online | 0 by construction | | | |")
    return lines


def ratings_suffix(ratings: int) -> str:
    """The file-name suffix of a run on other than the default prefix: "" (250k), "-all" (0), "-<n>"."""
    if ratings == DEFAULT_RATINGS:
        return ""
    return "-all" if ratings == 0 else f"-{ratings}"


def main(argv: list[str] | None = None) -> int:
    """CLI: run the rows not yet in the partial JSON, then write the report."""
    parser = argparse.ArgumentParser(prog="python -m streamrank.bench.online_decomposition", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--ratings", type=int, default=DEFAULT_RATINGS,
                        help="first N ratings by time (0 = all; other than the default, the files are named by it)")
    parser.add_argument("--model", default="din")
    parser.add_argument("--max-epochs", type=int, default=8, help="offline best: most epochs")
    parser.add_argument("--rows", default="", help="comma-separated row keys to run (default: all)")
    parser.add_argument("--rerun", action="store_true", help="run the --rows again even where the JSON has them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default="",
                        help="sample cache file (default: /tmp/streamrank-<dataset>-<ratings>.samples)")
    parser.add_argument("--out", default=str(DOCS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"online-decomposition-{args.dataset}-{args.model}{ratings_suffix(args.ratings)}"
    cache = Path(args.cache or f"/tmp/streamrank-{args.dataset}-{args.ratings}.samples")
    partial = out / f"{name}.json"  # rewritten after every row: a rerun resumes from it
    result: dict[str, Any] = json.loads(partial.read_text()) if partial.exists() else {"rows": {}}
    if result.get("ratings", args.ratings) != args.ratings:  # rows of other samples must not be mixed in
        parser.error(f"{partial} holds rows of --ratings {result['ratings']}, not {args.ratings}: use another --out")
    known = {k for k, _ in OFFLINE_ROWS} | {k for k, _, _ in ONLINE_ROWS}
    wanted = set(filter(None, args.rows.split(","))) or known
    if unknown := wanted - known:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    # rows no longer defined are dropped; rows to rerun are run again
    result["rows"] = {k: v for k, v in result["rows"].items() if k in known and not (args.rerun and k in wanted)}
    todo = [k for k, _ in OFFLINE_ROWS if k in wanted and k not in result["rows"]]
    online_todo = [(k, o) for k, _, o in ONLINE_ROWS if k in wanted and k not in result["rows"]]

    def save(key: str, row: dict[str, Any]) -> None:
        result["rows"][key] = row
        partial.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{key}: held-out AUC {row['auc']:.4f} ({row['seconds']:.0f}s)", flush=True)

    settings = load_settings()
    if todo or online_todo or "samples" not in result:
        with TemporaryDirectory() as tmp:
            blobs = stream_blobs(load_settings(data_dir=tmp), args.dataset, args.ratings or None, cache)
        heads = [(s.impression_ts_ms, s.sample_id) for s in map(parse, blobs)]
        stamps = np.array([ts for ts, _ in heads])
        split_ts = int(np.quantile(stamps, 0.9))
        test = {sid for ts, sid in heads if ts >= split_ts}
        del heads
        result.update({"samples": len(blobs), "test_examples": len(test), "split_ts": split_ts})
        if todo:  # the offline fits want every sample parsed at once
            offline_rows(settings, args.model, [parse(b) for b in blobs], split_ts, args.max_epochs, args.seed,
                         todo, save)
        for key, overrides in online_todo:
            save(key, online_row(settings, args.model, blobs, test, overrides, args.seed))
    command = (f"python -m streamrank.bench.online_decomposition --dataset {args.dataset} --ratings {args.ratings} "
               f"--model {args.model} --max-epochs {args.max_epochs} --seed {args.seed}")
    result.update({"dataset": args.dataset, "ratings": args.ratings, "model": args.model, "base": BASE,
                   "machine": machine() | {"threads": args.threads}, "command": command,
                   "date": time.strftime("%Y-%m-%d")})
    partial.write_text(json.dumps(result, indent=1) + "\n")
    prefix = f"first {args.ratings:,} ratings" if args.ratings else "all ratings"
    lines = [f"# Online against offline on {args.dataset} ({args.model}): the gap, cause by cause", "",
             f"Command: `{result['command']}` ({result['date']})  ",
             f"{result['samples']:,} samples ({prefix}), held-out: the last 10% by impression "
             f"time ({result['test_examples']:,}). Every online row is the base configuration {json.dumps(BASE)} "
             "(the trainer's defaults before this benchmark) with the one change it names; rows can be run in "
             "parts (`--rows a,b`), each saved in the JSON as it finishes.", "", *report(result), ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
