"""Training throughput: samples/s per model through OnlineLearner.learn (see streamrank.bench.train)."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import torch

from streamrank.bench.trainbench_common import DOCS, MODELS, PARTS, machine
from streamrank.config import Settings, load_settings
from streamrank.events.partitioning import partition_of
from streamrank.models.ranking.config import DISPLAY_NAMES
from streamrank.v1 import features_pb2

POOL = 5_000  # the shuffle pool measured beside the defaults (train_shuffle_pool)


def movielens_samples(settings: Settings, dataset: str, ratings: int | None) -> list[bytes]:
    """Serialized TrainingSamples of a MovieLens request stream, made by the worker's processor in-process.

    Events are turned into events-topic records (partition from the user id, consecutive offsets per
    partition) and folded in batches of `settings.batch_size`, each committed to a temporary RocksDB
    store like the worker does; the samples come out in the order the worker would emit them.
    """
    from streamrank.data.movielens import load_movielens
    from streamrank.data.requests import movielens_events
    from streamrank.stream.processor import BatchProcessor, Record
    from streamrank.stream.store import StateStore

    ml = load_movielens(dataset)  # type: ignore[arg-type]
    topic = settings.topic("events")
    next_offset = [0] * settings.partitions
    records: list[Record] = []
    for event in movielens_events(ml, limit=ratings):
        part = partition_of(event.user_id, settings.partitions)
        records.append(Record(topic, part, next_offset[part], event.user_id.encode(), event.SerializeToString()))
        next_offset[part] += 1
    out: list[bytes] = []
    with TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp) / "state")
        try:
            processor = BatchProcessor(settings, store)
            for start in range(0, len(records), settings.batch_size):
                result = processor.process(records[start:start + settings.batch_size])
                processor.commit(result)
                out.extend(value for _, value in result.samples)
        finally:
            store.close()
    return out


class StageClock:
    """Accumulates where learn() spends its time, with hooks on one learner (no global patching).

    tensorize: Tensorizer.encode_samples; score_forward: a separate prequential forward pass (eval mode; only
    models with train/eval differences need one, the others predict from the train forward); train_forward:
    the forward pass of the train step; the rest of learn() (backward, optimizer step, contrastive loss,
    dedupe, the prequential window) is total minus those.
    """

    def __init__(self, learner: Any) -> None:
        self.seconds = dict.fromkeys(PARTS[:-1], 0.0)
        self._cuda = learner.device.type == "cuda"
        self._started = 0.0
        encode = learner.tensorizer.encode_samples

        def timed_encode(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return encode(*args, **kwargs)
            finally:
                self.seconds["tensorize"] += time.perf_counter() - t0

        learner.tensorizer.encode_samples = timed_encode
        learner.model.register_forward_pre_hook(self._pre)
        learner.model.register_forward_hook(self._post)

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()

    def _pre(self, module: torch.nn.Module, inputs: Any) -> None:
        self._sync()
        self._started = time.perf_counter()

    def _post(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        self._sync()
        key = "train_forward" if module.training else "score_forward"
        self.seconds[key] += time.perf_counter() - self._started

    def reset(self) -> None:
        """Forgets what was measured so far (after the warm-up)."""
        self.seconds = dict.fromkeys(self.seconds, 0.0)


def _sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_model(settings: Settings, preset: str, batches: list[list[features_pb2.TrainingSample]],
               warmup: int, device: torch.device, replay: bool = False) -> dict[str, Any]:
    """A fresh learner learns `warmup` batches untimed, then the rest timed; returns samples/s and parts.
    Without `replay` the learner runs as the trainer does while behind the stream (replay paused); with it,
    as while caught up (a replay step after each fresh one, `train_replay_ratio`)."""
    from streamrank.train.learner import OnlineLearner

    learner = OnlineLearner(settings, preset, device=device)
    learner.replay_paused = not replay
    clock = StageClock(learner)
    for batch in batches[:warmup]:
        learner.learn(batch)
    learner.drain()  # a shuffle pool starts the timed part empty, and is learned out in it
    clock.reset()
    total, start = 0.0, learner.learned
    sync = _sync_for(device)
    for k, batch in enumerate(batches[warmup:], start=warmup + 1):
        sync()
        t0 = time.perf_counter()
        learner.learn(batch)
        if k == len(batches):
            learner.drain()
        sync()
        total += time.perf_counter() - t0
    samples = learner.learned - start
    if samples != sum(len(b) for b in batches[warmup:]):
        raise RuntimeError(f"{preset}: learned {samples} of {sum(len(b) for b in batches[warmup:])} samples "
                           f"(duplicates {learner.duplicates}, non-finite batches {learner.non_finite_batches})")
    timed = len(batches) - warmup
    parts_ms = {k: 1000 * v / timed for k, v in clock.seconds.items()}
    parts_ms["rest"] = 1000 * total / timed - sum(parts_ms.values())
    return {"samples_per_s": samples / total, "ms_per_batch": 1000 * total / timed, "parts_ms": parts_ms,
            "prequential_auc": learner.window.metrics().get("auc", float("nan"))}


def time_pipelined(settings: Settings, preset: str, batches: list[list[features_pb2.TrainingSample]],
                   warmup: int, device: torch.device) -> float:
    """samples/s of `OnlineLearner.learn_stream` with the background prepare thread (same batches)."""
    from streamrank.train.learner import OnlineLearner

    learner = OnlineLearner(settings, preset, device=device)
    learner.replay_paused = True
    for batch in batches[:warmup]:
        learner.learn(batch)
    learner.drain()
    sync = _sync_for(device)
    sync()
    t0 = time.perf_counter()
    learned = sum(r.learned for r in learner.learn_stream(batches[warmup:])) + learner.drain()
    sync()
    return learned / (time.perf_counter() - t0)


def time_bare(settings: Settings, preset: str, batches: list[list[features_pb2.TrainingSample]],
              warmup: int, device: torch.device, replay: bool = False) -> float:
    """The physical limit of the same model: fresh samples/s of forward + backward + optimizer step alone, on
    the same batches tensorised beforehand and already on the device, in a tight loop (no decode, no
    vocabularies, no prediction bookkeeping), with the trainer's own optimizer. With `replay`, each fresh
    step is followed by a step on the replay batch the learner drew for it (the same steps learn() takes)."""
    from streamrank.train.learner import OnlineLearner
    from streamrank.train.offline import train_step

    learner = OnlineLearner(settings, preset, device=device)
    learner.replay_paused = not replay
    prepared = [learner.prepare(b) for b in batches]
    for p in prepared:
        learner.model.sync_vocab(learner.optimizer, p.recycled)
    steps = [[t.to(device) for t in (p.batch, p.replay_batch) if t is not None] for p in prepared
             if p.batch is not None]
    for group in steps[:warmup]:
        for batch in group:
            train_step(learner.model, batch, learner.optimizer)
    sync = _sync_for(device)
    sync()
    t0 = time.perf_counter()
    for group in steps[warmup:]:
        for batch in group:
            train_step(learner.model, batch, learner.optimizer)
    sync()
    return sum(len(group[0]) for group in steps[warmup:]) / (time.perf_counter() - t0)


def run_throughput(models: Sequence[str] = MODELS, dataset: str = "ml-100k", ratings: int | None = None,
                   reps: int = 3, warmup_batches: int = 3, batches: int = 20, batch_size: int | None = None,
                   threads: int | None = None, device: str | None = None, progress: bool = True) -> dict:
    """All repetitions of the throughput part; returns the figures written to the JSON file."""
    from streamrank.train.offline import pick_device

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with TemporaryDirectory() as tmp:
            overrides: dict[str, Any] = {"data_dir": tmp}
            if batch_size:
                overrides["train_batch_size"] = batch_size
            settings = load_settings(**overrides)
            size = settings.train_batch_size
            t0 = time.perf_counter()
            raw = movielens_samples(settings, dataset, ratings)
            build_s = time.perf_counter() - t0
            need = (warmup_batches + batches) * size
            if len(raw) < need:
                raise ValueError(f"{dataset} with ratings={ratings} gives {len(raw):,} samples; "
                                 f"{warmup_batches} + {batches} batches of {size} need {need:,}")
            built = len(raw)
            raw = raw[-need:]
            if progress:
                print(f"{len(raw):,} samples of {dataset} (built in {build_s:.1f}s); "
                      f"torch threads {torch.get_num_threads()}", flush=True)
            dev = pick_device(device)
            parse_rates: list[float] = []
            rows: dict[str, list[dict]] = {m: [] for m in models}
            for rep in range(reps):
                t0 = time.perf_counter()
                samples = []
                for value in raw:
                    sample = features_pb2.TrainingSample()
                    sample.ParseFromString(value)
                    samples.append(sample)
                parse_rates.append(len(samples) / (time.perf_counter() - t0))
                chunks = [samples[i:i + size] for i in range(0, need, size)]
                for model in models:  # side by side: trainer, bare loop, pipelined trainer
                    row = time_model(settings, model, chunks, warmup_batches, dev)
                    row["bare"] = time_bare(settings, model, chunks, warmup_batches, dev)
                    row["pipelined"] = time_pipelined(settings, model, chunks, warmup_batches, dev)
                    row["with_pool"] = time_model(settings.with_overrides(train_shuffle_pool=POOL), model, chunks,
                                                  warmup_batches, dev)["samples_per_s"]
                    row["with_replay"] = time_model(settings, model, chunks, warmup_batches, dev,
                                                    replay=True)["samples_per_s"]
                    row["bare_with_replay"] = time_bare(settings, model, chunks, warmup_batches, dev, replay=True)
                    rows[model].append(row)
                    if progress:
                        print(f"rep {rep + 1}/{reps} {model}: {row['samples_per_s']:,.0f} samples/s "
                              f"({row['ms_per_batch']:.1f} ms/batch), bare {row['bare']:,.0f}, "
                              f"pipelined {row['pipelined']:,.0f}, pool {row['with_pool']:,.0f}; "
                              f"with replay {row['with_replay']:,.0f}, "
                              f"bare {row['bare_with_replay']:,.0f}", flush=True)
            timed = samples[warmup_batches * size:]
            history = statistics.mean(len(s.behaviors.item_ids) for s in timed)
        result_models = {}
        for model, runs in rows.items():
            median = statistics.median(r["samples_per_s"] for r in runs)
            bare = statistics.median(r["bare"] for r in runs)
            result_models[model] = {
                "runs": [r["samples_per_s"] for r in runs],
                "median": median,
                "bare": bare,
                "ratio_to_bare": statistics.median(r["samples_per_s"] / r["bare"] for r in runs),
                "bare_runs": [r["bare"] for r in runs],
                "pipelined": statistics.median(r["pipelined"] for r in runs),
                "with_pool": statistics.median(r["with_pool"] for r in runs),
                "with_pool_ratio": statistics.median(r["with_pool"] / r["samples_per_s"] for r in runs),
                "with_replay": statistics.median(r["with_replay"] for r in runs),
                "bare_with_replay": statistics.median(r["bare_with_replay"] for r in runs),
                "with_replay_ratio_to_bare": statistics.median(r["with_replay"] / r["bare_with_replay"]
                                                               for r in runs),
                "ms_per_batch": statistics.median(r["ms_per_batch"] for r in runs),
                "parts_ms": {k: statistics.median(r["parts_ms"][k] for r in runs) for k in PARTS},
                "prequential_auc_last_rep": runs[-1]["prequential_auc"],
            }
        return {
            "dataset": dataset, "ratings": ratings, "samples_built": built,
            "batch_size": size, "warmup_batches": warmup_batches, "batches": batches, "reps": reps,
            "replay_ratio": settings.train_replay_ratio, "replay_buffer": settings.train_replay_buffer,
            "mean_history": history, "threads": torch.get_num_threads(), "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "CPU",
            "cuda_available": torch.cuda.is_available(), "parse_per_s": statistics.median(parse_rates),
            "models": result_models, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        }
    finally:
        torch.set_num_threads(previous_threads)


def write_throughput(result: dict, command: str, out_dir: Path = DOCS, before: dict | None = None,
                     notes: str = "", before_replay: dict | None = None) -> Path:
    """Writes train-throughput.md and .json into out_dir; returns the markdown path. `before`: the result
    of the same benchmark on the previous code with replay off, measured beside this run, shown as its own
    columns (`before_replay`: with the previous code's replay defaults, beside the replay figures);
    `notes`: markdown appended (e.g. the before/after quality check)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**result, "command": command}
    if before is not None:
        payload["before"] = {m: r["median"] for m, r in before["models"].items()}
    if before_replay is not None:
        payload["before_with_replay"] = {m: r["median"] for m, r in before_replay["models"].items()}
    (out_dir / "train-throughput.json").write_text(json.dumps(payload, indent=1) + "\n")
    m = result["machine"]
    if result["device"].startswith("cuda"):
        device = f"GPU {result['device_name']}"
    else:
        device = f"CPU ({m['cpus']} CPUs), torch threads: {result['threads']}"
        if not result["cuda_available"]:
            device += "; no CUDA device was available to this run, so there are no GPU figures"
    head_before = " before | x before |" if before else ""
    lines = [
        "# Online training throughput",
        "",
        f"Command: `{command}`  ",
        f"Data: {result['dataset']} request stream (ratings: {result['ratings'] or 'all'}) turned into "
        f"TrainingSamples by the worker's processor in-process; the last "
        f"{(result['warmup_batches'] + result['batches']) * result['batch_size']:,} samples "
        f"(mean behaviour sequence {result['mean_history']:.1f}).  ",
        f"Device: {device}. Python {m['python']}, torch {m['torch']}, {result['date']}.",
        "",
        f"Samples per second inside `OnlineLearner.learn()` as the trainer runs while behind the stream "
        f"(test-then-train: predict the batch, then one optimizer step; replay paused) on micro-batches of "
        f"{result['batch_size']}: a fresh learner per model and repetition "
        f"learns warm-up batches untimed ({result['warmup_batches']}), then timed ones ({result['batches']}). "
        f"Models run round-robin within each repetition; medians over repetitions ({result['reps']}). "
        "`bare` is the same model's forward + backward + optimizer step alone on the same batches, tensorised "
        "beforehand (the physical limit of this model on this machine); `pipelined` is `learn_stream`, which "
        f"prepares the next batch in a background thread; `pool` is learn() with `train_shuffle_pool={POOL}` "
        "(each batch predicted on arrival, learned later: a second tensorisation and forward per sample)."
        + (
            " `before` is the previous code with replay off, run by the same command in the same hour." if before
            else ""),
        "",
        f"| model | samples/s (median) | runs | bare | ratio to bare | pipelined | pool | x pool |{head_before} "
        "ms / batch | tensorize | score forward | train forward | backward + step + rest |",
        "|---|---:|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if before else "") + "---:|---:|---:|---:|---:|",
    ]
    for model, r in result["models"].items():
        p = r["parts_ms"]
        runs = ", ".join(f"{v:,.0f}" for v in r["runs"])
        cells_before = ""
        if before:
            b = before["models"].get(model, {}).get("median")
            cells_before = f" {b:,.0f} | {r['median'] / b:.2f} |" if b else " - | - |"
        nopool = f"{r['with_pool']:,.0f} | {r['with_pool_ratio']:.2f}" if "with_pool" in r else "- | -"
        lines.append(f"| {DISPLAY_NAMES.get(model, model)} | **{r['median']:,.0f}** | {runs} | {r['bare']:,.0f} | "
                     f"{r['ratio_to_bare']:.2f} | {r['pipelined']:,.0f} | {nopool} |{cells_before} "
                     f"{r['ms_per_batch']:.1f} | "
                     f"{p['tensorize']:.1f} | {p['score_forward']:.1f} | {p['train_forward']:.1f} | {p['rest']:.1f} |")
    lines += [
        "",
        f"**While caught up** the trainer also replays: after each fresh step, a step on "
        f"{result['replay_ratio']:g}x as many samples drawn from the last {result['replay_buffer']:,} learned "
        "(`train_replay_ratio`, `train_replay_buffer`); while more than `train_replay_max_lag` samples wait it "
        "does not (the figures above). Fresh samples/s of learn() with replay, its bare loop (the same fresh and "
        "replay steps on pre-built tensors)" + (", and the previous code's learn() with its replay defaults, "
                                                  "which tensorised every replayed sample again" if before_replay
                                                  else "") + ":",
        "",
        "| model | with replay | bare with replay | ratio to bare |" + (" before | x before |" if before_replay
                                                                         else ""),
        "|---|---:|---:|---:|" + ("---:|---:|" if before_replay else ""),
    ]
    for model, r in result["models"].items():
        cells = ""
        if before_replay:
            b = before_replay["models"].get(model, {}).get("median")
            cells = f" {b:,.0f} | {r['with_replay'] / b:.2f} |" if b else " - | - |"
        lines.append(f"| {DISPLAY_NAMES.get(model, model)} | **{r['with_replay']:,.0f}** | "
                     f"{r['bare_with_replay']:,.0f} | {r['with_replay_ratio_to_bare']:.2f} |{cells}")
    lines += [
        "",
        "The breakdown columns are milliseconds per batch (medians): `tensorize` is Tensorizer.encode_samples "
        "(ids to rows, vocabulary growth), `score forward` a separate prequential forward pass (zero for models "
        "that predict from the train forward: every model of the AW-MoE family), `train forward` the train "
        "step's forward pass; the last column is the rest of learn(): backward pass, optimizer step, "
        "contrastive loss (AW-MoE & CL), dedupe and the prequential window.",
        "",
        f"Not included above: decoding the samples from bytes (`TrainingSample.ParseFromString`, done by the "
        f"trainer before learn()), {result['parse_per_s']:,.0f} samples/s on one thread. Analysis: "
        "docs/online-training.md, 'Trainer speed'.",
        "",
    ]
    if notes:
        lines += [notes.rstrip(), ""]
    path = out_dir / "train-throughput.md"
    path.write_text("\n".join(lines))
    return path
