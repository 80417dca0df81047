"""Command-line pieces shared by the offline model benchmarks (ranking, retrieval, scenario).

Each of them takes a data set (MovieLens or a user's event log), model seeds, a device, an output folder
and a CI `--quick` mode, checks its counts before any work starts, and writes its result as
`<name>-<dataset>[-quick].{json,md}` (an event log's dataset name is its file stem).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from streamrank.config import load_settings
from streamrank.data.dataset import InteractionLog, dataset_label, is_path, load_dataset
from streamrank.train.offline import TrainConfig, pick_device


def add_common(parser: argparse.ArgumentParser, quick_help: str, data_seed: bool = True) -> None:
    """Adds --dataset, --items, --order, --seeds, --device, --out, --quick, --no-progress, and --data-seed
    when the protocol draws a random split or random negatives."""
    parser.add_argument("--dataset", default=None,
                        help="ml-100k | ml-1m | path to an event log (.jsonl/.csv[.gz], docs/event-log-format.md); "
                             "default ml-1m (--quick: ml-100k)")
    parser.add_argument("--items", default=None, help="catalog file (.jsonl/.csv) of an event log")
    parser.add_argument("--order", default="sort", choices=("sort", "refuse"),
                        help="an event log not in time order: sort it (with a warning) or refuse it")
    parser.add_argument("--seeds", type=int, default=3, help="how many model seeds: K..K+N-1")
    parser.add_argument("--first-seed", type=int, default=0, help="K, the first model seed (to add seeds to a run)")
    if data_seed:
        parser.add_argument("--data-seed", type=int, default=0, help="seed of the data split and sampled negatives")
    parser.add_argument("--device", default=None, help="force a device (default: CUDA if available)")
    parser.add_argument("--out", default=None,
                        help="output folder (default <data dir>/benchmarks, var/benchmarks unless STREAMRANK_DATA_DIR "
                             "says otherwise; the committed figures: --out docs/benchmarks)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--no-progress", action="store_true")


def add_table_optimizer(parser: argparse.ArgumentParser) -> None:
    """`--table-optimizer` / `--table-lr`: the embedding tables' optimizer of the offline fits."""
    parser.add_argument("--table-optimizer", choices=["adagrad", "adam"], default="adagrad",
                        help="the embedding tables' optimizer (train.optim): row-wise Adagrad, the online trainer's, "
                             "or lazy row-wise Adam; dense layers keep AdamW at --lr")
    parser.add_argument("--table-lr", type=float, default=None,
                        help="the tables' learning rate (default: 0.2 for adagrad, --lr for adam)")


def table_settings(args: argparse.Namespace) -> dict[str, object]:
    """The table optimizer as fit settings: empty for the default (and for a benchmark without the option),
    so that parts stored before the option existed still match."""
    optimizer, lr = getattr(args, "table_optimizer", "adagrad"), getattr(args, "table_lr", None)
    if optimizer == "adagrad" and lr is None:
        return {}
    return {"table_optimizer": optimizer, "table_lr": lr}


def _table_lr(optimizer: str, lr: float | None) -> float | None:
    """The tables' learning rate of an optimizer and its `--table-lr`: Adagrad's default, or None (the dense lr)."""
    return TrainConfig.row_lr if lr is None and optimizer == "adagrad" else lr


def tables_text(settings: dict[str, object]) -> str:
    """How a report names the tables' optimizer, read from a run's settings (absent keys: the default)."""
    optimizer = str(settings.get("table_optimizer", "adagrad"))
    lr = _table_lr(optimizer, settings.get("table_lr"))  # type: ignore[arg-type]
    name = "lazy row-wise Adam" if optimizer == "adam" else "row-wise Adagrad"
    return f"{name}, lr {lr if lr is not None else settings.get('lr')}"


def parts_label(args: argparse.Namespace) -> str:
    """The dataset label of the default parts folder and of the result files: with another table optimizer
    than the default, a suffix of its own (`-tables-adam`, `-tables-adagrad-lr0.1`), because part files are
    named by model, seed and model configuration only, and a run with other settings in the same folder
    replaces those parts."""
    if not table_settings(args):
        return args.dataset_label
    lr = f"-lr{args.table_lr:g}" if args.table_lr is not None else ""
    return f"{args.dataset_label}-tables-{args.table_optimizer}{lr}"


def table_config(args: argparse.Namespace) -> dict[str, object]:
    """The `TrainConfig` fields of the table optimizer: `row_optimizer`, and `row_lr` (None: the dense lr)."""
    return {"row_optimizer": args.table_optimizer, "row_lr": _table_lr(args.table_optimizer, args.table_lr)}


