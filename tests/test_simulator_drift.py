"""Drifting user preferences in the synthetic world: off is today's world bit for bit, on is real and deterministic."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from simulator.catalog import CatalogParams
from simulator.cli import drift_period_ms
from simulator.cli import main as simulate
from simulator.environment import Environment, EnvParams, Request

# One request a minute on average: 400 requests span ~6.7 h of event time.
SMALL = EnvParams(seed=5, n_users=200, catalog=CatalogParams(n_items=300, n_categories=8, n_brands=20),
                  n_candidates=40, mean_gap_ms=60_000.0)
HOUR_MS = 3_600_000
# `_digest(Environment(SMALL))` computed by the environment before drift existed: the static world, pinned.
STATIC_DIGEST = "bfb0099bc6f8d70d0abbb90adf08e0ce367ad761c8bc5020c8a5c448a29a80a3"


def _digest(env: Environment, n: int = 400) -> str:
    """A hash of the plan and of every outcome (half random orders, half oracle orders) of `n` requests."""
    h = hashlib.sha256()
    for r in env.plan(n):
        h.update(f"{r.user}|{r.scenario}|{r.ts_ms}|{r.query}|{r.session_id}|{r.long_tail}".encode())
        h.update(r.candidates.astype(np.int64).tobytes())
        rel = env.true_relevance(r)
        order = np.argsort(-rel) if r.index % 2 else np.random.default_rng([7, r.index]).permutation(len(rel))
        o = env.respond(r, r.candidates[order])
        for a in (o.shown, o.clicked, o.carted, o.purchased):
            h.update(np.ascontiguousarray(a).tobytes())
        for a, f in ((o.click_ts, o.clicked), (o.cart_ts, o.carted), (o.purchase_ts, o.purchased)):
            h.update(a[f].astype(np.int64).tobytes())
        h.update(f"{o.true_ndcg:.9f}".encode())
    return h.hexdigest()


def _at(env: Environment, user: int, ts_ms: int) -> Request:
    """A home-page request of `user` at event time `ts_ms` (no query), to read the oracle's scores."""
    return replace(env.plan(1)[0], user=user, user_id=env.user_ids[user], scenario=0, scenario_name="page:home",
                   query="", query_category=-1, ts_ms=ts_ms)


def _top(env: Environment, request: Request, k: int = 10) -> set[int]:
    scores = env.true_relevance(request, np.arange(len(env.catalog)))
    return set(np.argsort(-scores)[:k].tolist())


