"""The analysis half of `bench online-vs-batch`: event-time slices, per-slice metrics of the online, retrained
and static models, paired tests across slices, the PNG and the markdown table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from streamrank.bench.trainbench_common import finish_plot
from streamrank.train.metrics import auc, log_loss, session_metrics

WEEK_MS = 7 * 24 * 3600 * 1000


def slice_bounds(stamps: np.ndarray, min_share: float, slice_ms: int = WEEK_MS) -> list[tuple[int, int]]:
    """[start, end) event-time slices from the median stamp on: `slice_ms` each, merged forward until one
    holds at least `min_share` of the second half's samples (a short last slice joins the one before)."""
    start = int(np.median(stamps))
    second = np.sort(stamps[stamps >= start])
    need = max(1, int(np.ceil(min_share * len(second))))
    bounds: list[tuple[int, int]] = []
    lo = start
    last = int(second[-1]) + 1
    while lo < last:
        hi = lo + slice_ms
        while hi < last and np.searchsorted(second, hi) - np.searchsorted(second, lo) < need:
            hi += slice_ms
        hi = min(hi, last)
        bounds.append((lo, hi))
        lo = hi
    if len(bounds) > 1 and np.searchsorted(second, bounds[-1][1]) - np.searchsorted(second, bounds[-1][0]) < need:
        bounds[-2:] = [(bounds[-2][0], bounds[-1][1])]
    return bounds


def slice_metrics(probs: np.ndarray, labels: np.ndarray, sessions: np.ndarray) -> dict[str, float]:
    """AUC and request AUC of one slice's predictions."""
    return {"auc": auc(probs, labels), "session_auc": session_metrics(probs, labels, sessions).means()["session_auc"],
            "samples": len(labels), "positive_rate": float(labels.mean())}


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean difference a - b across slices and the paired t-test's two-sided p (scipy)."""
    diff = np.asarray(a) - np.asarray(b)
    p = float(stats.ttest_rel(a, b).pvalue) if len(diff) > 1 and np.std(diff) > 0 else float("nan")
    return {"mean_diff": float(diff.mean()), "p": p, "slices": len(diff),
            "wins": int((diff > 0).sum())}


def plot(per_slice: list[dict[str, Any]], title: str, path: Path) -> None:
    """The three AUC curves over the slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(1, len(per_slice) + 1)
    for key, label in (("online", "online (prequential)"), ("retrained", "retrained at each slice start"),
                       ("static", "static (first half)")):
        ax.plot(x, [s[key]["auc"] for s in per_slice], marker="o", label=label)
    finish_plot(fig, ax, "slice of event time", "AUC", title, path)


def summarise(stamps: np.ndarray, ys: np.ndarray, ps: np.ndarray, bounds: list[tuple[int, int]],
              batch: dict[str, Any]) -> dict[str, Any]:
    """Per-slice metrics of the three models, means, paired tests, the last-10% protocol."""
    sessions = batch["sessions"]
    second = np.flatnonzero(stamps >= bounds[0][0])
    static_at = {int(r): k for k, r in enumerate(second)}
    per_slice = []
    for k, (lo, hi) in enumerate(bounds):
        rows = np.flatnonzero((stamps >= lo) & (stamps < hi))
        y, sess = ys[rows], sessions[rows]
        static = batch["static"][[static_at[int(r)] for r in rows]]
        per_slice.append({"start_ms": lo, "end_ms": hi, "online": slice_metrics(ps[rows], y, sess),
                          "retrained": slice_metrics(batch["retrained"][k], y, sess),
                          "static": slice_metrics(static, y, sess)})
    best = batch["offline_best"]
    test = best["test"]
    mean = {m: {key: float(np.mean([s[m][key] for s in per_slice])) for key in ("auc", "session_auc")}
            for m in ("online", "retrained", "static")}
    tests = {f"{a}_vs_{b}_{metric}": paired([s[a][metric] for s in per_slice], [s[b][metric] for s in per_slice])
             for a, b in (("online", "retrained"), ("online", "static"), ("retrained", "static"))
             for metric in ("auc", "session_auc")}
    return {
        "online_auc": mean["online"]["auc"], "retrained_auc": mean["retrained"]["auc"],
        "static_auc": mean["static"]["auc"], "online_session_auc": mean["online"]["session_auc"],
        "retrained_session_auc": mean["retrained"]["session_auc"], "static_session_auc": mean["static"]["session_auc"],
        "p_online_vs_retrained": tests["online_vs_retrained_auc"]["p"],
        "offline_best_auc": auc(best["probs"], ys[test]), "online_last10_auc": auc(ps[test], ys[test]),
        "offline_best_logloss": log_loss(best["probs"], ys[test]),
        "online_last10_logloss": log_loss(ps[test], ys[test]),
        "offline_best_fit": {k: v for k, v in best.items() if k not in ("probs", "test")},
        "tests": tests, "slices": per_slice, "fits": batch["fits"], "samples": len(stamps),
        "second_half_samples": len(second), "last10_examples": len(test),
    }


def report(result: dict[str, Any]) -> list[str]:
    """Markdown for the result."""
    r = result
    fmt = lambda ms: time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))  # noqa: E731
    lines = ["| slice | from | to | samples | online AUC | retrained AUC | static AUC | online req. AUC | "
             "retrained req. AUC | static req. AUC |", "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, s in enumerate(r["slices"]):
        lines.append(f"| {k + 1} | {fmt(s['start_ms'])} | {fmt(s['end_ms'])} | {s['online']['samples']:,} | "
                     + " | ".join(f"{s[m][metric]:.4f}" for metric in ("auc", "session_auc")
                                  for m in ("online", "retrained", "static")) + " |")
    lines.append(f"| mean | | | | {r['online_auc']:.4f} | {r['retrained_auc']:.4f} | {r['static_auc']:.4f} | "
                 f"{r['online_session_auc']:.4f} | {r['retrained_session_auc']:.4f} | {r['static_session_auc']:.4f} |")
    lines += ["", "| paired t-test across slices | mean difference | p | slices won |", "|---|---:|---:|---:|"]
    for name, t in r["tests"].items():
        lines.append(f"| {name.replace('_', ' ')} | {t['mean_diff']:+.4f} | {t['p']:.2g} | "
                     f"{t['wins']} of {t['slices']} |")
    fit = r["offline_best_fit"]
    lines += ["", "Last-10% protocol on the same stream (held-out: the last 10% of samples by impression time, "
              f"{r['last10_examples']:,}):", "",
              "| | AUC |", "|---|---:|",
              f"| online, prequential (`online_last10_auc`) | {r['online_last10_auc']:.4f} |",
              f"| offline best, early stopping: best epoch {fit['best_epoch'] + 1} of {fit['epochs_run']} "
              f"(`offline_best_auc`) | {r['offline_best_auc']:.4f} |",
              f"| online - offline best | {r['online_last10_auc'] - r['offline_best_auc']:+.4f} |"]
    return lines
