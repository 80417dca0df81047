"""Markdown page of `streamrank bench ranking`: the AW-MoE paper's tables from a result dict."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from streamrank.bench.claims import ALPHA, claims_lines
from streamrank.bench.movielens_cli import tables_text
from streamrank.models.ranking import DISPLAY_NAMES

MAIN = ("dnn", "din", "category_moe", "aw_moe", "aw_moe_cl")
ABLATION = ("aw_moe_base", "aw_moe_gu", "aw_moe_au", "aw_moe")
VARIANTS = {"aw_moe[gate_norm=none]": ("aw_moe", {"gate_norm": "none"}),
            "aw_moe[gate=user only]": ("aw_moe", {"gate_context": "query"})}
SESSION_METRICS = ("session_auc", "auc@10", "ndcg", "ndcg@10")


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


def _caps(sec: dict) -> list[int]:
    """The history caps of the simulated long tail present in a section, ascending."""
    keys = {k.split("_", 1)[0] for runs in sec["runs"].values() for k in runs[0] if k.startswith("capped")}
    return sorted(int(k.removeprefix("capped")) for k in keys if k.removeprefix("capped").isdigit())


def _cap_table(sec: dict, rows: list[str]) -> list[str]:
    """Session AUC (and AUC@10) of each model on every simulated long tail, next to the full test set."""
    caps = _caps(sec)
    head = ["model", "full", *(f"K = {c}" for c in caps), *(f"AUC@10, K = {c}" for c in caps)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in rows:
        if key not in sec["runs"]:
            continue
        m = sec["runs"][key][0]
        cells = [_name(key), _ms([x["session_auc"] for x in m["full"]]),
                 *(_ms([x["session_auc"] for x in m.get(f"capped{c}_full", [])]) for c in caps),
                 *(_ms([x["auc@10"] for x in m.get(f"capped{c}_full", [])]) for c in caps)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cl_gain(sec: dict) -> list[str]:
    """AW-MoE & CL minus AW-MoE per subset: the paper's claim is a larger gain on long-tail users."""
    pv, vs = sec["pvalues"].get("aw_moe_cl|aw_moe", {}), sec.get("cl_gain_vs_full", {})
    lines = ["| test set | Δ AUC | p | Δ AUC@10 | p | gain minus the full set's | p |",
             "|---|---|---|---|---|---|---|"]
    views = [("full", "full"), ("longtail_few", "long-tail 1 (few behaviours)"),
             *((f"capped{c}_full", f"simulated long tail, histories cut to {c}") for c in _caps(sec)),
             ("longtail_elderly", "long-tail 2 (elderly)")]
    for subset, label in views:
        a, b = pv.get(f"{subset}/session_auc"), pv.get(f"{subset}/auc@10")
        if a is None or b is None:
            continue
        v = vs.get(subset)
        rel = f"{v['diff']:+.4f} | {_p(v['p'])}" if v else "- | -"
        lines.append(f"| {label} | {a['diff']:+.4f} | {_p(a['p'])} | {b['diff']:+.4f} | {_p(b['p'])} | {rel} |")
    return lines


def _versus(sec: dict, row: str, other: str) -> list[str]:
    """One sentence: `row` against `other` (not the row above) on the full test set, when it was computed."""
    pv = sec["pvalues"].get(f"{row}|{other}", {}).get("full/session_auc")
    if pv is None:
        return []
    return [f"{_name(row)} vs {_name(other)}: session AUC {pv['diff']:+.4f}, p = {_p(pv['p'])} (paired t-test "
            "across test sessions).", ""]


def _machine(m: dict) -> str:
    procs = f"{m['workers']} parallel fits x " if m.get("workers", 1) > 1 else ""
    return f"{m['device']}, {procs}{m['threads']} torch thread(s), torch {m['torch']}, {m['platform']}"


def _used(st: dict) -> str:
    used = st.get("train_examples_used", st["train_examples"])
    return "" if used == st["train_examples"] else f"; **{used:,} of them, sampled at random, used for training**"


def _valid_used(st: dict) -> str:
    used = st.get("valid_sessions_used", st["valid_sessions"])
    return "" if used == st["valid_sessions"] else f"; early stopping on {used:,} of the {st['valid_sessions']:,} " \
        "validation sessions, sampled at random"


def _ablation_seeds(s: dict) -> str:
    seeds = s.get("ablation_seed_list", s["seed_list"])
    if seeds == s["seed_list"]:
        return f"Every row over seeds {seeds}."
    return (f"AW-MoE over seeds {s['seed_list']}; the other rows over seeds {seeds} only (CPU budget), so their "
            f"p-values compare a {len(seeds)}-seed mean with a {len(s['seed_list'])}-seed mean.")


