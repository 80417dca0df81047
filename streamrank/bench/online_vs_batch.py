"""The Monolith experiment: the online model against a batch model retrained on a schedule, slice by slice.

A MovieLens stream goes through the embedded broker, `streamrank worker` and `streamrank train` (its
prediction log: every prediction made before learning). Event time from the median impression on is cut
into consecutive slices: weeks, a sparse week merged with the next ones until a slice holds at least
`--min-slice` of the second half's samples (ML-1M's log thins out after its first months). On each slice:
  online     the trainer's prequential predictions (made before it learned each sample);
  retrained  a batch model fitted from scratch at the slice's start on every sample before it, then frozen
             for the slice (a nightly retrain, with its staleness);
  static     the batch model fitted once on the first half (the first retrained model), for every slice.
AUC and request AUC (session_auc over the impressions of one request) per slice, their means, and paired
t-tests across slices (scipy). Also today's last-10% protocol on the full stream: the online model's
held-out AUC against the best offline fit (early stopping) on the samples before the split.

The batch models share one tensorisation of the stream, with vocabularies grown in stream order: a model
fitted on the samples before a boundary never trains the rows of ids first seen after it, which keep their
random initialisation exactly as such ids would take the (untrained) OOV row of a vocabulary fitted on those
samples. Every stage is saved in `--work`, so an interrupted run resumes.

    streamrank bench online-vs-batch --dataset ml-1m            # the full stream
    streamrank bench online-vs-batch --dataset ml-100k --quick  # a few slices (CI smoke test)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamrank.bench.movielens_cli import parse_overrides
from streamrank.bench.online_decomposition import parse, read_cache_bytes, write_cache
from streamrank.bench.online_slices import plot, report, slice_bounds, summarise
from streamrank.bench.trainbench_common import DOCS, machine
from streamrank.features.raw import RawExample
from streamrank.features.spec import FeatureSpec
from streamrank.features.tensorize import Tensorizer
from streamrank.models.factory import build_model
from streamrank.train.metrics import auc
from streamrank.train.offline import TrainConfig, fit, predict
from streamrank.train.tensor_data import TensorDataset
from streamrank.v1 import features_pb2


class StreamSource:
    """An ExampleSource over serialized TrainingSamples, parsed on demand: two million parsed samples do not
    fit in this machine's memory, their bytes do."""

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs
        labels, sessions, requests = [], [], {}
        for blob in blobs:
            s = parse(blob)
            labels.append(float(s.labels.click))
            sessions.append(requests.setdefault(s.request_id, len(requests)))
        self.labels = np.array(labels, dtype=np.float32)
        self.sessions = np.array(sessions)

    def __len__(self) -> int:
        return len(self.blobs)

    def samples(self, start: int, stop: int) -> list[features_pb2.TrainingSample]:
        """The parsed samples start..stop."""
        return [parse(b) for b in self.blobs[start:stop]]

    def examples(self, idx: Any) -> list[RawExample]:
        """RawExamples of the samples at idx."""
        return [RawExample.from_sample(parse(self.blobs[int(i)])) for i in idx]


class Rows:
    """Rows of a TensorDataset, as a TensorisedSource of their own (no copy)."""

    def __init__(self, data: TensorDataset, rows: np.ndarray) -> None:
        self.data, self.rows = data, rows
        self.labels = np.asarray(data.labels)[rows]
        self.sessions = None if data.sessions is None else data.sessions[rows]

    def __len__(self) -> int:
        return len(self.rows)

    def examples(self, idx: Any) -> list[RawExample]:
        """The underlying examples."""
        return self.data.examples(self.rows[np.asarray(idx)])

    def batch(self, idx: Any, device: torch.device | str = "cpu") -> Any:
        """Tensors of the selected rows."""
        return self.data.batch(self.rows[np.asarray(idx)], device)

    def keys(self, idx: Any, device: torch.device | str = "cpu") -> torch.Tensor:
        """User keys of the selected rows."""
        return self.data.keys(self.rows[np.asarray(idx)], device)