def check_counts(args: argparse.Namespace, at_least_one: Iterable[str] = (), at_least_zero: Iterable[str] = ()) -> None:
    """Refuses counts out of range with the option's name, before any data is loaded."""
    for names, low in ((at_least_one, 1), (at_least_zero, 0)):
        for name in names:
            if getattr(args, name) < low:
                raise SystemExit(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")


def split_models(text: str, known: Iterable[str], what: str = "presets") -> list[str]:
    """A comma-separated model list, refused with the known names when one is unknown."""
    models = [m for m in text.split(",") if m]
    known = set(known)
    unknown = [m for m in models if m not in known]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; {what}: {', '.join(sorted(known))}")
    return models


def parse_overrides(pairs: Iterable[str]) -> dict[str, object]:
    """`--set FIELD=VALUE` options as a dict; a value is JSON when it parses (numbers, true/false, lists),
    else the plain string."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key:
            raise SystemExit(f"--set takes FIELD=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def log(msg: str) -> None:
    """A timestamped progress line (flushed, so a log file written by nohup follows the run)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def log_epoch(label: str, record: dict) -> None:
    """One progress line per epoch of a fit (the fits run for hours on a small CPU machine)."""
    valid = {k: v for k, v in record.items() if k in ("valid_session_auc", "valid_auc")}
    shown = ", ".join(f"{k.removeprefix('valid_')} {v:.4f}" for k, v in valid.items())
    log(f"{label} epoch {record['epoch'] + 1}: valid {shown}, {record['seconds']:.0f} s")


def parse_caps(text: str, option: str) -> list[int]:
    """A comma list of positive integers (e.g. history caps "1,3,5,10"), sorted and unique; one-line error."""
    try:
        caps = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"{option} takes positive integers separated by commas, got {text!r}") from None
    if not caps or caps[0] < 1:
        raise SystemExit(f"{option} takes positive integers separated by commas, got {text!r}")
    return caps


def sample_rows(n: int, keep: int, seed: int) -> np.ndarray:
    """`keep` of `n` row positions, drawn without replacement by `seed`, in order: the fixed training or
    validation sample a reduced-budget run uses, the same on every rerun."""
    return np.sort(np.random.default_rng(seed).choice(n, keep, replace=False))


def pick_dataset(args: argparse.Namespace) -> None:
    """The data set by default (ml-1m; ml-100k for --quick) and a clear refusal of a missing log file."""
    args.dataset = args.dataset or ("ml-100k" if args.quick else "ml-1m")
    for path in (args.dataset if is_path(args.dataset) else None, args.items):
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"no such file: {path} (--dataset takes ml-100k, ml-1m or an event-log path)")
    if args.items and not is_path(args.dataset):
        raise SystemExit(f"--items applies to an event log, not to {args.dataset}")


def load(args: argparse.Namespace) -> InteractionLog:
    """The benchmark's data set (MovieLens or an event log), loaded once per process."""
    try:
        return _load_cached(args.dataset, args.items, args.order)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"--dataset {args.dataset}: {exc}") from exc


@functools.cache
def _load_cached(dataset: str, items: str | None, order: str) -> InteractionLog:
    return load_dataset(dataset, items, order=order)


def finish(args: argparse.Namespace) -> argparse.Namespace:
    """Derived settings every benchmark uses: the data set, the seed list and the output folder."""
    if args.first_seed < 0:
        raise SystemExit(f"--first-seed must be >= 0, got {args.first_seed}")
    pick_dataset(args)
    args.dataset_label = dataset_label(args.dataset)
    args.seed_list = list(range(args.first_seed, args.first_seed + args.seeds))
    args.out = Path(args.out) if args.out else Path(load_settings().data_dir) / "benchmarks"
    return args


def write_result(args: argparse.Namespace, name: str, result: dict, render: Callable[[dict], str]) -> Path:
    """Writes the result's JSON and its markdown page; returns the path stem. A run with another table
    optimizer than the default writes files of its own (`scenario-ml-1m-tables-adam.md`), beside the default's."""
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{name}-{parts_label(args)}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    stem.with_suffix(".md").write_text(render(result))
    return stem


def result_head(args: argparse.Namespace, command: str, **machine: object) -> dict:
    """The part of a result every benchmark records: data set, command, machine and settings."""
    return {"dataset": args.dataset_label, "command": command.strip(), "quick": args.quick,
            "machine": {"device": str(pick_device(args.device)), "threads": torch.get_num_threads(),
                        "platform": platform.platform(), "torch": torch.__version__, **machine},
            "settings": {k: v for k, v in vars(args).items() if k != "out"}}
