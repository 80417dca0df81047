"""`streamrank bench ranking`: the AW-MoE paper's tables on MovieLens, over several seeds.

Runs every ranking model on protocol (a) (chronological leave-last-out, popularity-sampled sessions) and
protocol (b) (RecBole's ML-1M context-aware benchmark), then writes docs/benchmarks/ranking-<dataset>.md
and .json: Table II (five models, paired p-values against the row above), Tables III/IV (long-tail users:
few behaviours; elderly users), Table VI (gate ablation), gate variants, and the RecBole table beside
RecBole's published numbers. `--quick` is a small CI run; `--gate-once` times request scoring instead.

    python -m streamrank.bench.ranking --dataset ml-1m --seeds 3      # the full benchmark
    python -m streamrank.bench.ranking --quick                          # CI smoke run (ML-100K)
    python -m streamrank.bench.ranking --gate-once                      # serving-cost table
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from streamrank.data.movielens import MovieLens, load_movielens
from streamrank.data.protocols import ExampleSet, RankingProtocol, chronological_protocol, recbole_protocol
from streamrank.features import Tensorizer
from streamrank.models.ranking import DISPLAY_NAMES, build_model
from streamrank.train.metrics import evaluate, paired_test, session_metrics
from streamrank.train.offline import TrainConfig, fit, pick_device, predict, set_seed

MAIN = ("dnn", "din", "category_moe", "aw_moe", "aw_moe_cl")
ABLATION = ("aw_moe_base", "aw_moe_gu", "aw_moe_au", "aw_moe")
VARIANTS = {"aw_moe[gate_norm=none]": ("aw_moe", {"gate_norm": "none"}),
            "aw_moe[gate=user only]": ("aw_moe", {"gate_context": "query"})}
SESSION_METRICS = ("session_auc", "auc@10", "ndcg", "ndcg@10")
FULL_SIZES = {"emb_dim": 16, "hidden_dim": 32, "input_mlp_hidden": (64,), "expert_hidden": (200, 80),
              "au_hidden": (80, 40), "gate_unit_hidden": (80, 40), "category_gate_hidden": (80,)}
QUICK_SIZES = {"emb_dim": 8, "hidden_dim": 16, "input_mlp_hidden": (), "expert_hidden": (64, 32),
               "au_hidden": (32, 16), "gate_unit_hidden": (32, 16), "category_gate_hidden": (32,)}


@dataclass
class Outcome:
    """Results of one run key over seeds: summary metrics per subset and seed-averaged session arrays."""

    metrics: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # subset -> per-seed metrics
    sessions: dict[str, list[np.ndarray]] = field(default_factory=dict)  # "subset/metric" -> per seed
    fits: list[dict] = field(default_factory=list)


def _runs(args: argparse.Namespace) -> dict[str, tuple[str, dict]]:
    """Run key -> (preset, overrides) for protocol (a)."""
    runs = {m: (m, {}) for m in args.models}
    if not args.no_ablation:
        runs.update({m: (m, {}) for m in ABLATION})
        runs.update(VARIANTS)
    return runs


def _subsets(p: RankingProtocol, longtail_quantile: float, elderly_age: int) -> tuple[dict[str, np.ndarray], int]:
    """Row masks of the test split: full, long-tail-1 (few behaviours), long-tail-2 (elderly)."""
    t = p.test
    threshold = int(np.quantile(t.end[t.labels > 0.5], longtail_quantile))
    return {"full": np.ones(len(t), bool), "longtail_few": t.end <= threshold,
            "longtail_elderly": p.user_ages(t) >= elderly_age}, threshold


def _score_subsets(out: Outcome, probs: np.ndarray, split: ExampleSet, masks: dict[str, np.ndarray],
                   prefix: str = "") -> None:
    for name, mask in masks.items():
        key = prefix + name
        res = evaluate(probs[mask], split.labels[mask], split.sessions[mask])
        out.metrics.setdefault(key, []).append(res)
        sm = session_metrics(probs[mask], split.labels[mask], split.sessions[mask])
        for metric, arr in zip(SESSION_METRICS, (sm.auc, sm.auc_at_k, sm.ndcg, sm.ndcg_at_k), strict=True):
            out.sessions.setdefault(f"{key}/{metric}", []).append(arr)


def _train_one(p: RankingProtocol, tz: Tensorizer, preset: str, overrides: dict, seed: int,
               args: argparse.Namespace, sizes: dict) -> tuple[torch.nn.Module, dict]:
    set_seed(seed)
    ctx = {"gate_context": "target"} | overrides  # MovieLens has no query: the paper's Amazon setting
    model = build_model(preset, tz.spec, **{**sizes, **ctx})
    cfg = TrainConfig(lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs, patience=args.patience,
                      seed=seed, valid_metric="session_auc" if p.valid.sessions is not None else "auc",
                      progress=not args.no_progress, device=args.device,
                      max_steps_per_epoch=args.max_steps_per_epoch)
    res = fit(model, tz, p.train, p.valid, cfg)
    return model, {"seed": seed, "best_epoch": res.best_epoch, "best_valid": res.best_valid,
                   "epochs": len(res.history), "seconds": round(res.seconds, 1),
                   "params": model.describe()["params"]}


def run_chronological(ml: MovieLens, args: argparse.Namespace, sizes: dict) -> dict:
    """Protocol (a): every run key over every seed; returns the JSON-ready section."""
    p = chronological_protocol(ml, n_eval_negatives=args.negatives, seed=args.data_seed, max_hist=args.max_seq_len)
    if args.max_train_examples and len(p.train) > args.max_train_examples:
        keep = np.sort(np.random.default_rng(args.data_seed).choice(len(p.train), args.max_train_examples, False))
        p.train = p.train.subset(keep)
    tz = Tensorizer(p.make_spec(args.max_seq_len, args.min_item_count))
    masks, threshold = _subsets(p, args.longtail_quantile, args.elderly_age)
    capped = p.test.with_history_cap(args.simulated_history)
    outcomes = {"popularity": Outcome()}
    _score_subsets(outcomes["popularity"], p.popularity_scores(p.test), p.test, masks)
    _score_subsets(outcomes["popularity"], p.popularity_scores(capped), capped, {"full": masks["full"]}, "capped_")
    runs = _runs(args)
    bar = tqdm(total=len(runs) * len(args.seed_list), desc="chronological", disable=args.no_progress)
    for key, (preset, overrides) in runs.items():
        out = outcomes.setdefault(key, Outcome())
        for seed in args.seed_list:
            bar.set_postfix(model=key, seed=seed)
            model, info = _train_one(p, tz, preset, overrides, seed, args, sizes)
            dev = pick_device(args.device)
            _score_subsets(out, predict(model, tz, p.test, device=dev), p.test, masks)
            _score_subsets(out, predict(model, tz, capped, device=dev), capped, {"full": masks["full"]}, "capped_")
            out.fits.append(info)
            bar.update()
    bar.close()
    return {"stats": {**p.stats, "longtail_threshold": threshold,
                      "longtail_sessions": int(masks["longtail_few"][p.test.labels > 0.5].sum()),
                      "elderly_sessions": int(masks["longtail_elderly"][p.test.labels > 0.5].sum()),
                      "vocab": tz.spec.vocab_sizes()},
            "runs": {k: (outcomes[k].metrics, outcomes[k].fits) for k in outcomes},
            "pvalues": _pvalues(outcomes, [["popularity", *args.models], list(ABLATION),
                                           *(["aw_moe", v] for v in VARIANTS)])}


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


def run_recbole(ml: MovieLens, args: argparse.Namespace, sizes: dict) -> dict:
    """Protocol (b): RecBole's context-aware ML-1M setting; AUC and log-loss on the random test split."""
    p = recbole_protocol(ml, seed=args.data_seed, max_hist=args.max_seq_len)
    tz = Tensorizer(p.make_spec(args.max_seq_len, 1))
    runs: dict[str, list] = {}
    for name in tqdm(args.recbole_models, desc="recbole protocol", disable=args.no_progress):
        for seed in args.seed_list:
            model, info = _train_one(p, tz, name, {}, seed, args, sizes)
            probs = predict(model, tz, p.test, device=pick_device(args.device))
            runs.setdefault(name, []).append({**evaluate(probs, p.test.labels), **info})
    return {"stats": p.stats, "runs": runs}


