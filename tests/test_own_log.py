"""A user's own log (not MovieLens) through the dataset layer: order check, interactions, request stream,
the offline benchmark, the served retrieval model and the replay's options. All logs are generated here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from simulator.replay_log import log_interactions
from simulator.shoplog import ShopParams, write_shop_log
from streamrank.cli import main as streamrank_main
from streamrank.data.dataset import load_dataset
from streamrank.data.eventlog import write_events, write_items
from streamrank.data.eventlog_dataset import EventOrderError, load_event_log, out_of_order
from streamrank.data.requests import catalog_items, count_events, log_events, request_events
from streamrank.v1 import events_pb2

SMALL = ShopParams(users=120, items=90, orders=1500, click_rate=0.3)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    orders, items = write_shop_log(tmp_path_factory.mktemp("shop"), SMALL)
    return str(orders), str(items)


def test_user_grouped_log_is_sorted_with_a_count_or_refused(tmp_path: Path, shop, caplog) -> None:
    grouped, _ = write_shop_log(tmp_path, SMALL, grouped_by_user=True)
    timed = load_event_log(shop[0], shop[1])
    with pytest.raises(EventOrderError, match=r"[\d,]+ of [\d,]+ events are more than 1 s earlier"):
        load_event_log(str(grouped), shop[1], order="refuse")
    with caplog.at_level(logging.WARNING):
        resorted = load_event_log(str(grouped), shop[1])
    late = next(r.getMessage() for r in caplog.records if "sorted by event time" in r.getMessage())
    count = int(late.split(": ", 1)[1].split(" of ")[0].replace(",", ""))
    assert count > 1000  # most of a user-grouped log steps back in time
    # Sorted, the grouped export gives exactly the interactions of the time-ordered one.
    for column in ("user_id", "item_id", "rating", "ts_ms"):
        assert np.array_equal(getattr(resorted.ratings, column), getattr(timed.ratings, column))
    assert out_of_order(np.array([5, 3_000, 2_500, 4_000])) == 0  # within the 1 s tolerance
    assert out_of_order(np.array([5, 3_000, 1_000, 4_000])) == 1


def test_a_visit_is_one_interaction_of_its_strongest_type(tmp_path: Path) -> None:
    t = 1_717_200_000_000
    rows = [("c1", "u", "a", events_pb2.CLICK, t), ("k1", "u", "a", events_pb2.ADD_TO_CART, t + 60_000),
            ("o1", "u", "a", events_pb2.PURCHASE, t + 120_000), ("c2", "u", "a", events_pb2.CLICK, t + 7_200_000),
            ("c3", "v", "b", events_pb2.CLICK, t + 7_300_000)]
    write_events(tmp_path / "log.jsonl", [events_pb2.Event(event_id=e, user_id=u, item_id=i, type=k, ts_ms=ts)
                                          for e, u, i, k, ts in rows])
    data = load_dataset(str(tmp_path / "log.jsonl"))
    kinds = [x.kind for x in log_interactions(data)]
    assert kinds == [events_pb2.PURCHASE, events_pb2.CLICK, events_pb2.CLICK]  # 2 h later: a new visit
    assert data.items.keys() == {"a", "b"} and not data.has_impressions
    stream = list(request_events(data, negatives=1))
    assert [e.event_id for e in stream[:4]] == ["log-0-imp-0", "log-0-imp-1", "log-0-clk", "log-0-buy"]
    assert len(stream) == count_events(data, negatives=1) == 3 * 3 + 1


def test_an_orders_log_becomes_requests_with_the_documented_sampling(shop) -> None:
    data = load_dataset(*shop)
    assert data.source == "eventlog" and len(data.ratings) > 1400
    for sampling, pool in (("popularity", "log"), ("uniform", "log"), ("uniform", "catalog"), ("popularity", "past")):
        events = list(request_events(data, negatives=3, sampling=sampling, pool=pool, limit=400))
        shown = [e for e in events if e.type == events_pb2.IMPRESSION]
        clicked = {e.request_id for e in events if e.type == events_pb2.CLICK}
        assert len(shown) == 4 * 400 and len(clicked) == 400  # 1 positive of 4 shown per request
        per_request: dict[str, list[str]] = {}
        for e in shown:
            per_request.setdefault(e.request_id, []).append(e.item_id)
        assert all(len(set(v)) == 4 for v in per_request.values())  # no item twice in a slate
        assert {e.scenario for e in events} <= {"channel:app", "channel:web"}
        assert all(e.item.category for e in shown)  # the catalog's category on every impression
    first = {e.item_id for e in request_events(data, negatives=3, pool="past", limit=50)}
    log_items = set(data.ratings.item_id[:4096].tolist())
    assert first <= log_items  # "past": only items the log has shown interactions with (this chunk)
    published = {it.item_id: it for it in catalog_items(data)}
    assert published["sku-0001"].category == "cat1" and list(published["sku-0001"].tags) == ["cat1", "tag1"]
    assert len(list(log_events(data, limit=10))) == count_events(data, 1, 10)
    with pytest.raises(ValueError, match="negative pool"):
        request_events(data, pool="future")


def test_ranking_bench_quick_runs_on_an_orders_log(tmp_path: Path, shop) -> None:
    from streamrank.bench import ranking

    out = tmp_path / "bench"
    rc = ranking.main(["--quick", "--dataset", shop[0], "--items", shop[1], "--no-progress", "--no-ablation",
                       "--models", "dnn,din", "--negatives", "10", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "ranking-orders-quick.json").read_text())
    assert result["dataset"] == "orders" and "recbole" not in result  # RecBole's protocol needs star ratings
    stats = result["chronological"]["stats"]
    per_user = np.unique(load_dataset(*shop).ratings.user_id, return_counts=True)[1]
    assert stats["users"] == int((per_user >= 3).sum()) and stats["elderly_sessions"] == 0  # leave-last-out needs 3
    din = result["chronological"]["runs"]["din"][0]["full"]  # per seed
    assert len(din) == 1 and 0.5 < din[0]["session_auc"] <= 1.0  # the shop's preferences are learnable
    md = (out / "ranking-orders-quick.md").read_text()
    assert "no user ages in this data set" in md and "Table II" in md


def test_train_retrieval_then_index_build_and_a_catalog_that_does_not_match(tmp_path: Path, shop, capsys) -> None:
    model_dir = tmp_path / "retrieval"
    assert streamrank_main(["train-retrieval", "--dataset", shop[0], "--items", shop[1], "--out", str(model_dir),
                            "--epochs", "1", "--preset", "base", "--quiet"]) == 0
    assert (model_dir / "spec.json").is_file()
    data_dir = str(tmp_path / "var")
    assert streamrank_main(["index", "build", "--model-dir", str(model_dir), "--catalog", shop[1],
                            "--data-dir", data_dir, "--name", "shop-retrieval"]) == 0
    renamed = [events_pb2.Item(item_id=it.item_id, category=f"dept-{it.category}", tags=[f"x-{t}" for t in it.tags])
               for it in catalog_items(load_dataset(*shop))]
    write_items(tmp_path / "other.jsonl", renamed)
    capsys.readouterr()
    assert streamrank_main(["index", "build", "--model-dir", str(model_dir), "--catalog",
                            str(tmp_path / "other.jsonl"), "--data-dir", data_dir]) == 2
    assert "0% of the catalog's items have a category the retrieval model was trained with" in capsys.readouterr().err


def test_replay_skips_prefixes_and_keeps_repeat_purchases(tmp_path: Path, shop, capsys) -> None:
    from simulator.cli import main as simulate

    out = tmp_path / "report"
    rc = simulate(["replay", "--dataset", shop[0], "--items", shop[1], "--arms", "a=random", "b=popularity",
                   "--skip", "1000", "--limit", "300", "--request-prefix", "ab2", "--negatives", "20",
                   "--progress-every", "100", "--shadow", "--out", str(out), "--bootstrap", "50",
                   "--permutations", "50"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert {a["arm"]: a["requests"] for a in report["summary"]} == {"a": 300, "b": 300}
    assert report["training"]["probes"] == 0  # no --publish: no trainers to watch
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("replayed ")]
    assert len(lines) == 3 and lines[-1].startswith("replayed 300/300 interactions")  # every ~100, between batches
    assert simulate(["replay", "--dataset", shop[0], "--arms", "a=random", "--skip", "-1"]) == 2
    assert simulate(["replay", "--dataset", shop[0], "--arms", "a=model:din", "--pace-to-trainers", "10"]) == 2


@pytest.mark.slow
def test_an_orders_log_end_to_end_through_the_demo(broker, tmp_path: Path, capsys) -> None:
    """An interaction-only log (orders, no impressions) through every service: produce, worker, two online
    trainers, retrieval training, index build, scorer, replay A/B with training lag, report."""
    from streamrank.bench.online import read_samples
    from streamrank.config import load_settings
    from streamrank.demo import DemoPlan, run_demo

    orders, items = write_shop_log(tmp_path / "shop", ShopParams(users=200, items=150, orders=4000))
    prefix = f"own-{tmp_path.name}."
    plan = DemoPlan(dataset=str(orders), items=str(items), warm_ratings=3200, replay_ratings=600, retrieval_epochs=1,
                    data_dir=str(tmp_path / "demo"), report_dir=str(tmp_path / "report"), publish_every_s=2.0,
                    min_samples_to_publish=200, guardrail_margin=1.0, topic_prefix=prefix)
    assert run_demo(plan, bootstrap_servers=broker.bootstrap_servers) == 0
    samples = read_samples(load_settings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix))
    warm = [s for s in samples if s.request_id.startswith("orders-")]  # the warm-up's synthesised requests
    assert len(warm) >= 0.95 * 2 * 3200  # two impressions per order: the purchase and one sampled negative
    assert abs(np.mean([s.labels.click for s in warm]) - 0.5) < 0.02
    assert all(s.labels.purchase == s.labels.click for s in warm)  # an orders log: every click is a purchase
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {a["arm"] for a in report["summary"]} == {"treatment", "control"}
    assert sum(a["requests"] for a in report["summary"]) == 600
    training = report["training"]
    assert training["probes"] > 0 and all(t["lag_last"] is not None for t in training["arms"].values())
    # the scorer answered: a model version served each arm, the fallback at most a few requests (a call that
    # misses its deadline on a loaded 2-core machine falls back, by design)
    for arm in report["summary"]:
        t = training["arms"][arm["arm"]]
        assert max(t["versions_served"]) > 0 and t["fallback_requests"] <= 0.02 * arm["requests"], (arm, t)
    out = capsys.readouterr().out
    assert "trainer behind the stream by" in out


def test_a_log_with_impressions_is_published_as_it_is_in_time_order(tmp_path: Path) -> None:
    t = 1_717_200_000_000
    E = events_pb2.Event
    events = [E(event_id=f"r{r}-imp-{p}", user_id=f"u{r % 2}", item_id=f"i{p}", type=events_pb2.IMPRESSION,
                ts_ms=t + 10_000 * r, request_id=f"r{r}", position=p) for r in range(4) for p in range(3)]
    events += [E(event_id=f"r{r}-clk", user_id=f"u{r % 2}", item_id="i1", type=events_pb2.CLICK,
                 ts_ms=t + 10_000 * r + 5, request_id=f"r{r}", position=1) for r in range(4)]
    write_events(tmp_path / "log.jsonl", events[::-1])  # newest first: every event but one out of order
    data = load_dataset(str(tmp_path / "log.jsonl"))
    assert data.has_impressions and len(data.ratings) == 4
    published = list(log_events(data))
    assert sorted(e.event_id for e in published) == sorted(e.event_id for e in events)  # nothing synthesised
    assert [e.ts_ms for e in published] == sorted(e.ts_ms for e in events)
    assert {e.request_id for e in log_events(data, limit=2)} == {"r0", "r1"}  # the events before interaction 2
