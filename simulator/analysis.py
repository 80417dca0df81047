"""The numbers of an A/B report: per-arm metrics with CIs, comparisons with p-values, breakdowns, time series.

Input is a table of per-request columns (`OnlineResult.columns()` or a replay's), with at least ``arm``,
``user_id`` and ``ts_ms`` and the numerator/denominator columns of the metrics. Every metric is a ratio of
per-user sums (see `simulator.stats`); a metric whose denominator is None is a mean per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.stats import bootstrap_ratios, compare_paired, compare_unpaired, per_unit, percentile_ci, ratio


@dataclass(frozen=True)
class Metric:
    """A ratio metric: sum(num) / sum(den) over users (den None: per request)."""

    name: str
    num: str
    den: str | None = None


def online_metrics(hit_k: int, slate: int) -> tuple[Metric, ...]:
    """The online A/B metrics: CTR, CVR, purchases per request, HIT@K (any click), true NDCG of the slate."""
    return (Metric("CTR", "clicks", "impressions"), Metric("CVR", "purchases", "clicks"),
            Metric("purchases/request", "purchases"), Metric(f"HIT@{hit_k}", "hit"),
            Metric(f"true NDCG@{slate}", "ndcg"))


def _den(columns: dict[str, np.ndarray], metric: Metric, mask: np.ndarray) -> np.ndarray:
    return columns[metric.den][mask] if metric.den else np.ones(int(mask.sum()))


def unit_sums(columns: dict[str, np.ndarray], metric: Metric, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-user numerator and denominator sums of a metric over the rows in `mask`."""
    _, num, den = per_unit(columns["user_id"][mask], columns[metric.num][mask], _den(columns, metric, mask))
    return num, den


