"""Online learning over a replayed MovieLens stream, set beside an offline model on the same held-out samples.

The whole pipeline runs as processes on the embedded broker: a MovieLens request stream is published, the
worker turns it into point-in-time samples, and `streamrank train` learns from them test-then-train,
logging every prediction it makes before learning. The held-out set is the last 10% of samples by
impression time. Two AUCs on it:
  online   the trainer's own predictions on those samples (each made before it learned from the sample),
  offline  the same preset trained offline (AdamW, early stopping on a validation tail) on the samples
           before the split, then scoring the held-out ones.
The curve of the prequential AUC (chunks of the prediction log) goes to a PNG beside the table.

    python -m streamrank.bench.online --dataset ml-1m --ratings 250000 --model din
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

from streamrank.bench.trainbench_common import finish_plot
from streamrank.broker import EmbeddedBroker
from streamrank.config import Settings, load_settings
from streamrank.data.movielens import load_movielens
from streamrank.data.requests import movielens_events, movielens_items
from streamrank.events.producer import produce_events, produce_items
from streamrank.features.raw import RawExample
from streamrank.features.spec import FeatureSpec
from streamrank.features.tensorize import Tensorizer
from streamrank.models.ranking.config import DISPLAY_NAMES, make_config
from streamrank.models.ranking.moe import RankingModel
from streamrank.pipeline import end_offsets, start_trainer, start_worker, stop_worker, wait_caught_up
from streamrank.topics import ensure_topics
from streamrank.train.metrics import auc, log_loss
from streamrank.train.offline import ListSource, TrainConfig, fit, predict
from streamrank.v1 import features_pb2

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"


def read_sample_bytes(settings: Settings) -> list[bytes]:
    """Every serialized TrainingSample in the samples topic, the first copy of each sample id, unparsed (a
    parsed sample takes several times its bytes: the full ML-1M stream would not fit in memory parsed)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic("samples")
    ends = end_offsets(settings, topic)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             max_poll_records=20_000, fetch_max_bytes=32 * 1024 * 1024)
    out: dict[str, bytes] = {}
    probe = features_pb2.TrainingSample()
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while any(consumer.position(tp) < ends[tp.partition] for tp in tps):
            for records in consumer.poll(timeout_ms=1000).values():
                for rec in records:
                    probe.ParseFromString(rec.value)
                    out.setdefault(probe.sample_id, rec.value)
    finally:
        consumer.close()
    return list(out.values())


def read_samples(settings: Settings) -> list[features_pb2.TrainingSample]:
    """Every TrainingSample in the samples topic (deduplicated by sample id)."""
    out = []
    for blob in read_sample_bytes(settings):
        s = features_pb2.TrainingSample()
        s.ParseFromString(blob)
        out.append(s)
    return out


