"""Ranking metrics and A/B statistics: HIT@K, NDCG@K, AUC, session AUC; bootstrap CIs and p-values.

Every A/B metric here is a *ratio of sums over users*: CTR = clicks / impressions, CVR = purchases /
clicks, HIT@K = hits / requests, NDCG@K = summed NDCG / requests, session AUC = summed per-session AUCs /
sessions. Users are the randomisation unit (each user is hashed to one arm), and one user's requests are
correlated, so the statistics resample and permute **users**, never requests:

- Confidence intervals: percentile bootstrap over users (cluster bootstrap), `n_boot` replicates.
- Unpaired comparison (`compare_unpaired`; the online A/B, where arms have disjoint users): the CI of
  the difference B - A bootstraps each arm's users independently; the p-value is a two-sided
  permutation test that reshuffles the arm labels of users (H0: the arm does not change the
  distribution of a user's (numerator, denominator)), ``p = (1 + #{|d*| >= |d|}) / (1 + n_perm)``.
- Paired comparison (`compare_paired`; a replay in shadow mode, where every arm ranks the same requests):
  the same users are resampled for both arms; the p-value flips each user's two arm labels at random.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamrank.train.metrics import auc as metrics_auc

CHUNK = 200  # replicates computed together (memory: CHUNK x units floats)


# --- ranking metrics -------------------------------------------------------------------------------
def hit_at_k(rank: int | None, k: int) -> float:
    """1.0 when the relevant item's 0-based rank is below k (None: it was not ranked at all), else 0.0."""
    return 1.0 if rank is not None and rank < k else 0.0


def ndcg_at_k(rank: int | None, k: int) -> float:
    """NDCG@k with one relevant item at 0-based `rank`: 1 / log2(rank + 2) inside the top k, else 0."""
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count half); NaN unless both classes are present."""
    return metrics_auc(np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool))


def session_auc(sessions: dict[str, tuple[list[bool], list[float]]]) -> tuple[float, int]:
    """Mean per-session AUC over sessions having both positives and negatives; and how many there were.

    `sessions` maps a session id to the labels and scores of everything ranked in it (a logged item is
    a positive, the other candidates negatives).
    """
    values = [auc(np.array(lab), np.array(sc)) for lab, sc in sessions.values()]
    values = [v for v in values if not math.isnan(v)]
    return (float(np.mean(values)) if values else float("nan")), len(values)


# --- per-user sums -----------------------------------------------------------------------------------
def per_unit(units: np.ndarray, num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums `num` and `den` per unit id; returns (unit ids, num sums, den sums), ids sorted."""
    ids, inverse = np.unique(np.asarray(units), return_inverse=True)
    return (ids, np.bincount(inverse, weights=np.asarray(num, dtype=float), minlength=len(ids)),
            np.bincount(inverse, weights=np.asarray(den, dtype=float), minlength=len(ids)))


def ratio(num: np.ndarray, den: np.ndarray) -> float:
    """sum(num) / sum(den); NaN when the denominator is 0."""
    total = float(np.sum(den))
    return float(np.sum(num)) / total if total > 0 else float("nan")


def _ratios(num_sums: np.ndarray, den_sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den_sums > 0, num_sums / np.where(den_sums > 0, den_sums, 1.0), np.nan)


