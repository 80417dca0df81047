"""Ranking metrics and the A/B statistics: exact values, CI coverage, and calibrated p-values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from simulator.stats import (
    auc,
    bootstrap_ratios,
    compare_paired,
    compare_unpaired,
    hit_at_k,
    ndcg_at_k,
    per_unit,
    percentile_ci,
    ratio,
    session_auc,
)


def brute_auc(labels: list[bool], scores: list[float]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    return sum(pairs) / len(pairs)


def test_hit_and_ndcg() -> None:
    assert hit_at_k(0, 1) == 1.0 and hit_at_k(4, 5) == 1.0 and hit_at_k(5, 5) == 0.0 and hit_at_k(None, 10) == 0.0
    assert ndcg_at_k(0, 10) == 1.0
    assert ndcg_at_k(2, 10) == pytest.approx(0.5)
    assert ndcg_at_k(10, 10) == 0.0 and ndcg_at_k(None, 10) == 0.0


def test_auc_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 30))
        labels = rng.random(n) < 0.4
        if labels.all() or not labels.any():
            continue
        scores = rng.integers(0, 5, size=n).astype(float)  # many ties
        assert auc(labels, scores) == pytest.approx(brute_auc(labels.tolist(), scores.tolist()))
    assert math.isnan(auc(np.array([True, True]), np.array([0.1, 0.2])))
    value, count = session_auc({"s1": ([True, False, False], [0.9, 0.1, 0.2]),
                                "s2": ([False, True], [0.8, 0.3]),
                                "s3": ([True], [0.5])})  # one class only: left out
    assert count == 2 and value == pytest.approx(0.5)


def test_per_unit_sums_and_ratio() -> None:
    ids, num, den = per_unit(np.array(["b", "a", "b"]), np.array([1, 2, 3]), np.array([10, 10, 10]))
    assert ids.tolist() == ["a", "b"] and num.tolist() == [2, 4] and den.tolist() == [10, 20]
    assert ratio(num, den) == pytest.approx(0.2)
    assert math.isnan(ratio(np.array([1.0]), np.array([0.0])))


def test_bootstrap_ci_covers_the_truth_about_95_percent() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    trials = 120
    for _ in range(trials):
        den = rng.integers(1, 20, size=150).astype(float)
        num = rng.binomial(den.astype(int), 0.1).astype(float)
        low, high = percentile_ci(bootstrap_ratios(num, den, 400, rng))
        covered += low <= 0.1 <= high
    assert 0.88 <= covered / trials <= 0.99


def _users(rng: np.random.Generator, n: int, ctr: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-user impressions and clicks, with a per-user CTR (correlated within a user)."""
    imps = rng.integers(5, 50, size=n).astype(float)
    user_ctr = rng.beta(2, 2 / ctr - 2, size=n)
    return rng.binomial(imps.astype(int), user_ctr).astype(float), imps


def test_unpaired_a_a_is_calibrated_and_a_real_effect_is_found() -> None:
    rng = np.random.default_rng(11)
    significant = 0
    runs = 100
    for i in range(runs):
        num_a, den_a = _users(rng, 150, 0.1)
        num_b, den_b = _users(rng, 150, 0.1)
        significant += compare_unpaired(num_a, den_a, num_b, den_b, n_boot=50, n_perm=200, seed=i).significant()
    assert significant <= 12  # nominal 5 of 100
    num_a, den_a = _users(rng, 400, 0.10)
    num_b, den_b = _users(rng, 400, 0.14)
    c = compare_unpaired(num_a, den_a, num_b, den_b, "CTR", "a", "b", n_boot=500, n_perm=500)
    assert c.significant() and c.diff > 0 and c.diff_ci[0] > 0 and c.relative > 0
    assert c.ci_a[0] < c.value_a < c.ci_a[1] and c.units_a == c.units_b == 400
    assert c.p_value == pytest.approx(1 / 501)
    assert c.to_dict()["metric"] == "CTR"


def test_paired_comparison_uses_the_pairing() -> None:
    rng = np.random.default_rng(5)
    den = rng.integers(5, 40, size=300).astype(float)
    base = rng.beta(2, 8, size=300)
    num_a = rng.binomial(den.astype(int), base).astype(float)
    num_b = rng.binomial(den.astype(int), np.clip(base + 0.03, 0, 1)).astype(float)
    paired = compare_paired(num_a, den, num_b, den, n_boot=300, n_perm=300, seed=1)
    assert paired.diff > 0 and paired.significant()
    same = compare_paired(num_a, den, num_a, den, n_boot=100, n_perm=100, seed=1)
    assert same.diff == 0 and same.p_value == 1.0
    with pytest.raises(ValueError, match="same length"):
        compare_paired(num_a, den, num_b[:10], den[:10])
