"""RecBole 1.2.1's own trainer beside ours on protocol (b), the same split on the same machine.

Builds protocol (b) (`recbole_protocol`: RecBole's ML-1M context-aware benchmark), writes exactly its
train / valid / test rows, with the fields our models see, as RecBole atomic files, and runs RecBole's FNN
and DeepFM on them with RecBole's own Trainer (`scripts/recbole_peer_run.py`, in the isolated environment
`make peer-env` builds at .peer-venv). Then it trains our DNN and DeepFM on the same split, converged, and
writes <out>/recbole-peer-<dataset>.{md,json}. Like-for-like rows see no behaviour history (RecBole's
context-aware models see none); `--history-models` adds rows with history. Every (side, model, seed) result
is kept as it finishes (`bench.parts`), so a rerun skips it.

    python -m streamrank.bench.recbole_peer --dataset ml-1m --seeds 1 --out docs/benchmarks
    python -m streamrank.bench.recbole_peer --quick      # tiny subsample, 1 epoch (tests)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from streamrank.bench import movielens_cli as cli
from streamrank.bench.parts import Part, PartStore, default_root, fit_id
from streamrank.data.protocols import RankingProtocol, recbole_protocol
from streamrank.features import Tensorizer
from streamrank.models.factory import build_model
from streamrank.train.metrics import evaluate
from streamrank.train.offline import TrainConfig, fit, predict, set_seed
from streamrank.train.tensor_data import TensorDataset

ROOT = Path(__file__).resolve().parents[2]
PEER_SCRIPT = ROOT / "scripts" / "recbole_peer_run.py"
PEER_PYTHON = ROOT / ".peer-venv" / "bin" / "python"
SPLITS = ("train", "valid", "test")
# RecBole's published ML-1M context-aware runs (benchmark/hyper/context/{FNN,DeepFM}-ml-1m.md): best parameters
# and their test AUC; embedding size 16, batch 4096, Adam, everything else RecBole's defaults.
PEER_MODELS: dict[str, dict] = {
    "FNN": {"learning_rate": 0.003, "mlp_hidden": "128,256,128", "dropout": 0.1, "published_auc": 0.8903},
    "DeepFM": {"learning_rate": 0.005, "mlp_hidden": "256,256,256", "dropout": 0.1, "published_auc": 0.8997},
}
PAIRS = {"dnn": "FNN", "deepfm": "DeepFM"}  # our preset -> RecBole's model
# Our presets' sizes: the ranking benchmark's DNN (streamrank.bench.ranking FULL_SIZES), DeepFM at RecBole's
# embedding size 16 (the scenario benchmark's MLP).
OUR_SIZES: dict[str, dict] = {
    "dnn": {"emb_dim": 16, "hidden_dim": 32, "input_mlp_hidden": (64,), "expert_hidden": (200, 80)},
    "din": {"emb_dim": 16, "hidden_dim": 32, "input_mlp_hidden": (64,), "expert_hidden": (200, 80),
            "au_hidden": (80, 40)},
    "deepfm": {"emb_dim": 16, "hidden": (128, 64)},
}
# "matched": our model code trained with RecBole's optimisation of its paired model (Adam on every parameter:
# the tables' row-wise Adam at the same lr, no weight decay, batch 4096, RecBole's lr for that model).
MATCHED = {"batch_size": 4096, "weight_decay": 0.0, "row_optimizer": "adam"}
TARGET = 0.003
MISSING_PEER = "error: no RecBole peer environment at {path}: run `make peer-env` first"


def check_peer(python: Path) -> Path:
    """`python` if it exists, else SystemExit with the one-line message saying how to build the peer env."""
    if not Path(python).is_file():
        raise SystemExit(MISSING_PEER.format(path=Path(python).parent.parent))
    return Path(python)


def _token(value: object) -> str:
    """A field value as one token of an atomic file (no tabs, newlines or quote characters)."""
    return " ".join(str(value).replace('"', "'").split())


def export_atomic(p: RankingProtocol, root: Path, name: str) -> dict[str, int]:
    """Writes `p`'s three splits and its user/item fields as RecBole atomic files under root/name/; returns the
    rows per split. Ids are our corpus codes (the titles of ML-1M hold quote characters that RecBole's CSV
    reader would mangle): user_id/item_id tokens, label 0/1; age, gender, occupation and release_year tokens
    (as RecBole's published benchmark treats them), genre a token sequence."""
    c, d = p.corpus, Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, s in zip(SPLITS, (p.train, p.valid, p.test), strict=True):
        rows = [f"{u}\t{i}\t{int(y)}" for u, i, y in zip(s.user.tolist(), s.item.tolist(), s.labels.tolist(),
                                                          strict=True)]
        (d / f"{name}.{split}.inter").write_text("\n".join(["user_id:token\titem_id:token\tlabel:float", *rows]) + "\n")
        sizes[split] = len(rows)
    users = [f"{u}\t" + "\t".join(_token(f.get(k, "")) for k in ("age", "gender", "occupation"))
             for u, f in enumerate(c.user_fields)]
    (d / f"{name}.user").write_text("\n".join(["user_id:token\tage:token\tgender:token\toccupation:token",
                                               *users]) + "\n")
    items = [f"{i}\t{' '.join(_token(t).replace(' ', '_') for t in tags)}\t{_token(year)}"
             for i, (tags, year) in enumerate(zip(c.item_tags, c.item_year, strict=True))]
    (d / f"{name}.item").write_text("\n".join(["item_id:token\tgenre:token_seq\trelease_year:token", *items]) + "\n")
    return sizes


def peer_command(args: argparse.Namespace, model: str, seed: int, data_dir: Path, name: str,
                 sizes: dict[str, int], out: Path) -> list[str]:
    """The command line of one RecBole fit in the peer environment."""
    hp = PEER_MODELS[model]
    return [str(args.peer_python), str(PEER_SCRIPT), "--data-dir", str(data_dir), "--dataset", name, "--model", model,
            "--seed", str(seed), "--epochs", str(args.peer_epochs), "--stopping-step", str(args.stopping_step),
            "--learning-rate", str(hp["learning_rate"]), "--mlp-hidden", hp["mlp_hidden"],
            "--dropout", str(hp["dropout"]), "--embedding-size", "16", "--train-batch-size", "4096",
            "--threads", "1", "--expect-sizes", ",".join(str(sizes[s]) for s in SPLITS), "--out", str(out)]


def run_peer(args: argparse.Namespace, model: str, seed: int, data_dir: Path, name: str,
             sizes: dict[str, int]) -> dict:
    """One RecBole fit through the peer script (its progress passes through to stderr); its JSON record."""
    out = data_dir / f"result-{model}-{seed}.json"
    cmd = peer_command(args, model, seed, data_dir, name, sizes, out)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(["nice", "-n", str(args.nice), *cmd], env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"error: RecBole's {model} (seed {seed}) failed with exit status {done.returncode}; "
                         f"command: {' '.join(cmd)}")
    return json.loads(out.read_text())


def our_config(args: argparse.Namespace, preset: str, seed: int, optim: str) -> TrainConfig:
    """Our training settings ("ours": the command line's) or RecBole's for the paired model ("matched")."""
    cfg = TrainConfig(lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs, patience=args.patience,
                      seed=seed, valid_metric="auc", progress=False)
    if optim == "ours":
        return cfg
    lr = PEER_MODELS[PAIRS[preset]]["learning_rate"]
    return replace(cfg, lr=lr, row_lr=lr, **MATCHED)


def run_ours(args: argparse.Namespace, preset: str, seed: int, tz: Tensorizer, data: dict[str, TensorDataset],
             history: int, optim: str = "ours") -> dict:
    """Trains our preset on the split (early stopping on valid AUC, best weights restored), scores the test."""
    set_seed(seed)
    sizes = OUR_SIZES[preset]
    model = build_model(preset, tz.spec, **({"gate_context": "target"} if preset in ("dnn", "din") else {}),
                        **sizes)
    cfg = our_config(args, preset, seed, optim)
    res = fit(model, tz, data["train"], data["valid"], cfg,
              on_epoch=partial(cli.log_epoch, f"ours {preset} h{history} {optim} seed {seed}"))
    test = evaluate(predict(model, tz, data["test"]), data["test"].labels)
    conv = res.convergence()
    return {"side": "streamrank", "model": preset, "history": history, "optim": optim, "seed": seed,
            "auc": test["auc"], "logloss": test["logloss"],
            **{k: conv[k] for k in ("epochs_run", "best_epoch", "converged", "seconds", "valid_curve")},
            "rows_per_s": round(len(data["train"]) * conv["epochs_run"] / res.seconds, 1),
            "best_valid_auc": res.best_valid, "params": model.describe()["params"],
            "settings": {"sizes": sizes, "train": cfg.to_dict()}}


def build_split(args: argparse.Namespace) -> RankingProtocol:
    """Protocol (b) on the data set (--quick: a small fixed subsample of each split)."""
    p = recbole_protocol(cli.load(args), seed=args.data_seed)
    if args.quick:
        for name, keep in zip(SPLITS, (4000, 1000, 1000), strict=True):
            s = getattr(p, name)
            setattr(p, name, s.subset(cli.sample_rows(len(s), min(keep, len(s)), args.data_seed)))
    return p


def tensorise(p: RankingProtocol, history: int) -> tuple[Tensorizer, dict[str, TensorDataset]]:
    """Our spec (vocabularies fitted on the training split) with `history` behaviours, and the three splits."""
    tz = Tensorizer(p.make_spec(history, 1))  # also sets every split's history length
    return tz, {name: TensorDataset.build(getattr(p, name), tz) for name in SPLITS}


def our_features(tz: Tensorizer) -> dict:
    """What our models see under a spec: fields and their vocabulary sizes."""
    s = tz.spec
    return {"user": ["user id" if s.use_user_id else None, *s.user_fields], "item": ["item id",
            "category (first genre)", *s.item_fields, "genres (tags, mean-pooled)" if s.max_tags else None],
            "history_len": s.max_seq_len, "dense": list(s.dense), "vocab": s.vocab_sizes(),
            "constant": ["brand", "shop", "query", "scenario"]}


def pair_rows(rows: list[dict]) -> list[dict]:
    """Per (our model, seed) with a RecBole peer run: the AUC gap and whether it is within the target."""
    peers = {(r["model"], r["seed"]): r for r in rows if r["side"] == "recbole"}
    out = []
    for r in rows:
        peer = peers.get((PAIRS.get(r["model"], ""), r["seed"]))
        if r["side"] == "streamrank" and r.get("history", 0) == 0 and peer is not None:
            gap = r["auc"] - peer["auc"]
            out.append({"ours": r["model"], "optim": _optim(r), "recbole": peer["model"],
                        "seed": r["seed"], "auc_gap": gap,
                        "both_converged": bool(r["converged"] and peer["converged"]),
                        "target_met": bool(abs(gap) <= TARGET)})
    return out


def _optim(r: dict) -> str:
    """How a row was trained: "recbole" (RecBole's side), "ours" or "matched" (our side)."""
    return r.get("optim", "ours") if r["side"] == "streamrank" else "recbole"


def _mean(rows: list[dict], key: str) -> str:
    vals = [float(r[key]) for r in rows]
    return f"{np.mean(vals):.4f}" + (f" ± {np.std(vals, ddof=1):.4f}" if len(vals) > 1 else "")


def render(result: dict) -> str:
    """The markdown page of a result (everything in it comes from `result`)."""
    st, rows, feats = result["protocol"], result["rows"], result["features"]
    ours = feats["streamrank"]
    cfg = next((r["settings"]["train"] for r in rows if r["side"] == "streamrank"), {})
    lines = [f"# RecBole 1.2.1's own trainer beside ours: protocol (b) on {result['dataset']}", "",
             f"Command: `{result['command']}`  ", f"Date: {dt.date.today()}; {result['machine']['platform']}, "
             f"torch {result['machine']['torch']}, one torch thread per fit, CPU, one fit at a time, on a machine "
             f"shared with another benchmark (timings are noisy); this invocation {result['wall_seconds']:,.0f} s "
             "(results kept by earlier invocations are reused; each row's seconds are its own fit's). Peer "
             "environment: `make peer-env` (.peer-venv), driven by "
             "`scripts/recbole_peer_run.py` (RecBole's Config / create_dataset / data_preparation / get_model / "
             "get_trainer; its Trainer's fit and evaluate(load_best_model=True)).", "",
             "## Split", "",
             f"Protocol (b) (`recbole_protocol`, data seed {result['settings']['data_seed']}): rating 3 dropped, label "
             f"= rating ≥ 4, random 8:1:1 with RecBole's rounding: {st['interactions']:,} interactions → "
             f"{st['train']:,} / {st['valid']:,} / {st['test']:,} (positive rate {st['positive_rate']:.3f}). "
             "Those exact rows are written as RecBole atomic files and RecBole reads them as its three splits "
             "(`benchmark_filename: [train, valid, test]`, so it draws no split of its own); the peer script "
             f"checks that RecBole built splits of {', '.join(f'{v:,}' for v in result['split_sizes'].values())} rows.",
             "", "## Features", "",
             "- RecBole: " + (", ".join(f"{k}: {', '.join(v)}" for k, v in feats["recbole"].items() if v)
                              if feats["recbole"] else "(no RecBole run)") +
             " (embedding size 16; age, occupation and release year as tokens, as RecBole's published benchmark; "
             "RecBole indexes every id of the three files).",
             f"- Ours: user fields {', '.join(x for x in ours['user'] if x)}; item fields "
             f"{', '.join(x for x in ours['item'] if x)}; "
             f"history length {ours['history_len']} in the like-for-like rows; constant (empty) fields "
             f"{', '.join(ours['constant'])}; vocabularies fitted on the training split (ids only in valid/test "
             "share the OOV row). The category is the first genre, so it adds no information beyond the genres.",
             "", "## Hyper-parameters", "",
             "| side | model | settings |", "|---|---|---|"]
    for name, hp in result["peer_models"].items():
        lines.append(f"| RecBole | {name} | Adam lr {hp['learning_rate']}, no weight decay, batch 4096, embedding 16, "
                     f"MLP [{hp['mlp_hidden']}], dropout {hp['dropout']}, xavier-normal init, BCE; at most "
                     f"{result['settings']['peer_epochs']} epochs, stopping_step "
                     f"{result['settings']['stopping_step']} (RecBole's published best parameters) |")
    for name, sz in result["our_sizes"].items():
        if any(r["side"] == "streamrank" and r["model"] == name for r in rows):
            lines.append(f"| ours (optim ours) | {name} | {', '.join(f'{k} {v}' for k, v in sz.items())}; AdamW lr "
                         f"{cfg.get('lr')} (weight decay {cfg.get('weight_decay')}) on dense layers, row-wise "
                         f"{cfg.get('row_optimizer')} lr {cfg.get('row_lr')} on the tables, batch "
                         f"{cfg.get('batch_size')}, no dropout, BCE; at most {cfg.get('max_epochs')} epochs, "
                         f"patience {cfg.get('patience')}, best weights restored |")
    matched = next((r["settings"]["train"] for r in rows if r.get("optim") == "matched"), None)
    if matched is not None:
        lines.append(f"| ours (optim matched) | dnn, deepfm | the sizes above; RecBole's optimisation of the paired "
                     f"model: Adam (row-wise {matched['row_optimizer']} on the tables) at RecBole's lr (FNN's for "
                     f"dnn, DeepFM's for deepfm), weight decay {matched['weight_decay']}, batch "
                     f"{matched['batch_size']}, no dropout; patience {matched['patience']} |")
    lines += ["", "## Results (test split)", "",
              "| side | model | optim | history | seed | test AUC | log-loss | epochs run (best) | converged | seconds "
              "| rows/s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['side']} | {r['model']} | {_optim(r)} | {r.get('history', 0)} | "
                     f"{r['seed']} | {r['auc']:.4f} | "
                     f"{r['logloss']:.4f} | {r['epochs_run']} ({r['best_epoch']}) | "
                     f"{'yes' if r['converged'] else 'no'} | {r['seconds']:,.0f} | {r['rows_per_s']:,.0f} |")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["side"], r["model"], _optim(r), r.get("history", 0)), []).append(r)
    lines += ["", "Mean over seeds (± standard deviation where there are several):", "",
              "| side | model | optim | history | seeds | test AUC | log-loss | published AUC |",
              "|---|---|---|---|---|---|---|---|"]
    for (side, model, optim, hist), rs in groups.items():
        pub = result["peer_models"].get(model, {}).get("published_auc", "") if side == "recbole" else ""
        lines.append(f"| {side} | {model} | {optim} | {hist} | {len(rs)} | {_mean(rs, 'auc')} | "
                     f"{_mean(rs, 'logloss')} | {pub} |")
    lines += ["", f"## Target: our AUC within {result['target']} of RecBole's own", ""]
    for pr in result["pairs"]:
        lines.append(f"- {pr['ours']} (optim {pr.get('optim', 'ours')}) vs {pr['recbole']}, seed {pr['seed']}: "
                     f"{pr['auc_gap']:+.4f} → "
                     f"{'met' if pr['target_met'] else 'not met'}"
                     f"{'' if pr['both_converged'] else ' (not both converged)'}.")
    by_pair: dict[tuple, list[dict]] = {}
    for pr in result["pairs"]:
        by_pair.setdefault((pr["ours"], pr.get("optim", "ours"), pr["recbole"]), []).append(pr)
    for (ours, optim, peer), prs in by_pair.items():
        lines.append(f"- Over {len(prs)} seed(s), {ours} (optim {optim}) vs {peer}: mean gap "
                     f"{np.mean([x['auc_gap'] for x in prs]):+.4f}, target met in {sum(x['target_met'] for x in prs)}"
                     f" of {len(prs)}.")
    if not result["pairs"]:
        lines.append("- No pair was run.")
    lines += ["", "## What differs between the two sides", "",
              "- Loss: the same (binary cross-entropy on the logit). Data: the same rows; RecBole gives ids seen only "
              "in valid/test their own (untrained) rows, ours maps them to OOV.",
              "- Optimizer: RecBole Adam on every parameter, no weight decay, batch 4096; ours AdamW with weight "
              "decay on the dense layers and a row-wise optimizer on the tables (docs/online-training.md), batch "
              f"{cfg.get('batch_size')}.",
              "- Architecture: RecBole's FNN is one tanh MLP on the 7 concatenated field embeddings; our DNN runs "
              "per-group input MLPs (item, user/other, query, behaviours) then a ReLU MLP. RecBole's DeepFM and ours "
              "are both LR + FM + MLP, ours over 15 fields (4 constant, 3 empty behaviour fields without history).",
              "- Initialisation: RecBole xavier-normal (embeddings and linear layers); ours normal(0, 0.05) "
              "embeddings and torch's default linear layers.",
              "- Regularisation: RecBole dropout 0.1, no weight decay; ours no dropout, weight decay "
              f"{cfg.get('weight_decay')}.",
              "- Early stopping: RecBole stops after stopping_step + 1 validations without a new best (a tie "
              f"counts as one); ours after {cfg.get('patience')} without a strictly better one. Both keep the best "
              "epoch's weights for the test.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m streamrank.bench.recbole_peer") -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    check_peer(args.peer_python)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    p = build_split(args)
    print(f"protocol (b): {len(p.train):,} / {len(p.valid):,} / {len(p.test):,} rows", flush=True)
    head = cli.result_head(args, " ".join([prog, *argv]))
    store_root = args.parts or default_root(args.out, "recbole-peer", args.dataset_label, args.quick)
    split_key = {k: getattr(args, k) for k in ("dataset_label", "data_seed", "quick")}
    peer_store = PartStore(store_root, split_key | {k: getattr(args, k) for k in ("peer_epochs", "stopping_step")}
                           | {"models": PEER_MODELS})
    our_store = PartStore(store_root, split_key | {k: getattr(args, k) for k in ("epochs", "patience", "lr",
                                                                                  "batch_size")} | {"sizes": OUR_SIZES})
    matched_store = PartStore(store_root, split_key | {k: getattr(args, k) for k in ("epochs", "patience")}
                              | {"sizes": OUR_SIZES, "matched": MATCHED, "models": PEER_MODELS})
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="recbole-peer-") as tmp:
        name = f"{args.dataset_label}-peer"
        sizes = export_atomic(p, Path(tmp), name)
        for model in args.peer_models:
            for seed in args.seed_list:
                rows.append(_resumable(peer_store, ("recbole", model, seed),
                                       lambda m=model, s=seed: run_peer(args, m, s, Path(tmp), name, sizes)))
    jobs = [(preset, 0, "ours") for preset in args.models]
    jobs += [(preset, 0, "matched") for preset in args.models if args.matched and preset in PAIRS]
    jobs += [(preset, args.history, "ours") for preset in args.history_models]
    worlds: dict[int, tuple[Tensorizer, dict[str, TensorDataset]]] = {}
    for preset, hist, optim in jobs:
        for seed in args.seed_list[: args.history_seeds] if hist else args.seed_list:
            def job(pr: str = preset, h: int = hist, s: int = seed, o: str = optim) -> dict:
                if h not in worlds:
                    worlds.clear()
                    worlds[h] = tensorise(p, h)
                return run_ours(args, pr, s, *worlds[h], history=h, optim=o)
            store = our_store if optim == "ours" else matched_store
            rows.append(_resumable(store, ("streamrank", f"{preset}-h{hist}{'' if optim == 'ours' else '-matched'}",
                                           seed), job))
    features = {"recbole": next((r["fields"] for r in rows if r["side"] == "recbole"), None),
                "streamrank": our_features(Tensorizer(p.make_spec(0, 1)))}
    result = {**head, "protocol": p.stats, "split_sizes": sizes, "features": features, "peer_models": PEER_MODELS,
              "our_sizes": OUR_SIZES, "target": TARGET, "rows": rows, "pairs": pair_rows(rows),
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    stem = cli.write_result(args, "recbole-peer", result, render)
    print(f"wrote {stem}.md and .json in {result['wall_seconds']} s")
    return 0


def _resumable(store: PartStore, key: tuple[str, str, int], run: object) -> dict:
    """The stored record of (side, model, seed) if this store has one, else `run()`'s, saved at once."""
    fid = fit_id(key[0], key[1], f"seed{key[2]}")
    part = store.load(fid)
    if part is not None:
        print(f"{fid}: kept from {store.root}", flush=True)
        return part.meta
    print(f"{fid}: running", flush=True)
    record = run()  # type: ignore[operator]
    store.save(fid, Part(record))
    print(f"{fid}: test AUC {record['auc']:.4f}, log-loss {record['logloss']:.4f}, {record['epochs_run']} epochs "
          f"(best {record['best_epoch']}), {record['seconds']} s", flush=True)
    return record


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    a = argparse.ArgumentParser(prog="python -m streamrank.bench.recbole_peer", description=__doc__.split("\n")[0])
    cli.add_common(a, quick_help="tiny subsample (4,000 / 1,000 / 1,000 rows of ML-100K), 1 epoch: a smoke test")
    a.set_defaults(seeds=1)
    a.add_argument("--models", default="dnn,deepfm", help="our presets, no history (paired with FNN, DeepFM)")
    a.add_argument("--peer-models", default="FNN,DeepFM", help="RecBole's models ('' = skip)")
    a.add_argument("--no-matched", dest="matched", action="store_false",
                   help="skip the rows of our models trained with RecBole's optimisation settings")
    a.add_argument("--history-models", default="", help="our presets also run with --history behaviours (e.g. din)")
    a.add_argument("--history", type=int, default=50)
    a.add_argument("--history-seeds", type=int, default=1, help="the rows with history: the first N seeds only")
    a.add_argument("--epochs", type=int, default=100, help="our most epochs (early stopping ends the fit)")
    a.add_argument("--patience", type=int, default=2)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--batch-size", type=int, default=1024)
    a.add_argument("--peer-epochs", type=int, default=500, help="RecBole's most epochs (its published setting)")
    a.add_argument("--stopping-step", type=int, default=10, help="RecBole's early stopping (its default)")
    a.add_argument("--peer-python", type=Path, default=PEER_PYTHON, help="python of the peer environment")
    a.add_argument("--nice", type=int, default=5, help="niceness of the RecBole processes")
    a.add_argument("--parts", type=Path, default=None, help="where each result is kept (default <out>/parts/...)")
    args = a.parse_args(argv)
    if args.quick:
        args.epochs = args.peer_epochs = 1
    cli.check_counts(args, ("seeds", "epochs", "peer_epochs", "batch_size", "history", "patience"), ("stopping_step",))
    args.models = cli.split_models(args.models, OUR_SIZES, "presets")
    args.history_models = cli.split_models(args.history_models, OUR_SIZES, "presets")
    args.peer_models = cli.split_models(args.peer_models, PEER_MODELS, "RecBole models")
    cli.finish(args)
    if cli.is_path(args.dataset):
        raise SystemExit("error: protocol (b) needs MovieLens star ratings (--dataset ml-100k or ml-1m)")
    return args


if __name__ == "__main__":
    raise SystemExit(main())