def _fits(sec: dict) -> list[str]:
    lines = ["| run | params | epochs run (best) per seed | converged | train seconds per seed |",
             "|---|---|---|---|---|"]
    for key, (_, fits) in sec["runs"].items():
        if fits:
            ep = ", ".join(f"{f.get('epochs_run', f['epochs'])} ({f['best_epoch']})" for f in fits)
            conv = ", ".join("yes" if f.get("converged") else "**no**" for f in fits)
            lines.append(f"| {_name(key)} | {fits[0]['params']:,} | {ep} | {conv} | "
                         f"{', '.join(str(f['seconds']) for f in fits)} |")
    return lines


def _gates(sec: dict) -> list[str]:
    """How each gated model mixes its experts (first 20,000 test rows), per seed."""
    lines = ["| run | mean ‖g‖ | entropy of softmax(g) / log K | mean top weight | last-epoch losses |",
             "|---|---|---|---|---|"]
    for key, (_, fits) in sec["runs"].items():
        stats = [f["gate"] for f in fits if f.get("gate")]
        if stats:
            last = fits[0].get("train_losses", [{}])[-1] if fits[0].get("train_losses") else {}
            losses = ", ".join(f"{k.removeprefix('loss_')} {v:.4f}" for k, v in last.items())
            lines.append(f"| {_name(key)} | {_ms([g['g_norm'] for g in stats])} | "
                         f"{_ms([g['entropy_share'] for g in stats])} | {_ms([g['top_weight'] for g in stats])} | "
                         f"{losses or '-'} |")
    return lines if len(lines) > 2 else []


def _convergence(sec: dict) -> str:
    fits = [f for _, fs in sec["runs"].values() for f in fs]
    done = sum(bool(f.get("converged")) for f in fits)
    return (f"{done} of {len(fits)} fits converged: early stopping ended them after their best epoch (epochs "
            "counted from 1). A fit whose best epoch is its last is not converged, and its row says so.")


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
           f"examples ({st['train_positives']:,} positives){_used(st)}, {st['test_sessions']} test sessions"
           f"{_valid_used(st)}. "
           f"Gate context: the target item (no query in MovieLens, the paper's Amazon setting).", "",
           "### Table II: full test set", "", *_table(sec, main, "full"), "", *_versus(sec, "aw_moe", "din"),
           f"### Table III: long-tail users 1 — at most {st['longtail_threshold']} behaviours at prediction time "
           f"({st['longtail_sessions']} sessions; the {s['longtail_quantile']:.0%} quantile: MovieLens users all "
           "have 20+ ratings)", "", *_table(sec, main, "longtail_few"), "",
           "### Table III-b: simulated long tail — every test history cut to its last K behaviours (session AUC)",
           "", *_cap_table(sec, main), "",
           *([f"### Table IV: long-tail users 2 — elderly (age ≥ {s['elderly_age']}; {st['elderly_sessions']} "
              "sessions)", "", *_table(sec, main, "longtail_elderly"), ""] if st['elderly_sessions'] else
             ["### Table IV: long-tail users 2 — elderly: no user ages in this data set", ""]),
           "### Contrastive learning gain (AW-MoE & CL - AW-MoE)", "", *_cl_gain(sec), "",
           "'gain minus the full set's': on a history cut, the per-session gain there minus the same session's "
           "gain on its full history (paired t-test); on long-tail 1, the gain on those users minus the gain "
           "on the other users (Welch's t-test).", "",
           "### The paper's claims on these fits", "", *claims_lines(sec.get("claims", [])), "",
           f"A claim holds when the difference is positive with p < {ALPHA}.", ""]
    if not s["no_ablation"]:
        out += ["### Table VI: gate ablation", "", _ablation_seeds(s), "", *_table(sec, list(ABLATION), "full"), "",
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
            f"Training: dense layers AdamW lr {s['lr']}, embedding tables {tables_text(s)} (the rows a "
            f"batch touches), batch {s['batch_size']}, up to {s['epochs']} epochs, early stopping on validation "
            f"(patience {s['patience']}), behaviours ≤ {s['max_seq_len']}, items seen fewer than "
            f"{s['min_item_count']} times in training share the OOV row.", "", _convergence(sec), "", *_fits(sec),
            "", *(["### How the gated models mix their experts", "", *_gates(sec), ""] if _gates(sec) else [])]
    return "\n".join(out)