# ------------------------------------------------------------------------------------------ report
HEADERS = ("AUC", "AUC@10", "NDCG", "NDCG@10")
RECBOLE_PUBLISHED = {"dnn": ("FNN (DNN)", 0.8903), "din": ("DIN", 0.9299), "deepfm": ("DeepFM", 0.8997)}
PAPER = [("DNN", 0.8201, 0.6369, 0.8274, 0.7123), ("DIN", 0.8361, 0.6587, 0.8283, 0.7162),
         ("Category-MoE", 0.8388, 0.6624, 0.8299, 0.7253), ("AW-MoE", 0.8459, 0.6729, 0.8353, 0.7362),
         ("AW-MoE & CL", 0.8472, 0.6747, 0.8379, 0.7381)]


def _name(key: str) -> str:
    base, _, rest = key.partition("[")
    return DISPLAY_NAMES.get(base, base.capitalize()) + (f" [{rest}" if rest else "")


def _ms(values: list[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    mean = float(np.mean(vals))
    return f"{mean:.4f}" if len(vals) == 1 else f"{mean:.4f} ± {float(np.std(vals, ddof=1)):.4f}"


def _p(p: float | None) -> str:
    return "-" if p is None or not math.isfinite(p) else f"{p:.2e}"


def _table(sec: dict, rows: list[str], subset: str, against: str | None = None) -> list[str]:
    """Rows of metric means ± std over seeds, then p-values of each row against the row above (or against
    the row `against` when given)."""
    head = ["model", *HEADERS, *(f"p {h}" for h in HEADERS), "overall AUC", "log-loss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    prev = None
    for key in rows:
        if key not in sec["runs"] or subset not in sec["runs"][key][0]:
            continue
        per_seed = sec["runs"][key][0][subset]
        cells = [_name(key), *(_ms([m[k] for m in per_seed]) for k in SESSION_METRICS)]
        pv = sec["pvalues"].get(f"{key}|{against or prev}", {})
        cells += [_p(pv.get(f"{subset}/{k}", {}).get("p")) for k in SESSION_METRICS]
        cells += [_ms([m["auc"] for m in per_seed]), _ms([m["logloss"] for m in per_seed])]
        lines.append("| " + " | ".join(cells) + " |")
        prev = key
    return lines


def _cl_gain(sec: dict) -> list[str]:
    """AW-MoE & CL minus AW-MoE per subset: the paper's claim is a larger gain on long-tail users."""
    pv = sec["pvalues"].get("aw_moe_cl|aw_moe", {})
    lines = ["| test set | Δ AUC | p | Δ AUC@10 | p |", "|---|---|---|---|---|"]
    for subset, label in (("full", "full"), ("longtail_few", "long-tail 1 (few behaviours)"),
                          ("capped_full", "simulated long tail (history cut)"),
                          ("longtail_elderly", "long-tail 2 (elderly)")):
        a, b = pv.get(f"{subset}/session_auc"), pv.get(f"{subset}/auc@10")
        if a is None or b is None:
            continue
        lines.append(f"| {label} | {a['diff']:+.4f} | {_p(a['p'])} | {b['diff']:+.4f} | {_p(b['p'])} |")
    return lines


def _machine(m: dict) -> str:
    return f"{m['device']}, {m['threads']} torch thread(s), torch {m['torch']}, {m['platform']}"


def _fits(sec: dict) -> list[str]:
    lines = ["| run | params | epochs (best) per seed | train seconds per seed |", "|---|---|---|---|"]
    for key, (_, fits) in sec["runs"].items():
        if fits:
            ep = ", ".join(f"{f['epochs']} ({f['best_epoch']})" for f in fits)
            lines.append(f"| {_name(key)} | {fits[0]['params']:,} | {ep} | "
                         f"{', '.join(str(f['seconds']) for f in fits)} |")
    return lines


def render(r: dict) -> str:
    """The benchmark's markdown page from its result dict."""
    sec, st, s = r["chronological"], r["chronological"]["stats"], r["settings"]
    main = ["popularity", *s["models"]]
    out = [f"# Ranking benchmark: {r['dataset']}{' (quick)' if r['quick'] else ''}", "",
           f"Command: `{r['command']}`  ", f"Date: {dt.date.today()}; machine: {_machine(r['machine'])}; "
           f"wall time {r['wall_seconds']} s. Seeds: {s['seed_list']} (model seeds; the data split and sampled "
           f"negatives are fixed by data seed {s['data_seed']}). Values: mean ± std over seeds; p-values: "
           "paired t-test across test sessions (per-session metric averaged over seeds) against the row above.",
           "", "## Protocol (a): chronological leave-last-out", "",
           f"Per user the last rating is the test positive and the one before it the validation positive; "
           f"training uses all earlier ratings, each paired with one popularity-sampled negative (1:1). A test "
           f"session is the positive plus {st['eval_negatives_per_session']} popularity-sampled negatives the "
           f"user never rated. {st['users']} users, {st['items']} items, {st['train_examples']:,} training "
           f"examples ({st['train_positives']:,} positives), {st['test_sessions']} test sessions. "
           f"Gate context: the target item (no query in MovieLens, the paper's Amazon setting).", "",
           "### Table II: full test set", "", *_table(sec, main, "full"), "",
           f"### Table III: long-tail users 1 — at most {st['longtail_threshold']} behaviours at prediction time "
           f"({st['longtail_sessions']} sessions; the {s['longtail_quantile']:.0%} quantile: MovieLens users all "
           "have 20+ ratings)", "", *_table(sec, main, "longtail_few"), "",
           f"### Table III-b: simulated long tail — every test history cut to its last {s['simulated_history']} "
           "behaviours", "", *_table(sec, main, "capped_full"), "",
           f"### Table IV: long-tail users 2 — elderly (age ≥ {s['elderly_age']}; {st['elderly_sessions']} "
           "sessions)", "", *_table(sec, main, "longtail_elderly"), "",
           "### Contrastive learning gain (AW-MoE & CL - AW-MoE)", "", *_cl_gain(sec), ""]
    if not s["no_ablation"]:
        out += ["### Table VI: gate ablation", "", *_table(sec, list(ABLATION), "full"), "",
                "### Gate variants (not in the paper)", "",
                *_table(sec, ["aw_moe", *VARIANTS], "full", against="aw_moe"), "",
                "p-values against AW-MoE (softmax gate paired with the target item).",
                "`gate=user only`: the gate pairs behaviours with the (empty) query instead of the target, so it "
                "is computed once per request as in the paper's search deployment.", ""]
    if "recbole" in r:
        rb = r["recbole"]
        out += ["## Protocol (b): RecBole's ML-1M context-aware benchmark", "",
                f"Ratings of 3 dropped, label = rating ≥ 4, random 8:1:1 split ({rb['stats']}); AUC and log-loss "
                "on the test split. RecBole's published numbers come from its own implementations "
                "(embedding size 16, its own training settings).", "",
                "| model | test AUC | test log-loss | RecBole published AUC |", "|---|---|---|---|"]
        for name, runs in rb["runs"].items():
            pub = RECBOLE_PUBLISHED.get(name)
            ref = f"{pub[0]}: {pub[1]:.4f}" if pub and r["dataset"] == "ml-1m" else "-"
            out.append(f"| {_name(name)} | {_ms([x['auc'] for x in runs])} | "
                       f"{_ms([x['logloss'] for x in runs])} | {ref} |")
        out += ["", "RecBole also reports DeepFM 0.8997 (not run here).", ""]
    out += ["## The paper's figures (JD search, Amazon): compare orderings and gaps, not values", "",
            "| model | JD AUC | JD NDCG@10 | long-tail-1 AUC | Amazon AUC |", "|---|---|---|---|---|",
            *(f"| {m} | {a} | {b} | {c} | {d} |" for m, a, b, c, d in PAPER), "",
            "## Settings", "", f"Model sizes: `{r['model_sizes']}`  ",
            f"Training: AdamW lr {s['lr']}, batch {s['batch_size']}, up to {s['epochs']} epochs, early stopping "
            f"on validation (patience {s['patience']}), behaviours ≤ {s['max_seq_len']}, items seen fewer than "
            f"{s['min_item_count']} times in training share the OOV row.", "", *_fits(sec), ""]
    return "\n".join(out)


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
    a.add_argument("--dataset", default="ml-1m", choices=("ml-100k", "ml-1m"))
    a.add_argument("--seeds", type=int, default=3, help="model seeds 0..N-1 (data split fixed by --data-seed)")
    a.add_argument("--data-seed", type=int, default=0)
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
    a.add_argument("--max-steps-per-epoch", type=int, default=None)
    a.add_argument("--longtail-quantile", type=float, default=0.1)
    a.add_argument("--elderly-age", type=int, default=50)
    a.add_argument("--simulated-history", type=int, default=5, help="history cap of the simulated long tail")
    a.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    a.add_argument("--device", default=None, help="force a device (default: CUDA if available)")
    a.add_argument("--out", default=None, help="output folder (default docs/benchmarks, quick: var/benchmarks)")
    a.add_argument("--quick", action="store_true", help="CI mode: ML-100K, 1 seed, 1 epoch, small models")
    a.add_argument("--gate-once", action="store_true", help="time request scoring (200 x 50) instead")
    a.add_argument("--no-progress", action="store_true")
    args = a.parse_args(argv)
    if args.quick:
        args.dataset, args.seeds, args.epochs, args.max_seq_len, args.batch_size = "ml-100k", 1, 1, 20, 256
        args.max_train_examples = args.max_train_examples or 100_000
    args.models = [m for m in args.models.split(",") if m]
    args.recbole_models = [m for m in args.recbole_models.split(",") if m]
    args.seed_list = list(range(args.seeds))
    args.out = Path(args.out or ("var/benchmarks" if args.quick else "docs/benchmarks"))
    return args


def main(argv: list[str] | None = None, prog: str = "streamrank bench ranking") -> int:
    """Entry point of `streamrank bench ranking`; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join([prog, *argv])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.gate_once:
        return write_gate_once(args.out, command.strip())
    t0 = time.perf_counter()
    ml = load_movielens(args.dataset)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    result = {"dataset": args.dataset, "command": command.strip(), "quick": args.quick,
              "machine": {"device": str(pick_device(args.device)), "threads": torch.get_num_threads(),
                          "platform": platform.platform(), "torch": torch.__version__},
              "settings": {k: v for k, v in vars(args).items() if k not in ("out",)}, "model_sizes": sizes,
              "chronological": run_chronological(ml, args, sizes)}
    if args.recbole_models:
        result["recbole"] = run_recbole(ml, args, sizes)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    stem = args.out / f"ranking-{args.dataset}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    stem.with_suffix(".md").write_text(render(result))
    print(f"wrote {stem}.md and .json in {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m streamrank.bench.ranking"))