def test_drift_off_is_the_static_world_bit_for_bit() -> None:
    assert EnvParams().drift_period_ms == 0
    assert _digest(Environment(SMALL)) == STATIC_DIGEST
    env = Environment(SMALL)
    for t in (0, 1, HOUR_MS // 2, 10 * HOUR_MS, 10**9):
        for u in range(0, SMALL.n_users, 17):
            assert np.array_equal(env.interest_at(u, SMALL.epoch_ms + t), env.user_vectors[u])
            assert env.favourite_categories_at(u, SMALL.epoch_ms + t) is env.interests[u]


def test_anchors_and_interpolation() -> None:
    period = HOUR_MS
    env = Environment(replace(SMALL, drift_period_ms=period))
    static = Environment(SMALL)
    t0 = SMALL.epoch_ms
    assert np.array_equal(env.user_vectors, static.user_vectors)  # anchor 0 is today's vector
    moved = 0
    for u in range(SMALL.n_users):
        a0, a1 = env.anchor(u, 0)[0], env.anchor(u, 1)[0]
        assert np.array_equal(env.interest_at(u, t0), static.user_vectors[u])
        assert np.array_equal(env.interest_at(u, t0 + period), a1)
        assert np.linalg.norm(a1) == pytest.approx(1.0)
        moved += not np.allclose(a0, a1)
        half = env.interest_at(u, t0 + period // 2)
        assert np.linalg.norm(half) == pytest.approx(1.0)
        expected = (a0 + a1) / np.linalg.norm(a0 + a1)
        np.testing.assert_allclose(half, expected, atol=1e-12)
        # between the anchors: closer to each end than the ends are to each other (on the arc)
        assert half @ a0 >= a0 @ a1 - 1e-12 and half @ a1 >= a0 @ a1 - 1e-12
        quarter = env.interest_at(u, t0 + period // 4)
        assert quarter @ a0 >= half @ a0 - 1e-12
        assert np.array_equal(env.interest_at(u, t0 + 2 * period), env.anchor(u, 2)[0])
        cats = env.anchor(u, 1)[1]
        assert 1 <= len(cats) <= 3 and len(set(cats.tolist())) == len(cats)
    assert moved == SMALL.n_users


def test_same_seed_same_drifting_world() -> None:
    params = replace(SMALL, drift_period_ms=HOUR_MS)
    a, b = Environment(params), Environment(params)
    # anchors do not depend on the order they are asked for
    late_first = b.anchor(3, 5)[0].copy()
    assert np.array_equal(a.anchor(3, 1)[0], b.anchor(3, 1)[0]) and np.array_equal(a.anchor(3, 5)[0], late_first)
    assert _digest(Environment(params)) == _digest(Environment(params)) != STATIC_DIGEST
    other = Environment(replace(params, seed=6))
    assert not np.allclose(other.anchor(3, 1)[0], a.anchor(3, 1)[0])


def test_drift_changes_only_interests_and_queries_of_the_stream() -> None:
    static, drifting = Environment(SMALL).plan(400), Environment(replace(SMALL, drift_period_ms=HOUR_MS)).plan(400)
    assert [(r.user, r.scenario, r.ts_ms, r.session_id) for r in static] == \
        [(r.user, r.scenario, r.ts_ms, r.session_id) for r in drifting]
    env = Environment(replace(SMALL, drift_period_ms=HOUR_MS))
    for r in env.plan(400):
        if r.query_category >= 0:  # a search is one of the favourite categories of the nearest anchor
            assert r.query_category in env.favourite_categories_at(r.user, r.ts_ms).tolist()


def test_oracle_ranking_drifts() -> None:
    period = HOUR_MS
    env, static = Environment(replace(SMALL, drift_period_ms=period)), Environment(SMALL)
    t0 = SMALL.epoch_ms
    later, soon, unchanged = [], [], []
    for u in range(SMALL.n_users):
        top0 = _top(env, _at(env, u, t0))
        later.append(len(top0 & _top(env, _at(env, u, t0 + 3 * period))) / 10)
        soon.append(len(top0 & _top(env, _at(env, u, t0 + period // 100))) / 10)
        unchanged.append(len(top0 & _top(static, _at(static, u, t0 + 3 * period))) / 10)
    assert np.mean(unchanged) == 1.0  # no drift: the same top 10 hours later
    assert np.mean(soon) > 0.9  # the interest moves continuously
    assert np.mean(later) < 0.4  # three periods on, most of a user's top 10 has changed


def test_validation_and_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="drift_period_ms"):
        Environment(replace(SMALL, drift_period_ms=-1))
    assert drift_period_ms(0) == 0 and drift_period_ms(90) == 90_000 and drift_period_ms(1e-6) == 1
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--drift-period"):
            drift_period_ms(bad)
    out = tmp_path / "report"
    argv = ["online", "--arms", "a=random", "b=oracle", "--requests", "300", "--users", "100", "--items", "200",
            "--bootstrap", "20", "--permutations", "20", "--out", str(out)]
    assert simulate([*argv, "--drift-period", "600"]) == 0
    params = json.loads((out / "requests.json").read_text())["params"]
    assert params["drift_period_ms"] == 600_000
    assert "preferences drifting every 600 s of event time" in (out / "report.md").read_text()
    capsys.readouterr()
    assert simulate([*argv, "--drift-period", "-5"]) == 2
    assert "--drift-period" in capsys.readouterr().err
