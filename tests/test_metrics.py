"""Metrics: AUC (ties), log-loss, session AUC / AUC@k / NDCG / NDCG@k, and the paired t-test."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from streamrank.train.metrics import auc, evaluate, log_loss, paired_test, session_metrics, t_sf_two_sided


def _pairwise_auc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_pair_counting_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 5, 40).astype(float)  # many ties
        y = (rng.random(40) < 0.4).astype(float)
        assert auc(s, y) == pytest.approx(_pairwise_auc(s, y))
    assert math.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5


def test_log_loss() -> None:
    assert log_loss(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(math.log(2))
    assert log_loss(np.array([1.0, 0.0]), np.array([1, 0])) < 1e-6
    assert log_loss(np.array([0.0]), np.array([1])) == pytest.approx(-math.log(1e-7))  # clipped, finite


def test_session_metrics_hand_computed() -> None:
    # session 7: positive ranked 2nd of 4 -> AUC 2/3, NDCG 1/log2(3); session 3 perfect; 9 has no positive
    sid = np.array([7, 7, 7, 7, 3, 3, 9, 9])
    s = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.1, 0.5, 0.4])
    y = np.array([0, 1, 0, 0, 1, 0, 0, 0])
    m = session_metrics(s, y, sid, k=10)
    assert m.sessions.tolist() == [3, 7, 9]
    assert m.auc[:2].tolist() == pytest.approx([1.0, 2 / 3]) and math.isnan(m.auc[2])
    assert m.ndcg[:2].tolist() == pytest.approx([1.0, 1 / math.log2(3)]) and math.isnan(m.ndcg[2])
    means = m.means()
    assert means["session_auc"] == pytest.approx((1 + 2 / 3) / 2) and means["sessions"] == 2


def test_at_k_conventions() -> None:
    sid = np.zeros(15, dtype=int)
    y = np.zeros(15)
    y[12] = 1  # the positive is ranked 13th: not in the top 10
    s = -np.arange(15, dtype=float)
    m = session_metrics(s, y, sid, k=10)
    assert m.auc_at_k[0] == 0.0 and m.ndcg_at_k[0] == 0.0 and m.auc[0] == pytest.approx(2 / 14)
    y2 = np.zeros(15)
    y2[[0, 11]] = 1  # top 10 = one positive above nine negatives
    m2 = session_metrics(s, y2, sid, k=10)
    assert m2.auc_at_k[0] == 1.0
    assert m2.ndcg_at_k[0] == pytest.approx(1 / (1 + 1 / math.log2(3)))  # ideal top 10: both positives
    y3 = np.r_[np.ones(10), np.zeros(5)]
    assert session_metrics(s, y3, sid, k=10).auc_at_k[0] == 1.0  # top 10 all positive


def test_ties_rank_pessimistically_for_ndcg() -> None:
    m = session_metrics(np.zeros(4), np.array([1, 0, 0, 0]), np.zeros(4, dtype=int))
    assert m.auc[0] == 0.5 and m.ndcg[0] == pytest.approx(1 / math.log2(5))


def test_evaluate_keys() -> None:
    res = evaluate(np.array([0.9, 0.1, 0.8, 0.3]), np.array([1, 0, 1, 0]), np.array([0, 0, 1, 1]))
    assert res["auc"] == 1.0 and res["session_auc"] == 1.0 and res["ndcg@10"] == 1.0
    assert set(res) >= {"auc", "logloss", "session_auc", "auc@10", "ndcg", "ndcg@10", "sessions"}


def test_student_t_p_values() -> None:
    assert t_sf_two_sided(2.0, 10) == pytest.approx(0.07339, abs=1e-4)  # scipy.stats.t.sf(2, 10) * 2
    assert t_sf_two_sided(2.5, 3) == pytest.approx(0.08771, abs=1e-4)
    assert t_sf_two_sided(1.959964, 1e7) == pytest.approx(0.05, abs=1e-4)
    assert t_sf_two_sided(0.0, 5) == pytest.approx(1.0)


def test_paired_test() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(500)
    diff, p = paired_test(a + 0.05 + rng.normal(0, 0.01, 500), a)
    assert diff == pytest.approx(0.05, abs=0.003) and p < 1e-10
    _, p_null = paired_test(a + rng.normal(0, 0.1, 500), a + rng.normal(0, 0.1, 500))
    assert p_null > 0.01
    b = a.copy()
    b[:3] = np.nan  # undefined sessions are dropped from the pairing
    assert paired_test(a, b) == (0.0, 1.0)


def test_delong_matches_a_paired_bootstrap() -> None:
    from statistics import NormalDist

    from streamrank.train.metrics import delong_test

    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.3).astype(float)
    a = y * 0.8 + rng.normal(size=3000)
    b = y * 0.6 + rng.normal(size=3000)
    diff, p = delong_test(y, a, b)
    assert diff == pytest.approx(auc(a, y) - auc(b, y))
    boot = []
    for _ in range(300):
        i = rng.integers(0, 3000, 3000)
        boot.append(auc(a[i], y[i]) - auc(b[i], y[i]))
    z_boot = diff / np.std(boot)
    z_delong = NormalDist().inv_cdf(1 - p / 2)
    assert z_delong == pytest.approx(z_boot, rel=0.2)  # same standard error, within bootstrap noise
    assert delong_test(y, a, a) == (0.0, 1.0)
    assert delong_test(y, a, 3 * a + 1)[0] == pytest.approx(0.0)  # a monotone transform ranks alike
    assert math.isnan(delong_test(np.ones(5), a[:5], b[:5])[1])  # one class only: undefined
