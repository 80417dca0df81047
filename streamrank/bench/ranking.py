"""`streamrank bench ranking`: the AW-MoE paper's tables on MovieLens, over several seeds.

Runs every ranking model on protocol (a) (chronological leave-last-out, popularity-sampled sessions) and
protocol (b) (RecBole's ML-1M context-aware benchmark), then writes <out>/ranking-<dataset>.md
and .json: Table II (five models, paired p-values against the row above), Tables III/IV (long-tail users:
few behaviours; elderly users), Table VI (gate ablation), gate variants, and the RecBole table beside
RecBole's published numbers. `--quick` is a small CI run; `--gate-once` times request scoring instead.

    python -m streamrank.bench.ranking --dataset ml-1m --seeds 3 --out docs/benchmarks  # the full benchmark
    python -m streamrank.bench.ranking --quick                          # CI smoke run (ML-100K)
    python -m streamrank.bench.ranking --gate-once                      # serving-cost table
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from streamrank.bench import movielens_cli as cli
from streamrank.bench.parallel import effective_workers
from streamrank.bench.parts import Part, PartStore, config_tag, default_root, fit_id, run_resumable
from streamrank.bench.ranking_claims import cl_gain_contrasts, claims
from streamrank.bench.ranking_report import ABLATION, MAIN, SESSION_METRICS, VARIANTS, render
from streamrank.data.movielens import MovieLens
from streamrank.data.protocols import ExampleSet, RankingProtocol, chronological_protocol, recbole_protocol
from streamrank.features import Tensorizer
from streamrank.models.ranking import DISPLAY_NAMES, RankingModel, build_model, make_config
from streamrank.train.metrics import evaluate, paired_test, session_metrics
from streamrank.train.offline import TrainConfig, fit, pick_device, predict, set_seed
from streamrank.train.tensor_data import TensorDataset

FULL_SIZES = {"emb_dim": 16, "hidden_dim": 32, "input_mlp_hidden": (64,), "expert_hidden": (200, 80),
              "au_hidden": (80, 40), "gate_unit_hidden": (80, 40), "category_gate_hidden": (80,)}
QUICK_SIZES = {"emb_dim": 8, "hidden_dim": 16, "input_mlp_hidden": (), "expert_hidden": (64, 32),
               "au_hidden": (32, 16), "gate_unit_hidden": (32, 16), "category_gate_hidden": (32,)}
# Relative cost of one training step (measured on ML-1M, T = 50): the pool starts the slowest fits first.
_COST = {"aw_moe_cl": 0, "aw_moe": 1, "aw_moe_gu": 2, "aw_moe_au": 2, "aw_moe_base": 3, "din": 4,
         "category_moe": 4, "dnn": 5}


@dataclass
class Outcome:
    """Results of one run key over seeds: summary metrics per subset and seed-averaged session arrays."""

    metrics: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # subset -> per-seed metrics
    sessions: dict[str, list[np.ndarray]] = field(default_factory=dict)  # "subset/metric" -> per seed
    fits: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """One fit: protocol ("chronological" or "recbole"), run key, preset, overrides, model seed."""

    protocol: str
    key: str
    preset: str
    seed: int
    overrides: tuple[tuple[str, object], ...] = ()


# Protocols and feature specs are built once in the parent and inherited by forked workers (copy-on-write).
_WORLD: dict = {}


def _runs(args: argparse.Namespace) -> dict[str, tuple[str, dict, list[int]]]:
    """Run key -> (preset, overrides, seeds) for protocol (a)."""
    runs = {m: (m, {}, args.seed_list) for m in args.models}
    if not args.no_ablation:
        extra = {m: (m, {}) for m in ABLATION} | VARIANTS
        runs |= {k: (m, o, args.ablation_seed_list) for k, (m, o) in extra.items() if k not in runs}
    return runs


def _subsets(p: RankingProtocol, longtail_quantile: float, elderly_age: int) -> tuple[dict[str, np.ndarray], int]:
    """Row masks of the test split: full, long-tail-1 (few behaviours), long-tail-2 (elderly)."""
    t = p.test
    threshold = int(np.quantile(t.end[t.labels > 0.5], longtail_quantile))
    masks = {"full": np.ones(len(t), bool), "longtail_few": t.end <= threshold}
    ages = p.user_ages(t)
    if (ages >= 0).any():  # an event log has no user profiles, hence no elderly users
        masks["longtail_elderly"] = ages >= elderly_age
    return masks, threshold


def _score_subsets(out: Outcome, probs: np.ndarray, split: ExampleSet, masks: dict[str, np.ndarray],
                   prefix: str = "") -> None:
    for name, mask in masks.items():
        key = prefix + name
        res = evaluate(probs[mask], split.labels[mask], split.sessions[mask])
        out.metrics.setdefault(key, []).append(res)
        sm = session_metrics(probs[mask], split.labels[mask], split.sessions[mask])
        for metric, arr in zip(SESSION_METRICS, (sm.auc, sm.auc_at_k, sm.ndcg, sm.ndcg_at_k), strict=True):
            out.sessions.setdefault(f"{key}/{metric}", []).append(arr)


def _build_world(ml: MovieLens, args: argparse.Namespace) -> None:
    """Both protocols, their tensorizers and the test subsets, built once before the fits fork (the
    tensors are made by `_tensorise_world` once it is known which fits must run)."""
    p = chronological_protocol(ml, n_eval_negatives=args.negatives, seed=args.data_seed, max_hist=args.max_seq_len)
    if args.max_train_examples and len(p.train) > args.max_train_examples:
        p.train = p.train.subset(cli.sample_rows(len(p.train), args.max_train_examples, args.data_seed))
    sessions = np.unique(p.valid.sessions)
    if args.max_valid_sessions and len(sessions) > args.max_valid_sessions:
        kept = sessions[cli.sample_rows(len(sessions), args.max_valid_sessions, args.data_seed + 1)]
        p.valid = p.valid.subset(np.flatnonzero(np.isin(p.valid.sessions, kept)))
    masks, threshold = _subsets(p, args.longtail_quantile, args.elderly_age)
    tz = Tensorizer(p.make_spec(args.max_seq_len, args.min_item_count))
    capped = {cap: p.test.with_history_cap(cap) for cap in args.simulated_history}
    _WORLD["chronological"] = {"protocol": p, "tz": tz, "masks": masks, "threshold": threshold, "capped": capped,
                               "splits": {"train": p.train, "valid": p.valid, "test": p.test,
                                          **{f"capped{cap}": c for cap, c in capped.items()}}}
    if args.recbole_models:
        rb = recbole_protocol(ml, seed=args.data_seed, max_hist=args.max_seq_len)
        rtz = Tensorizer(rb.make_spec(args.max_seq_len, 1))
        _WORLD["recbole"] = {"protocol": rb, "tz": rtz, "splits": {"train": rb.train, "valid": rb.valid,
                                                                    "test": rb.test}}


def _tensorise_world(protocols: set[str]) -> None:
    """The splits of the protocols that still have fits to run, tensorised (a report from stored parts
    alone needs none)."""
    for name in protocols:
        world = _WORLD[name]
        world["tensors"] = _tensorise(world["tz"], **world["splits"])


def _tensorise(tz: Tensorizer, **splits: ExampleSet) -> dict[str, TensorDataset]:
    """Every split tensorised once, before the fits fork (each fit's epochs are then tensor work only)."""
    t0 = time.perf_counter()
    out = {name: TensorDataset.build(split, tz) for name, split in splits.items()}
    gib = sum(d.nbytes for d in out.values()) / 2**30
    print(f"tensorised {', '.join(f'{k} {len(v):,}' for k, v in out.items())} rows "
          f"({gib:.2f} GiB) in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def _config_overrides(job: Job, args: argparse.Namespace, sizes: dict) -> dict:
    """The RankingConfig overrides of a fit: sizes, then the context, `--set` and the run key's own."""
    # MovieLens has no query: the gate pairs behaviours with the target item (the paper's Amazon setting)
    return {**sizes, "gate_context": "target", **args.overrides, **dict(job.overrides)}


def _config(job: Job, args: argparse.Namespace, sizes: dict) -> dict:
    """A fit's whole model configuration (what its stored part is keyed on)."""
    return make_config(job.preset, **_config_overrides(job, args, sizes)).to_dict()


def _fit_id(job: Job, args: argparse.Namespace, sizes: dict) -> str:
    """A fit's part id: protocol, run key, seed and a digest of its model configuration."""
    return fit_id(job.protocol, job.key, f"seed{job.seed}", config_tag(_config(job, args, sizes)))


def run_job(job: Job, args: argparse.Namespace, sizes: dict) -> Part:
    """Trains one fit and scores it on every test subset, in the worker; returns its part (`bench.parts`)."""
    world = _WORLD[job.protocol]
    p, tz, data = world["protocol"], world["tz"], world["tensors"]
    set_seed(job.seed)
    model = build_model(job.preset, tz.spec, **_config_overrides(job, args, sizes))
    cfg = TrainConfig(lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs, patience=args.patience,
                      seed=job.seed, valid_metric="session_auc" if p.valid.sessions is not None else "auc",
                      progress=False, device=args.device, max_steps_per_epoch=args.max_steps_per_epoch,
                      **cli.table_config(args),
                      checkpoint=str(args.part_store.checkpoint(_fit_id(job, args, sizes))))
    res = fit(model, tz, data["train"], data["valid"], cfg, on_epoch=partial(cli.log_epoch, f"{job.key}/{job.seed}"))
    dev = pick_device(args.device)
    out = Outcome()
    probs = predict(model, tz, data["test"], device=dev)
    if job.protocol == "chronological":
        _score_subsets(out, probs, p.test, world["masks"])
        for cap, split in world["capped"].items():  # the long tail as the paper defines it: short histories
            scores = predict(model, tz, data[f"capped{cap}"], device=dev)
            _score_subsets(out, scores, split, {"full": world["masks"]["full"]}, f"capped{cap}_")
    else:
        out.metrics["test"] = [evaluate(probs, p.test.labels)]
    info = res.convergence() | {"seed": job.seed, "best_valid": res.best_valid, "max_epochs": args.epochs,
                                "params": model.describe()["params"],
                                "train_losses": [{k: round(v, 5) for k, v in h.items() if k.startswith("loss_")}
                                                 for h in res.history]}
    if job.protocol == "chronological":
        info["gate"] = gate_statistics(model, data["test"], dev)
    return Part({"info": info, "metrics": {k: v[0] for k, v in out.metrics.items()}},
                {k: v[0].astype(np.float32) for k, v in out.sessions.items()}, res.stopped_at())


def _jobs(args: argparse.Namespace) -> list[Job]:
    jobs = [Job("chronological", key, preset, seed, tuple(sorted(over.items())))
            for key, (preset, over, seeds) in _runs(args).items() for seed in seeds]
    jobs += [Job("recbole", name, name, seed) for name in args.recbole_models for seed in args.seed_list]
    if not args.run_first:  # slowest first: the pool does not end waiting on one slow fit
        return sorted(jobs, key=lambda j: (j.protocol == "recbole", _COST.get(j.preset, 3)))
    # the named run keys first, the others cheapest first: finished fits pile up early in a session
    # that may end before the whole run does (the unfinished ones resume from their epoch checkpoints)
    return sorted(jobs, key=lambda j: (j.key not in args.run_first, -_COST.get(j.preset, 3)))


@torch.no_grad()
def gate_statistics(model: torch.nn.Module, source: TensorDataset, device: torch.device,
                    rows: int = 20_000) -> dict[str, float] | None:
    """How a gated model mixes its experts on the first `rows` test rows: the mean L2 norm of the raw gate
    vectors g, and of w = softmax(g) the mean entropy (as a share of log K: 1 = uniform, 0 = one expert) and
    the mean largest weight. CL's InfoNCE on dot products can only grow by sharpening g: this shows whether
    it did. None for a model without a gate."""
    if not isinstance(model, RankingModel) or model.gate is None:
        return None
    model.eval()
    norms, entropy, top = [], [], []
    for start in range(0, min(rows, len(source)), 4096):
        idx = np.arange(start, min(start + 4096, rows, len(source)))
        g = model(source.batch(idx, device)).gate
        w = torch.softmax(g, dim=-1)
        norms.append(g.norm(dim=-1))
        entropy.append(-(w * w.clamp_min(1e-12).log()).sum(-1) / math.log(g.shape[-1]))
        top.append(w.max(-1).values)
    return {"g_norm": float(torch.cat(norms).mean()), "entropy_share": float(torch.cat(entropy).mean()),
            "top_weight": float(torch.cat(top).mean())}


def fit_settings(args: argparse.Namespace, sizes: dict) -> dict:
    """The settings that change a fit's result: parts (`bench.parts`) are reused only under equal ones."""
    keys = ("dataset_label", "data_seed", "quick", "epochs", "patience", "lr", "batch_size", "max_seq_len",
            "negatives", "min_item_count", "max_train_examples", "max_steps_per_epoch", "longtail_quantile",
            "elderly_age", "simulated_history", "max_valid_sessions", "overrides")
    return {k: getattr(args, k) for k in keys} | {"sizes": sizes} | cli.table_settings(args)


def _parts_of(jobs: list[Job], parts: list[Part], protocol: str, key: str) -> list[Part]:
    """The parts of one run key, in seed order."""
    pairs = sorted((j.seed, k) for k, j in enumerate(jobs) if j.protocol == protocol and j.key == key)
    return [parts[k] for _, k in pairs]


def chronological_section(args: argparse.Namespace, jobs: list[Job], parts: list[Part]) -> dict:
    """Protocol (a): metrics of every run key over its seeds and the p-values; the JSON-ready section."""
    w = _WORLD["chronological"]
    p, masks, capped = w["protocol"], w["masks"], w["capped"]
    outcomes = {"popularity": Outcome()}
    _score_subsets(outcomes["popularity"], p.popularity_scores(p.test), p.test, masks)
    for cap, split in capped.items():
        _score_subsets(outcomes["popularity"], p.popularity_scores(split), split, {"full": masks["full"]},
                       f"capped{cap}_")
    for key in _runs(args):
        out = outcomes.setdefault(key, Outcome())
        for part in _parts_of(jobs, parts, "chronological", key):
            for subset, res in part.meta["metrics"].items():
                out.metrics.setdefault(subset, []).append(res)
            for name, arr in part.arrays.items():
                out.sessions.setdefault(name, []).append(arr)
            out.fits.append(part.meta["info"])
    section = {"stats": {**p.stats, "train_examples_used": len(p.train),
                      "valid_sessions_used": len(np.unique(p.valid.sessions)),
                      "longtail_threshold": w["threshold"],
                      "longtail_sessions": int(masks["longtail_few"][p.test.labels > 0.5].sum()),
                      "elderly_sessions": int(masks.get("longtail_elderly", np.zeros(len(p.test), bool))
                                              [p.test.labels > 0.5].sum()),
                      "vocab": w["tz"].spec.vocab_sizes()},
            "runs": {k: (outcomes[k].metrics, outcomes[k].fits) for k in outcomes},
            "pvalues": _pvalues(outcomes, [["popularity", *args.models], ["din", "aw_moe"], list(ABLATION),
                                           *(["aw_moe", v] for v in VARIANTS)])}
    if outcomes.get("aw_moe_cl", Outcome()).sessions and outcomes.get("aw_moe", Outcome()).sessions:
        tail = np.isin(np.unique(p.test.sessions), np.unique(p.test.sessions[masks["longtail_few"]]))
        section["cl_gain_vs_full"] = cl_gain_contrasts(outcomes["aw_moe_cl"].sessions, outcomes["aw_moe"].sessions,
                                                       tail, args.simulated_history)
    section["claims"] = claims(section)
    return section


def _pvalues(outcomes: dict[str, Outcome], tables: list[list[str]]) -> dict:
    """Paired t-test across sessions (seed-averaged per-session metrics) of each row vs the row above."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for rows in tables:
        for above, row in itertools.pairwise(rows):
            if above not in outcomes or row not in outcomes:
                continue
            for key, arrs in outcomes[row].sessions.items():
                mean_row = np.nanmean(np.stack(arrs), 0)
                mean_above = np.nanmean(np.stack(outcomes[above].sessions[key]), 0)
                diff, p = paired_test(mean_row, mean_above)
                out.setdefault(f"{row}|{above}", {})[key] = {"diff": diff, "p": p}
    return out


def recbole_section(args: argparse.Namespace, jobs: list[Job], parts: list[Part]) -> dict:
    """Protocol (b): RecBole's context-aware ML-1M setting; AUC and log-loss on the random test split."""
    runs = {name: [{**part.meta["metrics"]["test"], **part.meta["info"]}
                   for part in _parts_of(jobs, parts, "recbole", name)] for name in args.recbole_models}
    return {"stats": _WORLD["recbole"]["protocol"].stats, "runs": runs}


def write_gate_once(out_dir: Path, command: str, repeats: int = 100) -> int:
    """Time request scoring (200 candidates x 50 behaviours), print the table, write the markdown page."""
    from streamrank.models.ranking.serving_cost import gate_once_rows

    threads = torch.get_num_threads()
    rows = gate_once_rows(200, 50, repeats=repeats, threads=threads, emb_dim=16, hidden_dim=32)
    table = ["| case | p50 ms | p90 ms |", "|---|---|---|",
             *(f"| {x['case']} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} |" for x in rows)]
    p50 = [x["p50_ms"] for x in rows]  # order: encode, DIN, search, search naive, expanded, rec, rec naive
    ratios = [f"- Gate once (search, batched vs one user row per candidate): {p50[4] / p50[2]:.1f}x faster.",
              f"- Decomposed vs concatenated pair units: {p50[3] / p50[2]:.2f}x (search), "
              f"{p50[6] / p50[5]:.2f}x (recommendation).",
              f"- Recommendation setting (gate per candidate) costs {p50[5] / p50[2]:.1f}x the search setting."]
    table += ["", *ratios]
    print("\n".join(table))
    text = ["# Gate-once and pair-unit decomposition: scoring one request", "",
            f"Command: `{command}`  ", f"Date: {dt.date.today()}; {platform.processor() or platform.machine()}, "
            f"torch {torch.__version__}, {threads} thread(s), CPU, eager mode; {repeats} timed calls per case "
            "(interleaved round robin, after 5 warm-up calls). One request: 200 candidates x 50 behaviours, "
            "embedding 16, hidden d = 32, experts [200, 80], activation/gate units [80, 40].", "", *table, "",
            "- *gate once*: the query-context gate and the behaviour MLPs run on the request's single user row; "
            "the 'one user row per candidate' case is the same model fed the request expanded C times.",
            "- *decomposed units*: W[h, v, h-v, h⊙v] + b = (W1+W3+W4·diag(v)) h + ((W2-W3) v + b): a d x H matrix "
            "per candidate, then one batched matmul with the unexpanded behaviour vectors; 'on the "
            "concatenation' builds [h, v, h-v, h⊙v] for every (candidate, behaviour) pair.",
            "- The machine is shared with other jobs: absolute numbers are noisy, the ratios are the result.", ""]
    (out_dir / "ranking-gate-once.md").write_text("\n".join(text))
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    a = argparse.ArgumentParser(prog="streamrank bench ranking", description=__doc__.split("\n")[0])
    cli.add_common(a, quick_help="CI mode: ML-100K, 1 seed, 1 epoch, small models")
    a.add_argument("--models", default=",".join(MAIN), help="Table II rows, in order")
    a.add_argument("--recbole-models", default="dnn,din", help="models for the RecBole table ('' = skip)")
    a.add_argument("--no-ablation", action="store_true", help="skip Table VI and the gate variants")
    a.add_argument("--epochs", type=int, default=10)
    a.add_argument("--patience", type=int, default=2)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--batch-size", type=int, default=1024)
    a.add_argument("--max-seq-len", type=int, default=50)
    a.add_argument("--negatives", type=int, default=50, help="popularity-sampled negatives per test session")
    a.add_argument("--min-item-count", type=int, default=2, help="rarer training items share the OOV row")
    a.add_argument("--max-train-examples", type=int, default=0, help="subsample training rows (0 = all)")
    cli.add_table_optimizer(a)
    a.add_argument("--max-steps-per-epoch", type=int, default=None)
    a.add_argument("--longtail-quantile", type=float, default=0.1)
    a.add_argument("--elderly-age", type=int, default=50)
    a.add_argument("--simulated-history", default="1,3,5,10",
                   help="history caps of the simulated long tail (every test history cut to its last K behaviours)")
    a.add_argument("--max-valid-sessions", type=int, default=0,
                   help="early-stop on this many random validation sessions (0 = all)")
    a.add_argument("--ablation-seeds", type=int, default=0, help="seeds of the ablation rows (0 = --seeds)")
    a.add_argument("--workers", type=int, default=2, help="fits run in parallel, one process each (CPU only)")
    a.add_argument("--threads", type=int, default=0,
                   help="torch threads per fit (0 = torch default with 1 worker, 1 with several)")
    a.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a RankingConfig field for every model (e.g. cl_weight=0.01); repeatable")
    a.add_argument("--gate-once", action="store_true", help="time request scoring (200 x 50) instead")
    a.add_argument("--run-first", default="", help="run keys to start first; the other fits then go cheapest "
                   "first (default: slowest first)")
    a.add_argument("--parts", type=Path, default=None,
                   help="where each fit's result is kept, so a rerun resumes (default <out>/parts/ranking-<dataset>)")
    args = a.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.max_seq_len, args.batch_size = 1, 1, 20, 256
        args.max_train_examples = args.max_train_examples or 100_000
    cli.check_counts(args, ("seeds", "epochs", "batch_size", "max_seq_len", "negatives", "workers"),
                 ("max_train_examples", "max_valid_sessions", "ablation_seeds", "threads"))
    args.models = cli.split_models(args.models, DISPLAY_NAMES, "ranking presets")
    args.recbole_models = cli.split_models(args.recbole_models, DISPLAY_NAMES, "ranking presets")
    args.ablation_seed_list = list(range(args.first_seed, args.first_seed + (args.ablation_seeds or args.seeds)))
    args.overrides = cli.parse_overrides(args.set)
    args.run_first = [k for k in args.run_first.split(",") if k]
    args.simulated_history = cli.parse_caps(args.simulated_history, "--simulated-history")
    cli.finish(args)
    if args.recbole_models and cli.is_path(args.dataset):
        print("protocol (b) (RecBole's ML-1M benchmark) needs star ratings: skipped for an event log", flush=True)
        args.recbole_models = []
    return args


def main(argv: list[str] | None = None, prog: str = "streamrank bench ranking") -> int:
    """Entry point of `streamrank bench ranking`; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # the gate-once timing and the single-process fits
    command = " ".join([prog, *argv])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.gate_once:
        return write_gate_once(args.out, command.strip())
    t0 = time.perf_counter()
    _build_world(cli.load(args), args)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    workers = effective_workers(args.workers, args.device)
    threads = args.threads or (1 if workers > 1 else torch.get_num_threads())
    jobs = _jobs(args)
    root = args.parts or default_root(args.out, "ranking", cli.parts_label(args), args.quick)
    store = PartStore(root, fit_settings(args, sizes), cap_key="epochs")
    args.part_store = store  # the workers' fits keep their epoch checkpoints where it says
    fid = partial(_fit_id, args=args, sizes=sizes)
    parts = run_resumable(jobs, store, partial(run_job, args=args, sizes=sizes), workers, threads, args.device,
                          fid, progress=not args.no_progress,
                          prepare=lambda todo: _tensorise_world({j.protocol for j in todo}))
    result = {**cli.result_head(args, command, threads=threads, workers=workers), "model_sizes": sizes,
              "chronological": chronological_section(args, jobs, parts)}
    if args.recbole_models:
        result["recbole"] = recbole_section(args, jobs, parts)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    stem = cli.write_result(args, "ranking", result, render)
    print(f"wrote {stem}.md and .json in {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m streamrank.bench.ranking"))