def fit_batch_model(preset: str, spec: FeatureSpec, tz: Tensorizer, train: Rows, cfg: TrainConfig,
                    valid: Rows | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A fresh model fitted on `train` (early stopping on `valid` when given)."""
    torch.manual_seed(cfg.seed)
    model = build_model(preset, spec)
    result = fit(model, tz, train, valid, cfg)
    return model, {"train_examples": len(train), "best_epoch": result.best_epoch,
                   "epochs_run": len(result.history), "seconds": result.seconds}


def run_stream(args: argparse.Namespace, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Stage 1 (once): the stream through broker, worker and trainer; keeps the prediction log and samples."""
    done = work / "pipeline.json"
    if done.exists():
        return json.loads(done.read_text())
    from tempfile import TemporaryDirectory

    from streamrank.bench.online import read_sample_bytes, run_pipeline
    from streamrank.broker import EmbeddedBroker
    from streamrank.config import load_settings
    from streamrank.train.online import trainer_dir

    log_file = work / "predictions.tsv"
    log_file.unlink(missing_ok=True)
    with TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        settings = load_settings(bootstrap_servers=broker.bootstrap_servers, data_dir=str(Path(tmp) / "data"),
                                 prediction_log=str(log_file), checkpoint_every_s=15.0, publish_every_s=30.0,
                                 **overrides)
        timings = run_pipeline(settings, args.dataset, args.ratings or None, args.model, Path(tmp),
                               idle_exit_s=20.0 if args.quick else 45.0)
        write_cache(work / "samples.bin", read_sample_bytes(settings))
        status = json.loads((trainer_dir(settings, args.model) / "status.json").read_text())
        timings["trainer"] = {k: status[k] for k in ("publications", "blocked")}
    timings["settings"] = {k: getattr(settings, k) for k in (
        "train_batch_size", "train_lr", "train_row_optimizer", "train_row_lr", "train_weight_decay",
        "train_passes", "train_replay_buffer", "train_replay_ratio", "train_replay_max_lag", "train_shuffle_pool")}
    done.write_text(json.dumps(timings, indent=1) + "\n")
    return timings


def stream_order(work: Path) -> tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray]:
    """The serialized samples in the order the trainer learned them, with its prequential labels and
    predictions."""
    from streamrank.bench.online import read_prediction_log

    ts, ys, ps, ids = read_prediction_log(work / "predictions.tsv")
    blobs = read_cache_bytes(work / "samples.bin")
    by_id = {parse(b).sample_id: k for k, b in enumerate(blobs)}
    first: dict[str, int] = {}
    for k, i in enumerate(ids):
        first.setdefault(i, k)
    keep = np.array(sorted(k for i, k in first.items() if i in by_id))
    if len(keep) < len(by_id):
        raise RuntimeError(f"the trainer learned {len(keep):,} of the {len(by_id):,} samples (it stopped early; see "
                           f"the logs), so the comparison would not be on the whole stream: remove {work}, rerun")
    return [blobs[by_id[ids[k]]] for k in keep], ts[keep], ys[keep], ps[keep]


