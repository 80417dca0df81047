"""Ranking metrics (paper Sec. IV-B) and a paired significance test across sessions.

- overall AUC (ties count one half) and log-loss over all examples;
- per session (one request's list): AUC over its positive/negative pairs, AUC@10 (the same on the 10
  top-scored items), NDCG and NDCG@10 with binary gains; averaged over sessions.

Decisions where the paper is silent (see docs/models.md):
- a session enters AUC only if it has a positive and a negative; NDCG only if it has a positive;
- AUC@10 when the top 10 hold one class only: 0 if they hold no positive (every positive is ranked below
  ten negatives), 1 if they hold no negative; so every session with both classes has an AUC@10;
- NDCG ranks tied scores pessimistically (negatives first), so constant scores earn no credit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], len(xs)]
    group_rank = 0.5 * (starts + ends - 1) + 1.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney); NaN if only one class is present."""
    labels = np.asarray(labels) > 0.5
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _ndcg(rel_ranked: np.ndarray, k: int | None) -> float:
    """NDCG of a ranked list of binary gains (cut at k if given)."""
    n = len(rel_ranked) if k is None else min(k, len(rel_ranked))
    disc = 1.0 / np.log2(np.arange(2, n + 2))
    dcg = float((rel_ranked[:n] * disc).sum())
    ideal = np.sort(rel_ranked)[::-1][:n]
    idcg = float((ideal * disc).sum())
    return dcg / idcg if idcg > 0 else float("nan")


@dataclass
class SessionMetrics:
    """Per-session metric arrays (NaN where undefined), aligned with `sessions`."""

    sessions: np.ndarray
    auc: np.ndarray
    auc_at_k: np.ndarray
    ndcg: np.ndarray
    ndcg_at_k: np.ndarray
    k: int

    def means(self) -> dict[str, float]:
        """Averages over the sessions where each metric is defined."""
        def m(a: np.ndarray) -> float:
            return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
        return {"session_auc": m(self.auc), f"auc@{self.k}": m(self.auc_at_k), "ndcg": m(self.ndcg),
                f"ndcg@{self.k}": m(self.ndcg_at_k), "sessions": int(np.isfinite(self.auc).sum())}


def session_metrics(scores: np.ndarray, labels: np.ndarray, session_ids: np.ndarray,
                    k: int = 10) -> SessionMetrics:
    """Session AUC, AUC@k, NDCG and NDCG@k for every session id (sorted ascending)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = (np.asarray(labels) > 0.5).astype(np.float64)
    session_ids = np.asarray(session_ids)
    order = np.lexsort((labels, -scores, session_ids))  # by session, score desc, negatives first on ties
    sid, sc, lab = session_ids[order], scores[order], labels[order]
    starts = np.r_[0, np.flatnonzero(sid[1:] != sid[:-1]) + 1]
    ends = np.r_[starts[1:], len(sid)]
    n = len(starts)
    out = {name: np.full(n, np.nan) for name in ("auc", "auc_k", "ndcg", "ndcg_k")}
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        y, x = lab[s:e], sc[s:e]
        n_pos = int(y.sum())
        if n_pos == 0:
            continue
        out["ndcg"][i] = _ndcg(y, None)
        out["ndcg_k"][i] = _ndcg(y, k)
        if n_pos == len(y):
            continue
        out["auc"][i] = auc(x, y)
        top_y = y[:k]
        top_pos = int(top_y.sum())
        out["auc_k"][i] = 0.0 if top_pos == 0 else 1.0 if top_pos == len(top_y) else auc(x[:k], top_y)
    return SessionMetrics(sid[starts], out["auc"], out["auc_k"], out["ndcg"], out["ndcg_k"], k)


def evaluate(probs: np.ndarray, labels: np.ndarray, session_ids: np.ndarray | None = None,
             k: int = 10) -> dict[str, float]:
    """Overall AUC and log-loss, plus the session metrics when session ids are given."""
    res: dict[str, float] = {"auc": auc(probs, labels), "logloss": log_loss(probs, labels),
                             "examples": float(len(labels))}
    if session_ids is not None:
        res.update(session_metrics(probs, labels, session_ids, k).means())
    return res


def _betainc_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Numerical Recipes, Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for num in (even, odd):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betainc_cf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betainc_cf(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: float) -> float:
    """Two-sided p-value of Student's t with `df` degrees of freedom."""
    if not math.isfinite(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def paired_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Paired two-sided t-test of per-session metrics a vs b (sessions where both are defined).

    Returns (mean difference a - b, p-value). The paper reports p-values of each row against the row
    above; sessions are the natural pairing unit (same requests, two models).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    diff = a[ok] - b[ok]
    n = len(diff)
    if n < 2:
        return float("nan"), float("nan")
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    if sd == 0.0:
        return mean, 1.0 if mean == 0.0 else 0.0
    return mean, t_sf_two_sided(mean / (sd / math.sqrt(n)), n - 1)


def delong_test(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong's test of two correlated AUCs on the same examples: (AUC(a) - AUC(b), two-sided p-value).

    Used where examples do not form sessions (a CTR-style test split): the AUCs' covariance is estimated
    from the structural components of both score vectors (fast midrank form, Sun & Xu 2014).
    """
    y = np.asarray(labels) > 0.5
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return float("nan"), float("nan")
    v01, v10, aucs = [], [], []
    for s in (np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)):
        tz = _average_ranks(s)
        tx, ty = _average_ranks(s[y]), _average_ranks(s[~y])
        aucs.append((tz[y].sum() / m - (m + 1) / 2) / n)
        v01.append((tz[y] - tx) / n)
        v10.append(1.0 - (tz[~y] - ty) / m)
    cov = np.cov(np.stack(v01)) / m + np.cov(np.stack(v10)) / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 0:
        return diff, 1.0 if diff == 0 else 0.0
    return diff, float(math.erfc(abs(diff) / math.sqrt(2 * var)))
