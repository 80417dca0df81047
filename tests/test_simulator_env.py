"""The synthetic world, the arms and the simulated events: deterministic, valid, and behaving as documented."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from simulator.arms import Arm, assign, check_arms, parse_arm
from simulator.catalog import CatalogParams
from simulator.environment import Environment, EnvParams
from simulator.online import request_events, run_online
from simulator.publish import MemorySink
from streamrank.config import load_settings
from streamrank.events.validate import check_event, decode_item
from streamrank.v1 import events_pb2

SMALL = EnvParams(seed=3, n_users=300, catalog=CatalogParams(n_items=400, n_categories=8, n_brands=20),
                  n_candidates=50)


def test_same_seed_same_world_and_stream() -> None:
    a, b = Environment(SMALL), Environment(SMALL)
    assert np.array_equal(a.catalog.vectors, b.catalog.vectors) and a.catalog.item_ids == b.catalog.item_ids
    plan_a, plan_b = a.plan(200), b.plan(200)
    assert [(r.user, r.scenario, r.ts_ms, r.query) for r in plan_a] == [(r.user, r.scenario, r.ts_ms, r.query)
                                                                        for r in plan_b]
    assert all(np.array_equal(x.candidates, y.candidates) for x, y in zip(plan_a, plan_b, strict=True))
    other = Environment(replace(SMALL, seed=4))
    assert not np.array_equal(other.catalog.vectors, a.catalog.vectors)


def test_plan_shape_scenarios_sessions_and_long_tail() -> None:
    env = Environment(SMALL)
    plan = env.plan(3000)
    times = [r.ts_ms for r in plan]
    assert times == sorted(times) and times[0] > SMALL.epoch_ms
    assert len({r.request_id for r in plan}) == len(plan)
    for r in plan[:200]:
        assert len(set(r.candidates.tolist())) == SMALL.n_candidates
        assert r.candidates.min() >= 0 and r.candidates.max() < len(env.catalog)
    share = Counter(r.scenario_name for r in plan)
    assert set(share) == {"page:home", "page:search", "page:deals"}
    assert share["page:home"] > share["page:search"] > share["page:deals"]
    search = [r for r in plan if r.scenario_name == "page:search"]
    assert all(r.query.startswith("cat-") and r.query_category >= 0 for r in search)
    in_query = np.mean([np.mean(env.catalog.category[r.candidates] == r.query_category) for r in search])
    assert in_query >= 0.45  # half the candidates of a search come from the query's category
    per_user = Counter(r.user for r in plan)
    for r in plan:
        assert r.long_tail == (per_user[r.user] <= SMALL.long_tail_max_requests)
    assert 0 < sum(r.long_tail for r in plan) < len(plan)
    slow = Environment(replace(SMALL, mean_gap_ms=5_000)).plan(3000)  # ~4 h: users come back after 30 min
    assert len({r.session_id for r in slow}) > len({r.user for r in slow})


def test_position_bias_and_oracle_relevance() -> None:
    env = Environment(SMALL)
    clicks = np.zeros(SMALL.slate_size)
    rng = np.random.default_rng(0)
    for r in env.plan(3000):
        clicks += env.respond(r, rng.permutation(r.candidates)).clicked
    # random order: every position has the same expected relevance, so clicks follow the examination curve
    assert clicks[0] > clicks[4] > clicks[9]
    assert clicks[0] / clicks[9] == pytest.approx(10 ** SMALL.position_decay, rel=0.35)
    fresh = Environment(SMALL)
    r = fresh.plan(1)[0]
    relevance = fresh.true_relevance(r)
    assert np.all((relevance > 0) & (relevance < 1))
    best = r.candidates[np.argsort(-relevance)]
    assert fresh.respond(r, best).true_ndcg == pytest.approx(1.0)


def test_purchases_follow_clicks_and_satiate() -> None:
    env = Environment(SMALL)
    bought = None
    for r in env.plan(4000):
        order = r.candidates[np.argsort(-env.true_relevance(r))]
        out = env.respond(r, order)
        assert not np.any(out.carted & ~out.clicked) and not np.any(out.purchased & ~out.carted)
        assert np.all(out.click_ts[out.clicked] > r.ts_ms)
        assert np.all(out.purchase_ts[out.purchased] > out.cart_ts[out.purchased])
        if bought is None and out.purchased.any():
            bought = (r, int(out.shown[out.purchased][0]))
    assert bought is not None
    r, item = bought
    before = Environment(SMALL).logits(r, np.array([item]))[0]
    assert env.logits(r, np.array([item]))[0] <= before - SMALL.purchased_penalty + 1e-9


def test_request_events_are_valid_and_deterministic() -> None:
    settings = load_settings()
    env = Environment(SMALL)
    attributes = [env.catalog.attributes(i) for i in range(len(env.catalog))]
    plan = env.plan(300)
    events = []
    for r in plan:
        out = env.respond(r, r.candidates)
        evs = request_events(env, r, out, attributes)
        imps = [e for e in evs if e.type == events_pb2.IMPRESSION]
        assert [e.position for e in imps] == list(range(SMALL.slate_size))
        assert all(e.request_id == r.request_id and e.session_id == r.session_id for e in evs)
        assert [e.ts_ms for e in evs] == sorted(e.ts_ms for e in evs)
        assert sum(e.type == events_pb2.CLICK for e in evs) == int(out.clicked.sum())
        events += evs
    for e in events:
        check_event(e, settings)
        assert e.item.category.startswith("cat-") and e.item.HasField("price")
    assert len({e.event_id for e in events}) == len(events)
    for item in env.catalog.items()[:50]:
        decode_item(item.SerializeToString(), settings)
    again = MemorySink()
    run_online(Environment(SMALL), [Arm("r", builtin="random")], 300, sink=again)
    first = MemorySink()
    run_online(Environment(SMALL), [Arm("r", builtin="random")], 300, sink=first)
    assert [e.SerializeToString() for e in again.events] == [e.SerializeToString() for e in first.events]
    assert len(first.items) == len(env.catalog)


def test_arms_parse_and_assignment() -> None:
    assert parse_arm("c=random") == Arm("c", builtin="random")
    assert parse_arm("p=popularity:0.25") == Arm("p", builtin="popularity", weight=0.25)
    assert parse_arm("m=model:aw_moe_cl") == Arm("m", model="aw_moe_cl")
    assert parse_arm("m=model:din@3") == Arm("m", model="din", version=3)
    assert parse_arm("m=model:din@3:2") == Arm("m", model="din", version=3, weight=2.0)
    assert parse_arm("m=model:din:0.5") == Arm("m", model="din", weight=0.5)
    assert parse_arm("m=model:din@3").describe() == "model:din@3"
    for bad in ("random", "=random", "x=bogus", "x=random:-1", "x=model:din@x"):
        with pytest.raises(ValueError):
            parse_arm(bad)
    with pytest.raises(ValueError, match="unique"):
        check_arms([Arm("a", builtin="random"), Arm("a", builtin="oracle")])
    arms = [Arm("a", builtin="random", weight=1), Arm("b", builtin="random", weight=3),
            Arm("c", builtin="random", weight=1)]
    users = [f"user-{i}" for i in range(20000)]
    got = Counter(assign(u, arms, "s1").name for u in users)
    assert got["b"] / len(users) == pytest.approx(0.6, abs=0.02)
    assert got["a"] / len(users) == pytest.approx(0.2, abs=0.02)
    assert [assign(u, arms, "s1").name for u in users[:500]] == [assign(u, arms, "s1").name for u in users[:500]]
    moved = sum(assign(u, arms, "s1").name != assign(u, arms, "s2").name for u in users[:2000])
    assert moved > 500  # another salt re-randomises


def test_online_run_records_every_request() -> None:
    env = Environment(SMALL)
    arms = [Arm("rand", builtin="random"), Arm("orc", builtin="oracle"), Arm("pop", builtin="popularity")]
    result = run_online(env, arms, 1500)
    cols = result.columns()
    assert len(result) == 1500 and set(cols["arm"]) == {"rand", "orc", "pop"}
    assert np.all(cols["impressions"] == SMALL.slate_size) and np.all(cols["model_version"] == 0)
    assert np.all(cols["clicks"] >= cols["carts"]) and np.all(cols["carts"] >= cols["purchases"])
    ndcg = {a: cols["ndcg"][cols["arm"] == a].mean() for a in ("rand", "orc", "pop")}
    assert ndcg["orc"] == pytest.approx(1.0) and ndcg["rand"] < ndcg["pop"] < ndcg["orc"]
    with pytest.raises(ValueError, match="ScorerClient"):
        run_online(env, [Arm("m", model="aw_moe_cl")], 10)
