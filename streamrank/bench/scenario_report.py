"""Markdown page of `streamrank bench scenario`: the SAML paper's Tables II, III and IV from a result dict."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from streamrank.bench.claims import ALPHA, claims_lines
from streamrank.bench.movielens_cli import tables_text
from streamrank.data.dataset import is_path
from streamrank.models.factory import DISPLAY_NAMES

# The paper's own figures (AUC; public Alimama data and its industrial data), to compare orderings only.
PAPER = {"BST": (0.6348, 0.7430), "SAML": (0.6392, 0.7526)}


def _mean_std(values: list[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}"


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _p_cell(pairs: list[tuple[float, float]]) -> str:
    """'k/n seeds higher, max p' for per-seed (difference, DeLong p) pairs."""
    if not pairs:
        return "-"
    higher = sum(d > 0 for d, _ in pairs)
    return f"{higher}/{len(pairs)} higher; max p {max(p for _, p in pairs):.2g}"


def _relaimpr(model_auc: float, ref_auc: float) -> str:
    if not (math.isfinite(model_auc) and math.isfinite(ref_auc)) or ref_auc <= 0.5:
        return "n/a"
    return f"{((model_auc - 0.5) / (ref_auc - 0.5) - 1) * 100:+.2f}%"


def _overall(r: dict, rows: list[str]) -> list[str]:
    models, ref = r["models"], _mean([s["auc"] for s in r["models"]["bst"].values()])
    lines = ["| model | AUC | log-loss | RelaImpr vs BST | vs BST per seed (DeLong) |", "|---|---|---|---|---|"]
    for m in rows:
        if m not in models:
            continue
        seeds = list(models[m].values())
        a = _mean([s["auc"] for s in seeds])
        lines.append(f"| {DISPLAY_NAMES.get(m, m)} | {_mean_std([s['auc'] for s in seeds])} | "
                     f"{_mean_std([s['logloss'] for s in seeds])} | {_relaimpr(a, ref)} | "
                     f"{_p_cell([tuple(s['delong_vs_ref']) for s in seeds if 'delong_vs_ref' in s])} |")
    return lines


def _per_scenario(r: dict) -> tuple[list[str], int, int]:
    """Table III rows, and in how many scenarios SAML's mean AUC beats BST's (and significantly in all seeds)."""
    scen = r["protocol"]["scenarios"]
    lines = ["| scenario | train rows | test rows | positives | BST per scenario | BST (all) | SAML | SAML - BST | "
             "SAML vs BST per seed (DeLong) |", "|---|---|---|---|---|---|---|---|---|"]
    wins = sig = 0
    for name in scen:
        def cell(model: str, name: str = name) -> list[float]:
            return [s["scenarios"][name]["auc"] for s in r["models"].get(model, {}).values()]
        indiv = [s["auc"] for s in r["individual"].get(name, {}).values()]
        bst, saml = _mean(cell("bst")), _mean(cell("saml"))
        pairs = [tuple(s["scenarios"][name]["delong_vs_ref"]) for s in r["models"].get("saml", {}).values()
                 if "delong_vs_ref" in s["scenarios"][name]]
        wins += int(saml > bst)
        sig += int(bool(pairs) and all(d > 0 and p < 0.05 for d, p in pairs))
        lines.append(f"| {name} | {r['protocol']['train_rows'][name]:,} | {r['protocol']['test_rows'][name]:,} | "
                     f"{r['protocol']['test_positive_rate'][name]:.3f} | {_mean_std(indiv)} | "
                     f"{_mean_std(cell('bst'))} | {_mean_std(cell('saml'))} | {saml - bst:+.4f} | "
                     f"{_p_cell(pairs)} |")
    return lines, wins, sig


def _epochs(fit: dict) -> str:
    flag = "" if fit.get("converged") else " **not converged**"
    return f"{fit.get('epochs_run', fit['epochs'])} ({fit['best_epoch']}){flag}"


def _convergence(r: dict) -> str:
    done = sum(bool(f.get("converged")) for f in r["fits"])
    return (f"{done} of {len(r['fits'])} fits converged: early stopping ended them after their best epoch (epochs "
            "counted from 1). A fit whose best epoch is its last is marked **not converged**.")


def _fits(r: dict) -> list[str]:
    lines = ["| model | scenario | params | epochs run (best) per seed | train s per seed |", "|---|---|---|---|---|"]
    groups: dict[tuple[str, int], list[dict]] = {}
    for f in r["fits"]:
        groups.setdefault((f["model"], f["scenario"]), []).append(f)
    scen = r["protocol"]["scenarios"]
    for (model, k), fits in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        fits.sort(key=lambda f: f["seed"])
        lines.append(f"| {DISPLAY_NAMES.get(model, model)} | {'all' if k < 0 else scen[k]} | "
                     f"{fits[0]['params']:,} | {', '.join(_epochs(f) for f in fits)} | "
                     f"{', '.join(str(f['seconds']) for f in fits)} |")
    return lines


def _labels(s: dict) -> str:
    """How the labels were made: star ratings (MovieLens) or purchases (an event log)."""
    if is_path(s["dataset"]):
        return "every interaction kept, label = it ended in a purchase"
    return "ratings of 3 dropped, label = rating ≥ 4"


def _scenario(s: dict) -> str:
    """Where the scenario came from."""
    if s["scenario_field"] == "scenario":
        return "the user's most frequent `scenario` in their events"  # an event log's own field
    return f"the user's `{s['scenario_field']}` field"


def render(r: dict) -> str:
    """The benchmark's markdown page."""
    s, p = r["settings"], r["protocol"]
    table3, wins, sig = _per_scenario(r) if "saml" in r["models"] else ([], 0, 0)
    out = [f"# Multi-scenario benchmark: {r['dataset']}{' (quick)' if r['quick'] else ''}", "",
           f"Command: `{r['command']}`  ",
           f"Date: {dt.date.today()}; {r['machine']['device']}, {r['machine']['workers']} worker process(es) x "
           f"{r['machine']['threads_per_worker']} torch thread(s), torch {r['machine']['torch']}, "
           f"{r['machine']['platform']}; wall time {r['wall_seconds']} s.", "",
           "## Protocol", "",
           f"RecBole's context-aware split of {r['dataset']}: {_labels(s)}, random "
           f"8:1:1 split ({p['train']:,} / {p['valid']:,} / {p['test']:,} rows; data seed {s['data_seed']}). The "
           f"scenario is {_scenario(s)} ({len(p['scenarios'])} scenarios, named as the "
           "stream names them). History = the user's earlier kept interactions, the last "
           f"{s['max_seq_len']}. Every model: AdamW lr {s['lr']} (embedding tables: {tables_text(s)}), "
           f"batch {s['batch_size']}, up to {s['epochs']} epochs, early stopping on validation AUC "
           f"(patience {s['patience']}); seeds {s['seed_list']}.", "",
           "Values are mean ± std over seeds. *vs BST per seed*: in how many seeds the model's test AUC is above "
           "the same seed's BST, and the largest of the per-seed DeLong p-values (so 'max p < 0.05' means "
           "significant in every seed). RelaImpr = (AUC - 0.5) / (AUC_BST - 0.5) - 1 on seed means.", "",
           "## Table II: overall", "", *_overall(r, s["models"]), ""]
    if table3:
        out += ["## Table III: per scenario (AUC)", "",
                "*BST per scenario*: BST trained and validated on that scenario's rows only.", "", *table3, "",
                f"SAML's mean AUC is above BST's in **{wins} of {len(p['scenarios'])}** scenarios, significantly "
                f"(p < 0.05 in every seed) in {sig}.", ""]
    if not s["no_ablation"]:
        out += ["## Table IV: ablation", "", *_overall(r, ["bst", "saml", "saml_no_gate", "saml_no_aux",
                                                            "saml_no_gate_mutual"]), "",
                "*w/o gate*: mutual unit's alpha fixed at 0 (independent branches). *w/o aux*: no auxiliary network; "
                "branches read all features. *w/o gate&mut*: no branches; one MLP on the scenario-aware "
                "features (BST plus scenario-specific embeddings and attention).", ""]
    if r.get("claims"):
        out += ["## The paper's claims on these fits", "", *claims_lines(r["claims"]), "",
                f"A claim holds when the difference is positive with p < {ALPHA} (see streamrank/bench/"
                "scenario_claims.py for each test).", ""]
    out += ["## The paper's figures (Alimama public / industrial): compare orderings, not values", "",
            "| model | public AUC | industrial AUC |", "|---|---|---|",
            *(f"| {m} | {a} | {b} |" for m, (a, b) in PAPER.items()), "",
            "## Fits", "", f"Model sizes: `{r['model_sizes']}`", "", _convergence(r), "", *_fits(r), ""]
    return "\n".join(out)