def bootstrap_ratios(num: np.ndarray, den: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`n_boot` cluster-bootstrap replicates of sum(num)/sum(den), resampling units with replacement."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    n = len(num)
    out = np.empty(n_boot)
    if n == 0:
        out.fill(np.nan)
        return out
    for start in range(0, n_boot, CHUNK):
        c = min(CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(c, n))
        out[start:start + c] = _ratios(num[idx].sum(axis=1), den[idx].sum(axis=1))
    return out


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of the finite replicates (NaN, NaN when there are none)."""
    finite = replicates[np.isfinite(replicates)]
    if not len(finite):
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """Arm B against arm A on one metric: values, CIs, the difference B - A, its CI and the p-value."""

    metric: str
    arm_a: str
    arm_b: str
    value_a: float
    ci_a: tuple[float, float]
    value_b: float
    ci_b: tuple[float, float]
    diff: float
    diff_ci: tuple[float, float]
    relative: float  # (B - A) / A
    p_value: float
    units_a: int
    units_b: int
    test: str

    def significant(self, alpha: float = 0.05) -> bool:
        """True when the p-value is below alpha."""
        return bool(self.p_value < alpha)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def compare_unpaired(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
                     metric: str = "", arm_a: str = "A", arm_b: str = "B", n_boot: int = 1000,
                     n_perm: int = 1000, seed: int = 0, level: float = 0.95) -> Comparison:
    """B vs A when the arms have different users: per-user sums in, bootstrap CIs and permutation p out."""
    rng = np.random.default_rng(seed)
    num_a, den_a, num_b, den_b = (np.asarray(x, dtype=float) for x in (num_a, den_a, num_b, den_b))
    value_a, value_b = ratio(num_a, den_a), ratio(num_b, den_b)
    boot_a = bootstrap_ratios(num_a, den_a, n_boot, rng)
    boot_b = bootstrap_ratios(num_b, den_b, n_boot, rng)
    observed = value_b - value_a
    p_value = float("nan")
    if math.isfinite(observed) and len(num_a) and len(num_b):
        pooled_num = np.concatenate([num_a, num_b])
        pooled_den = np.concatenate([den_a, den_b])
        labels = np.concatenate([np.zeros(len(num_a)), np.ones(len(num_b))])
        total_num, total_den = pooled_num.sum(), pooled_den.sum()
        extreme = 0
        for start in range(0, n_perm, CHUNK):
            c = min(CHUNK, n_perm - start)
            mask = rng.permuted(np.tile(labels, (c, 1)), axis=1)
            b_num, b_den = mask @ pooled_num, mask @ pooled_den
            diffs = _ratios(b_num, b_den) - _ratios(total_num - b_num, total_den - b_den)
            extreme += int(np.count_nonzero(np.abs(diffs) >= abs(observed) - 1e-12))
        p_value = (1 + extreme) / (1 + n_perm)
    return Comparison(metric, arm_a, arm_b, value_a, percentile_ci(boot_a, level), value_b,
                      percentile_ci(boot_b, level), observed, percentile_ci(boot_b - boot_a, level),
                      observed / value_a if value_a else float("nan"), p_value, len(num_a), len(num_b),
                      "unpaired: user bootstrap, user-label permutation")


def compare_paired(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
                   metric: str = "", arm_a: str = "A", arm_b: str = "B", n_boot: int = 1000,
                   n_perm: int = 1000, seed: int = 0, level: float = 0.95) -> Comparison:
    """B vs A measured on the same users (aligned arrays): paired bootstrap CIs and sign-flip p-value."""
    rng = np.random.default_rng(seed)
    num_a, den_a, num_b, den_b = (np.asarray(x, dtype=float) for x in (num_a, den_a, num_b, den_b))
    if not len(num_a) == len(den_a) == len(num_b) == len(den_b):
        raise ValueError("paired arrays must have the same length (one entry per user)")
    n = len(num_a)
    value_a, value_b = ratio(num_a, den_a), ratio(num_b, den_b)
    boot_a, boot_b, boot_d = np.empty(n_boot), np.empty(n_boot), np.empty(n_boot)
    for start in range(0, n_boot, CHUNK):
        c = min(CHUNK, n_boot - start)
        idx = rng.integers(0, max(n, 1), size=(c, n))
        ra = _ratios(num_a[idx].sum(axis=1), den_a[idx].sum(axis=1))
        rb = _ratios(num_b[idx].sum(axis=1), den_b[idx].sum(axis=1))
        boot_a[start:start + c], boot_b[start:start + c], boot_d[start:start + c] = ra, rb, rb - ra
    observed = value_b - value_a
    p_value = float("nan")
    if math.isfinite(observed) and n:
        extreme = 0
        for start in range(0, n_perm, CHUNK):
            c = min(CHUNK, n_perm - start)
            flip = rng.random((c, n)) < 0.5
            nb = np.where(flip, num_a, num_b).sum(axis=1)
            db = np.where(flip, den_a, den_b).sum(axis=1)
            na = num_a.sum() + num_b.sum() - nb
            da = den_a.sum() + den_b.sum() - db
            extreme += int(np.count_nonzero(np.abs(_ratios(nb, db) - _ratios(na, da)) >= abs(observed) - 1e-12))
        p_value = (1 + extreme) / (1 + n_perm)
    return Comparison(metric, arm_a, arm_b, value_a, percentile_ci(boot_a, level), value_b,
                      percentile_ci(boot_b, level), observed, percentile_ci(boot_d, level),
                      observed / value_a if value_a else float("nan"), p_value, n, n,
                      "paired: user bootstrap, per-user sign flip")