def read_prediction_log(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(impression times, labels, probabilities, sample ids) from the trainer's prediction log, in order."""
    ids, ts, ys, ps = [], [], [], []
    with open(path) as fh:
        for line in fh:
            i, t, y, p = line.rstrip("\n").split("\t")
            ids.append(i)
            ts.append(int(t))
            ys.append(float(y))
            ps.append(float(p))
    return np.array(ts), np.array(ys, dtype=np.float32), np.array(ps, dtype=np.float32), ids


def run_pipeline(settings: Settings, dataset: str, ratings: int | None, model: str, work: Path,
                 idle_exit_s: float = 45.0) -> dict:
    """Broker-side part: publish, wait for the worker and the trainer (which exits after `idle_exit_s`
    without samples); returns timings."""
    ensure_topics(settings)
    worker = start_worker(settings, work / "worker.log")
    trainer = start_trainer(settings, model, work / "trainer.log", ["--idle-exit", str(idle_exit_s)])
    t0 = time.monotonic()
    try:
        ml = load_movielens(dataset)  # type: ignore[arg-type]
        produce_items(settings, movielens_items(ml), progress=False)
        report = produce_events(settings, movielens_events(ml, limit=ratings), progress=True)
        print(f"published {report.sent:,} events", flush=True)
        wait_caught_up(settings, end_offsets(settings, settings.topic("events")), proc=worker, timeout_s=3600,
                       progress=True)
        worker_s = time.monotonic() - t0
        print(f"worker caught up after {worker_s:.0f}s; waiting for the trainer", flush=True)
        if trainer.wait(timeout=7200) != 0:
            raise RuntimeError(f"trainer failed; see {work / 'trainer.log'}")
    finally:
        stop_worker(worker)
        if trainer.poll() is None:
            trainer.kill()
    return {"events": report.sent, "worker_s": worker_s, "total_s": time.monotonic() - t0}


def offline_baseline(samples: list[features_pb2.TrainingSample], split_ts: int, model_name: str,
                     test_ids: list[str]) -> dict:
    """Trains `model_name` offline on samples before split_ts; returns its metrics on test_ids."""
    examples = {s.sample_id: RawExample.from_sample(s) for s in samples}
    train = sorted((e for e in examples.values() if e.ts_ms < split_ts), key=lambda e: e.ts_ms)
    n_valid = max(1, len(train) // 10)
    fit_part, valid_part = train[:-n_valid], train[-n_valid:]
    test = [examples[i] for i in test_ids if i in examples]
    spec = FeatureSpec().fit(fit_part)
    model = RankingModel(spec, make_config(model_name))
    tensorizer = Tensorizer(spec)
    cfg = TrainConfig(lr=1e-3, batch_size=1024, max_epochs=4, patience=1, valid_metric="auc", progress=True)
    result = fit(model, tensorizer, ListSource(fit_part), ListSource(valid_part), cfg)
    source = ListSource(test)
    probs = predict(model, tensorizer, source)
    return {"auc": auc(probs, source.labels), "logloss": log_loss(probs, source.labels),
            "train_examples": len(fit_part), "valid_examples": len(valid_part), "test_examples": len(test),
            "best_epoch": result.best_epoch, "seconds": result.seconds}


def plot(curve: list[dict], offline_auc: float, online_auc: float, title: str, path: Path) -> None:
    """The prequential AUC curve with the offline model's held-out AUC as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([c["samples"] for c in curve], [c["auc"] for c in curve], label="online, prequential AUC per chunk")
    ax.axhline(offline_auc, color="tab:red", linestyle="--", label=f"offline model, held-out AUC {offline_auc:.4f}")
    ax.axhline(online_auc, color="tab:green", linestyle=":", label=f"online, same held-out samples {online_auc:.4f}")
    finish_plot(fig, ax, "samples learned", "AUC", title, path)


def main(argv: list[str] | None = None) -> int:
    """CLI: run the online replay and the offline baseline, write the report."""
    parser = argparse.ArgumentParser(prog="python -m streamrank.bench.online", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--ratings", type=int, default=250_000, help="ratings replayed (first N by time; 0 = all)")
    parser.add_argument("--model", default="din")
    parser.add_argument("--chunk", type=int, default=20_000, help="samples per point of the curve")
    parser.add_argument("--batch-size", type=int, default=256, help="trainer micro-batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="trainer learning rate (AdamW)")
    parser.add_argument("--out", default=str(DOCS))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        settings = load_settings(bootstrap_servers=broker.bootstrap_servers, data_dir=str(work / "data"),
                                 prediction_log=str(work / "predictions.tsv"), checkpoint_every_s=15.0,
                                 publish_every_s=30.0, train_batch_size=args.batch_size, train_lr=args.lr)
        timings = run_pipeline(settings, args.dataset, args.ratings or None, args.model, work)
        ts, ys, ps, ids = read_prediction_log(work / "predictions.tsv")
        split_ts = int(np.quantile(ts, 0.9))
        test_mask = ts >= split_ts
        online = {"auc": auc(ps[test_mask], ys[test_mask]), "logloss": log_loss(ps[test_mask], ys[test_mask]),
                  "test_examples": int(test_mask.sum()), "samples_learned": len(ts)}
        chunk = args.chunk
        curve = [{"samples": float(min(i + chunk, len(ps))), "auc": auc(ps[i:i + chunk], ys[i:i + chunk])}
                 for i in range(0, len(ps), chunk)]
        print(f"online AUC on the held-out tail: {online['auc']:.4f}; training the offline baseline", flush=True)
        samples = read_samples(settings)
        test_ids = [i for i, m in zip(ids, test_mask, strict=True) if m]
        offline = offline_baseline(samples, split_ts, args.model, test_ids)
    name = f"online-{args.dataset}-{args.model}"
    result = {"dataset": args.dataset, "ratings": args.ratings, "model": args.model, "timings": timings,
              "online": online, "offline": offline, "curve": curve, "split_ts": split_ts,
              "settings": {"train_batch_size": settings.train_batch_size, "train_lr": settings.train_lr,
                           "prequential_window": settings.prequential_window},
              "command": "python -m streamrank.bench.online " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d")}
    write_report(out, name, result)
    return 0


def write_report(out: Path, name: str, result: dict) -> None:
    """Writes <name>.{json,md,png}; the figures of a previous report of the same name are kept beside the new
    ones (`previous`), so a re-run on new defaults shows what it replaced."""
    path = out / f"{name}.json"
    if path.exists() and "previous" not in result:
        old = json.loads(path.read_text())
        result["previous"] = {k: old.get(k) for k in ("ratings", "online", "offline", "settings", "command", "date")}
    path.write_text(json.dumps(result, indent=1) + "\n")
    online, offline, timings, s = result["online"], result["offline"], result["timings"], result["settings"]
    ratings = result["ratings"]
    replayed = f"first {ratings:,} ratings" if ratings else "all ratings"
    model = DISPLAY_NAMES.get(result["model"], result["model"])
    plot(result["curve"], offline["auc"], online["auc"], f"{model} online on {result['dataset']} ({replayed})",
         out / f"{name}.png")
    settings_text = ", ".join(f"{k} {v}" for k, v in s.items())
    lines = [
        f"# Online learning on {result['dataset']}: {model}", "",
        f"Command: `{result['command']}` ({result['date']}, CPU, 2 cores, no GPU lent)", "",
        f"{timings['events']:,} events ({replayed}) replayed through the embedded broker, the worker and "
        f"`streamrank train` ({settings_text}); held-out set: the last 10% of samples by impression time "
        f"({online['test_examples']:,} samples).", "",
        "| | AUC on the held-out samples | log-loss | trained on |",
        "|---|---:|---:|---|",
        f"| online (prequential: predicted before learning) | {online['auc']:.4f} | {online['logloss']:.4f} | "
        f"one pass over the stream, {online['samples_learned']:,} samples |",
        f"| offline (early stopping, best epoch {offline['best_epoch'] + 1}) | {offline['auc']:.4f} | "
        f"{offline['logloss']:.4f} | {offline['train_examples']:,} samples before the split |",
        "", f"Online / offline AUC gap: {online['auc'] - offline['auc']:+.4f}.", "",
        f"![prequential AUC]({name}.png)", "",
        f"Pipeline wall time {timings['total_s']:.0f}s (worker caught up after {timings['worker_s']:.0f}s).", "",
    ]
    prev = result.get("previous")
    if prev and prev.get("online"):
        p_ratings = f"first {prev['ratings']:,} ratings" if prev.get("ratings") else "all ratings"
        lines += ["The report this one replaced (" + f"{prev.get('date')}, {p_ratings}, `{prev.get('command')}`, "
                  f"settings {prev.get('settings')}): online {prev['online']['auc']:.4f}, offline "
                  f"{prev['offline']['auc']:.4f}, gap {prev['online']['auc'] - prev['offline']['auc']:+.4f}.", ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
