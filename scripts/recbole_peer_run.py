"""One RecBole 1.2.1 context-aware fit with RecBole's own Trainer, on a split made elsewhere; prints one JSON line.

Runs INSIDE the peer environment (`make peer-env`: .peer-venv), never in .venv: it imports only recbole,
torch, numpy, pandas and the standard library. `streamrank.bench.recbole_peer` writes the atomic files of
its protocol-(b) split and calls this script once per (model, seed):

    .peer-venv/bin/python scripts/recbole_peer_run.py --data-dir DIR --dataset ml-1m-peer --model FNN \
        --seed 0 --learning-rate 0.003 --mlp-hidden 128,256,128 --dropout 0.1 --out result.json

DIR/<dataset>/ holds <dataset>.{train,valid,test}.inter, .user and .item; `benchmark_filename: [train, valid,
test]` makes RecBole use exactly those three files as its splits instead of drawing its own. Everything
else is RecBole's published ML-1M context-aware configuration (benchmark/md/ml-1m_context.md in its
repository): AUC as the validation metric, AUC and log-loss, labelled evaluation, batch 4096, Adam,
embedding size 16, early stopping after `stopping_step` validations without a new best (RecBole's rule:
a tie counts as a new best; it stops after stopping_step + 1 epochs without one). The best model is the
checkpoint RecBole's Trainer saved; its `evaluate(load_best_model=True)` scores the test file.

torch >= 2.6 loads with weights_only=True by default and refuses RecBole's checkpoint (it pickles the
config): TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 is set for this process only. `recbole.quick_start` is never
imported (it imports ray at module level).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole's own checkpoint, in this process only

SPLITS = ("train", "valid", "test")


def recbole_config(args: argparse.Namespace, workdir: Path) -> dict:
    """The config dict: RecBole's published ML-1M context-aware settings, the given split and hyper-parameters."""
    return {
        "data_path": str(Path(args.data_dir).resolve()), "dataset": args.dataset,
        "benchmark_filename": list(SPLITS),
        "field_separator": "\t", "seq_separator": " ",
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LABEL_FIELD": "label", "threshold": None,
        "load_col": {"inter": ["user_id", "item_id", "label"], "user": ["user_id", "age", "gender", "occupation"],
                     "item": ["item_id", "genre", "release_year"]},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": None, "mode": "labeled", "order": "RO"},
        "train_neg_sample_args": None, "metrics": ["AUC", "LogLoss"], "valid_metric": "AUC",
        "epochs": args.epochs, "stopping_step": args.stopping_step, "eval_step": 1,
        "train_batch_size": args.train_batch_size, "eval_batch_size": args.eval_batch_size,
        "learner": "adam", "learning_rate": args.learning_rate, "weight_decay": 0.0,
        "embedding_size": args.embedding_size, "mlp_hidden_size": args.mlp_hidden, "dropout_prob": args.dropout,
        "seed": args.seed, "reproducibility": True, "use_gpu": False, "show_progress": False,
        "state": "WARNING", "checkpoint_dir": str(workdir / "saved"), "log_wandb": False,
        "metric_decimal_place": 6,
    }


def _say(msg: str) -> None:
    print(f"[recbole] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict:
    """Trains and tests one model with RecBole's Trainer; returns the result record."""
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # pandas / torch.cuda.amp deprecations in RecBole
    warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
    sys.argv = sys.argv[:1]  # RecBole's Config also parses the command line; its settings come from the dict only
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    workdir = Path(tempfile.mkdtemp(prefix="recbole-peer-"))
    os.chdir(workdir)  # RecBole writes log/ and log_tensorboard/ under the working directory
    model_cls = get_model(args.model)
    config = Config(model=model_cls, dataset=args.dataset, config_dict=recbole_config(args, workdir))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    sizes = {name: len(d.dataset) for name, d in zip(SPLITS, (train_data, valid_data, test_data), strict=True)}
    if args.expect_sizes and [sizes[s] for s in SPLITS] != args.expect_sizes:
        raise SystemExit(f"RecBole built splits of {sizes}, not the exported {args.expect_sizes}")
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = model_cls(config, train_data.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    curve: list[float] = []
    best = {"epoch": 0}
    t0 = time.perf_counter()

    def on_epoch(epoch_idx: int, valid_score: float) -> None:
        curve.append(round(float(valid_score), 6))
        if valid_score >= trainer.best_valid_score:  # RecBole's early_stopping: a tie is a new best
            best["epoch"] = epoch_idx + 1
        _say(f"{args.model} seed {args.seed} epoch {epoch_idx + 1}: valid AUC {valid_score:.5f} "
             f"(best epoch {best['epoch']}, {time.perf_counter() - t0:.0f} s)")

    trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=False, callback_fn=on_epoch)
    seconds = time.perf_counter() - t0
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    epochs_run = len(trainer.train_loss_dict)
    fields = {"token": list(model.token_field_names), "token_seq": list(model.token_seq_field_names),
              "float": list(model.float_field_names)}
    return {"side": "recbole", "model": args.model, "seed": args.seed, "auc": float(test["auc"]),
            "logloss": float(test["logloss"]), "epochs_run": epochs_run, "best_epoch": best["epoch"],
            "converged": best["epoch"] < epochs_run, "seconds": round(seconds, 1),
            "rows_per_s": round(sizes["train"] * epochs_run / seconds, 1), "valid_curve": curve,
            "best_valid_auc": float(trainer.best_valid_score), "split_sizes": sizes, "fields": fields,
            "params": sum(p.numel() for p in model.parameters()),
            "versions": {"recbole": _version("recbole"), "torch": torch.__version__, "numpy": _version("numpy")},
            "settings": {k: v for k, v in recbole_config(args, workdir).items()
                         if k in ("epochs", "stopping_step", "train_batch_size", "learner", "learning_rate",
                                  "weight_decay", "embedding_size", "mlp_hidden_size", "dropout_prob")}}


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--data-dir", required=True, help="directory holding <dataset>/<dataset>.{train,valid,test}.inter")
    a.add_argument("--dataset", required=True)
    a.add_argument("--model", required=True, choices=["FNN", "DeepFM"])
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--epochs", type=int, default=500)
    a.add_argument("--stopping-step", type=int, default=10)
    a.add_argument("--learning-rate", type=float, default=1e-3)
    a.add_argument("--embedding-size", type=int, default=16)
    a.add_argument("--mlp-hidden", type=lambda s: [int(x) for x in s.split(",")], default=[128, 256, 128])
    a.add_argument("--dropout", type=float, default=0.1)
    a.add_argument("--train-batch-size", type=int, default=4096)
    a.add_argument("--eval-batch-size", type=int, default=409600)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--expect-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="train,valid,test row counts the exported files hold (checked after RecBole loads them)")
    a.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return a.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one fit, its JSON on stdout (and in --out)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.out is not None:
        args.out = args.out.resolve()
    result = run(args)
    text = json.dumps(result)
    if args.out is not None:
        args.out.write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