def batch_predictions(args: argparse.Namespace, work: Path, samples: list[bytes],
                      stamps: np.ndarray, bounds: list[tuple[int, int]], cfg: TrainConfig) -> dict[str, Any]:
    """Stage 2 (resumable): the retrained model of every slice, the static model, the offline best."""
    source = StreamSource(samples)
    spec = FeatureSpec()
    tz = Tensorizer(spec)
    for start in range(0, len(samples), 16_384):  # vocabularies in stream order (see the module docstring)
        tz.encode_samples(source.samples(start, start + 16_384), grow=True)
    print(f"tensorising {len(samples):,} samples", flush=True)
    data = TensorDataset.build(source, tz, progress=True)
    out: dict[str, Any] = {"retrained": [], "fits": {}}
    second = np.flatnonzero(stamps >= bounds[0][0])
    for k, (lo, hi) in enumerate(bounds):
        path = work / f"retrained-{k}.npz"
        if not path.exists():
            rows = np.flatnonzero((stamps >= lo) & (stamps < hi))
            model, info = fit_batch_model(args.model, spec, tz, Rows(data, np.flatnonzero(stamps < lo)), cfg)
            probs = predict(model, tz, Rows(data, rows))
            extra = {"static": predict(model, tz, Rows(data, second))} if k == 0 else {}
            np.savez(path, probs=probs, info=json.dumps(info), **extra)
            print(f"slice {k + 1}/{len(bounds)}: retrained on {info['train_examples']:,} samples "
                  f"in {info['seconds']:.0f}s", flush=True)
        saved = np.load(path)
        out["retrained"].append(saved["probs"])
        out["fits"][f"retrained-{k}"] = json.loads(str(saved["info"]))
        if k == 0:
            out["static"] = saved["static"]
    path = work / "offline-best.npz"
    split = int(np.quantile(stamps, 0.9))
    test = np.flatnonzero(stamps >= split)
    if not path.exists():
        train = np.flatnonzero(stamps < split)
        n_valid = max(1, len(train) // 10)
        best_cfg = TrainConfig(**{**cfg.to_dict(), "max_epochs": args.best_epochs, "patience": 2})
        model, info = fit_batch_model(args.model, spec, tz, Rows(data, train[:-n_valid]), best_cfg,
                                      Rows(data, train[-n_valid:]))
        np.savez(path, probs=predict(model, tz, Rows(data, test)), info=json.dumps(info))
    saved = np.load(path)
    out["offline_best"] = {"probs": saved["probs"], "test": test, **json.loads(str(saved["info"]))}
    out["sessions"] = source.sessions
    return out


def decomposition(dataset: str, model: str, docs: Path) -> dict[str, Any] | None:
    """The decomposition bench's rows for this stream, when it has been run (docs/benchmarks)."""
    path = docs / f"online-decomposition-{dataset}-{model}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    """CLI: stream stage, batch stage, report (each resumable from --work)."""
    parser = argparse.ArgumentParser(prog="streamrank bench online-vs-batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--ratings", type=int, default=0, help="first N ratings by time (0 = all)")
    parser.add_argument("--model", default="din")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: the first 20,000 ML-100K ratings, 3 slices, 1-epoch fits")
    parser.add_argument("--min-slice", type=float, default=0.04,
                        help="least share of the second half's samples in one slice (sparse weeks merge)")
    parser.add_argument("--max-slices", type=int, default=0, help="compare on the first N slices only (0 = all)")
    parser.add_argument("--retrain-epochs", type=int, default=1, help="epochs of each scheduled retrain")
    parser.add_argument("--best-epochs", type=int, default=8, help="most epochs of the offline best fit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a trainer setting (e.g. train_replay_buffer=100000); repeatable")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="", help="stage files (default: /tmp/streamrank-online-vs-batch-<run>)")
    parser.add_argument("--out", default=str(DOCS))
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.ratings = "ml-100k", args.ratings or 20_000
        args.max_slices, args.retrain_epochs, args.best_epochs = args.max_slices or 3, 1, 2
        args.min_slice = 0.2
    torch.set_num_threads(args.threads)
    # The whole stream is published before the trainer starts (a backlog): replay regardless of lag, the
    # protocol the figures in docs/online-training.md were measured with.
    overrides = {"train_replay_max_lag": -1, **parse_overrides(args.set)}
    name = f"online-vs-batch-{args.dataset}" + ("-quick" if args.quick else "")
    work = Path(args.work or f"/tmp/streamrank-{name}-{args.model}-{args.ratings}")
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timings = run_stream(args, work, overrides)
    samples, stamps, ys, ps = stream_order(work)
    bounds = slice_bounds(stamps, args.min_slice)
    if args.max_slices:
        bounds = bounds[: args.max_slices]
    print(f"{len(samples):,} samples; {len(bounds)} slices from {bounds[0][0]} ms", flush=True)
    s = timings["settings"]
    cfg = TrainConfig(lr=s["train_lr"], weight_decay=s["train_weight_decay"], batch_size=s["train_batch_size"],
                      max_epochs=args.retrain_epochs, patience=2, valid_metric="auc", progress=True,
                      row_optimizer=s["train_row_optimizer"], row_lr=s["train_row_lr"] or None)
    batch = batch_predictions(args, work, samples, stamps, bounds, cfg)
    result = summarise(stamps, ys, ps, bounds, batch)
    result["decomposition"] = decomposition(args.dataset, args.model, DOCS)
    result.update({"dataset": args.dataset, "ratings": args.ratings, "model": args.model, "pipeline": timings,
                   "retrain_epochs": args.retrain_epochs, "min_slice": args.min_slice,
                   "analysis_s": time.monotonic() - t0, "machine": machine() | {"threads": args.threads},
                   "command": "streamrank bench online-vs-batch "
                              + " ".join(argv if argv is not None else sys.argv[1:]),
                   "date": time.strftime("%Y-%m-%d")})
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    replayed = f"first {args.ratings:,} ratings" if args.ratings else "all ratings"
    plot(result["slices"], f"{args.model} on {args.dataset} ({replayed}): AUC per slice", out / f"{name}.png")
    lines = [f"# Online against batch on {args.dataset} ({args.model}), slice by slice", "",
             f"Command: `{result['command']}` ({result['date']})  ",
             f"{timings['events']:,} events through the embedded broker, the worker and `streamrank train` "
             f"({replayed}; pipeline {timings['total_s']:.0f}s); {len(samples):,} samples learned, "
             f"{result['second_half_samples']:,} from the median impression on, cut into {len(bounds)} slices "
             f"(weeks of event time, merged until one holds {args.min_slice:.0%} of those samples). "
             f"Trainer settings: {json.dumps(s)}. Retrains: {args.retrain_epochs} epoch(s) from scratch on "
             "every sample before the slice.", "",
             f"![AUC per slice]({name}.png)", "", *report(result), ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if not args.quick:
        write_last10_report(out, result, ys, ps)
    return 0


def write_last10_report(out: Path, result: dict[str, Any], ys: np.ndarray, ps: np.ndarray) -> None:
    """The `bench online` report (online-<dataset>-<model>) from this run's last-10% protocol."""
    from streamrank.bench.online import write_report

    fit = result["offline_best_fit"]
    pipe = result["pipeline"]
    curve = [{"samples": float(min(i + 20_000, len(ps))), "auc": auc(ps[i:i + 20_000], ys[i:i + 20_000])}
             for i in range(0, len(ps), 20_000)]
    write_report(out, f"online-{result['dataset']}-{result['model']}", {
        "dataset": result["dataset"], "ratings": result["ratings"], "model": result["model"],
        "timings": {k: pipe[k] for k in ("events", "worker_s", "total_s")},
        "online": {"auc": result["online_last10_auc"], "logloss": result["online_last10_logloss"],
                   "test_examples": result["last10_examples"], "samples_learned": result["samples"]},
        "offline": {"auc": result["offline_best_auc"], "logloss": result["offline_best_logloss"],
                    "train_examples": fit["train_examples"], "test_examples": result["last10_examples"],
                    "best_epoch": fit["best_epoch"], "epochs_run": fit["epochs_run"], "seconds": fit["seconds"]},
        "curve": curve, "settings": pipe["settings"],
        "command": result["command"] + " (its last-10% part)", "date": result["date"]})


if __name__ == "__main__":
    sys.exit(main())