def arm_summary(columns: dict[str, np.ndarray], metrics: Sequence[Metric], arms: Sequence[str], n_boot: int,
                seed: int, mask: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per arm: requests, users, and each metric with its bootstrap CI (within `mask` when given)."""
    rng = np.random.default_rng(seed)
    base = np.ones(len(columns["arm"]), dtype=bool) if mask is None else mask
    out = []
    for arm in arms:
        rows = base & (columns["arm"] == arm)
        entry: dict[str, Any] = {"arm": arm, "requests": int(rows.sum()),
                                 "users": len(np.unique(columns["user_id"][rows]))}
        for metric in metrics:
            num, den = unit_sums(columns, metric, rows)
            entry[metric.name] = {"value": ratio(num, den),
                                  "ci": percentile_ci(bootstrap_ratios(num, den, n_boot, rng))}
        out.append(entry)
    return out


def paired_sums(columns: dict[str, np.ndarray], metric: Metric, rows_a: np.ndarray,
                rows_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-user sums of both arms aligned on the union of their users (zeros where a user has no rows)."""
    ids_a, num_a, den_a = per_unit(columns["user_id"][rows_a], columns[metric.num][rows_a],
                                   _den(columns, metric, rows_a))
    ids_b, num_b, den_b = per_unit(columns["user_id"][rows_b], columns[metric.num][rows_b],
                                   _den(columns, metric, rows_b))
    ids = np.union1d(ids_a, ids_b)
    out = []
    for own, num, den in ((ids_a, num_a, den_a), (ids_b, num_b, den_b)):
        full_num, full_den = np.zeros(len(ids)), np.zeros(len(ids))
        where = np.searchsorted(ids, own)
        full_num[where], full_den[where] = num, den
        out += [full_num, full_den]
    return out[0], out[1], out[2], out[3]


MIN_USERS_FOR_TEST = 30  # below this many users in an arm, a p-value is reported but not starred (the
# bootstrap and the permutation test resample users: with a handful, their distributions are a few points)


def comparisons(columns: dict[str, np.ndarray], metrics: Sequence[Metric], control: str, arms: Sequence[str],
                n_boot: int, n_perm: int, seed: int, mask: np.ndarray | None = None,
                paired: bool = False) -> list[dict[str, Any]]:
    """Every other arm against `control` on every metric.

    Unpaired when the arms' users are disjoint (an A/B); `paired` when every arm ranked the same requests
    (a shadow replay): then users are resampled and label-flipped jointly.
    """
    base = np.ones(len(columns["arm"]), dtype=bool) if mask is None else mask
    rows_a = base & (columns["arm"] == control)
    out = []
    for arm in arms:
        if arm == control:
            continue
        rows_b = base & (columns["arm"] == arm)
        for n, metric in enumerate(metrics):
            if paired:
                result = compare_paired(*paired_sums(columns, metric, rows_a, rows_b), metric.name, control, arm,
                                        n_boot, n_perm, seed=seed + 7919 * n)
            else:
                num_a, den_a = unit_sums(columns, metric, rows_a)
                num_b, den_b = unit_sums(columns, metric, rows_b)
                result = compare_unpaired(num_a, den_a, num_b, den_b, metric.name, control, arm, n_boot, n_perm,
                                          seed=seed + 7919 * n)
            users = (len(np.unique(columns["user_id"][rows_a])), len(np.unique(columns["user_id"][rows_b])))
            out.append({**result.to_dict(), "users_a": users[0], "users_b": users[1],
                        "enough_users": min(users) >= MIN_USERS_FOR_TEST})
    return out


def replay_metrics(ks: Sequence[int]) -> tuple[Metric, ...]:
    """The replay metrics: HIT@K and NDCG@K of the logged item, session AUC, candidate coverage."""
    out = [Metric(f"HIT@{k}", f"hit@{k}") for k in ks] + [Metric(f"NDCG@{k}", f"ndcg@{k}") for k in ks]
    return (*out, Metric("session AUC", "sauc_num", "sauc_den"), Metric("logged item in candidates", "in_candidates"))


def breakdown_masks(columns: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Row masks of each breakdown: by scenario, and long-tail vs ordinary users (when the columns exist)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    if "scenario" in columns:
        out["scenario"] = {str(s) or "(default)": columns["scenario"] == s for s in np.unique(columns["scenario"])}
    if "long_tail" in columns:
        lt = columns["long_tail"].astype(bool)
        out["users"] = {"long-tail": lt, "ordinary": ~lt}
    return out


def time_series(columns: dict[str, np.ndarray], metric: Metric, arms: Sequence[str],
                buckets: int = 20) -> dict[str, Any]:
    """The metric per arm in `buckets` equal spans of event time, and the newest model version served."""
    ts = columns["ts_ms"].astype(np.int64)
    if not len(ts):
        return {"edges_ms": [], "arms": {}}
    edges = np.linspace(ts.min(), ts.max() + 1, buckets + 1)
    which = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, buckets - 1)
    series: dict[str, Any] = {}
    for arm in arms:
        rows = columns["arm"] == arm
        values, versions = [], []
        for b in range(buckets):
            sel = rows & (which == b)
            den = columns[metric.den][sel] if metric.den else np.ones(int(sel.sum()))
            values.append(ratio(columns[metric.num][sel], den))
            served = columns["model_version"][sel] if "model_version" in columns else np.empty(0)
            versions.append(int(served.max()) if len(served) else None)
        series[arm] = {"values": values, "versions": versions}
    return {"metric": metric.name, "edges_ms": edges.tolist(), "arms": series}


def analyse(columns: dict[str, np.ndarray], metrics: Sequence[Metric], arms: Sequence[str] | None = None,
            control: str | None = None, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0,
            buckets: int = 20, paired: bool = False) -> dict[str, Any]:
    """Everything a report shows, JSON-ready: summary, comparisons, breakdowns and time series."""
    arm_names = list(arms) if arms is not None else sorted({str(a) for a in columns["arm"]})
    control = control or arm_names[0]
    if control not in arm_names:
        raise ValueError(f"control arm {control!r} is not one of {arm_names}")
    result: dict[str, Any] = {
        "control": control, "arms": arm_names, "metrics": [m.name for m in metrics],
        "summary": arm_summary(columns, metrics, arm_names, n_boot, seed),
        "paired": paired,
        "comparisons": comparisons(columns, metrics, control, arm_names, n_boot, n_perm, seed, paired=paired),
        "breakdowns": {},
        "time_series": time_series(columns, metrics[0], arm_names, buckets),
    }
    for kind, masks in breakdown_masks(columns).items():
        result["breakdowns"][kind] = {
            name: {"summary": arm_summary(columns, metrics, arm_names, n_boot, seed, mask),
                   "comparisons": comparisons(columns, metrics, control, arm_names, n_boot, n_perm, seed, mask,
                                              paired)}
            for name, mask in masks.items()
        }
    return result
