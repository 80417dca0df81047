"""The gRPC scorer against real parts: embedded broker, RocksDB replica, registry on disk, loopback gRPC."""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from streamrank.broker import free_port
from streamrank.config import Settings
from streamrank.features.raw import Behaviors, Candidate, Counts, ItemAttrs, RequestContext
from streamrank.registry.store import Registry
from streamrank.serve.models import load_ranker
from streamrank.v1 import ranking_pb2
from tests.servetools import (
    ScorerThread,
    catalog,
    produce_state,
    publish,
    rank_request,
    running_scorer,
    trained_files,
    user_features,
)

_TRAINED: dict[tuple[str, int, int], dict[str, bytes]] = {}


def _trained(settings: Settings, n: int = 2048, seed: int = 0) -> dict[str, bytes]:
    """Trained DIN files, cached across tests (training is deterministic per seed)."""
    key = ("din", n, seed)
    if key not in _TRAINED:
        _TRAINED[key] = trained_files(settings, "din", n=n, seed=seed)
    return _TRAINED[key]


@pytest.fixture
def serve_settings(settings: Settings) -> Settings:
    return settings.with_overrides(serve_port=0, serve_metrics_port=0, serve_models="din", serve_retrieval="",
                                   serve_poll_s=0.2, registry_keep=50)


@pytest.fixture
def world(serve_settings: Settings) -> Settings:
    """One trained DIN version, a catalog, a user with history and click counters, item stats."""
    publish(serve_settings, "din", _trained(serve_settings))
    produce_state(
        serve_settings,
        [user_features("u1", ["i0", "i8", "i16"], ["c0", "c0", "c0"], clicks={"i8": 2})],
        catalog(),
        [("web", "i3", [100, 40, 0, 5]), ("web", "i4", [100, 1, 0, 0])],
    )
    return serve_settings


def _expected(settings: Settings, version: int, ctx: RequestContext, cands: list[Candidate]) -> np.ndarray:
    return load_ranker(Registry(settings.registry_root(), "din"), version).score(ctx, cands)


def test_rank_uses_replica_features_and_names_its_version(world: Settings) -> None:
    items = [f"i{k}" for k in range(10)]
    with running_scorer(world) as st:
        resp = st.stub().Rank(rank_request("u1", items, scenario="web", request_id="r1"), timeout=10)
    assert resp.request_id == "r1" and resp.model == "din" and resp.model_version == 1
    scores = [it.score for it in resp.items]
    assert sorted(it.item_id for it in resp.items) == sorted(items)
    assert scores == sorted(scores, reverse=True)
    # Recompute from the registry with the features the replica should have supplied.
    ctx = RequestContext("u1", Behaviors(["i0", "i8", "i16"], [2, 2, 2], [0, 0, 0], ["c0", "c0", "c0"]),
                         scenario="web")
    cat = {f"i{k}": f"c{k % 8}" for k in range(10)}
    counts = {"i3": Counts(100, 40, 5), "i4": Counts(100, 1, 0), "i8": Counts(user_item_clicks=2)}
    cands = [Candidate(i, ItemAttrs(category=cat[i]), counts.get(i, Counts())) for i in items]
    for c in cands:
        c.counts.user_category_clicks = 0
    expected = dict(zip(items, _expected(world, 1, ctx, cands).tolist(), strict=True))
    for it in resp.items:
        assert it.score == pytest.approx(expected[it.item_id], abs=1e-6)


def test_cold_start_override_and_request_attributes(world: Settings) -> None:
    with running_scorer(world) as st:
        stub = st.stub()
        cold = stub.Rank(rank_request("nobody", ["i0", "i1", "new-item"]), timeout=10)
        assert len(cold.items) == 3 and all(0 <= it.score <= 1 for it in cold.items)
        stored = stub.Rank(rank_request("u1", ["i0", "i1"]), timeout=10)
        req = rank_request("u1", ["i0", "i1"])
        req.behaviors.SetInParent()  # present and empty: "this user has no history", overriding the replica
        empty = stub.Rank(req, timeout=10)
        assert {i.item_id: i.score for i in stored.items} != {i.item_id: i.score for i in empty.items}
        with_attrs = rank_request("u1", ["i1"])
        with_attrs.candidates[0].attributes.category = "c0"
        a = stub.Rank(with_attrs, timeout=10).items[0].score
        b = stub.Rank(rank_request("u1", ["i1"]), timeout=10).items[0].score
        assert a != b  # the request's category replaced the catalog's c1
        assert len(stub.Rank(ranking_pb2.RankRequest(user_id="u1"), timeout=10).items) == 0


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: [r.candidates.add(item_id=f"x{k}") for k in range(1001)], "candidates (limit 1000)"),
    (lambda r: r.candidates.add(item_id=""), "item_id is empty"),
    (lambda r: setattr(r, "model", "nope"), "unknown model 'nope'"),
    (lambda r: r.behaviors.item_ids.extend(["a", "b"]) or r.behaviors.types.append(2), "behaviors.types has 1"),
    (lambda r: r.behaviors.item_ids.append("a") or r.behaviors.types.append(9), "unknown event types [9]"),
    (lambda r: setattr(r.candidates.add(item_id="p").attributes, "price", float("nan")), "price must be a finite"),
    (lambda r: setattr(r, "user_id", "x" * 300), "user_id has 300 characters"),
    (lambda r: setattr(r.candidates.add(item_id="p").attributes, "price", 1e308), "price must be a finite"),
    (lambda r: r.behaviors.item_ids.append("a") or r.behaviors.ts_ms.append(-2**63), "ts_ms[0] must be > 0"),
    (lambda r: r.behaviors.item_ids.append("a") or r.behaviors.ts_ms.append(2**63 - 1), "ms ahead of now"),
    (lambda r: setattr(r, "user_id", "a\x01"), "user_id contains control characters"),
])
def test_bad_rank_requests_get_invalid_argument(world: Settings, mutate, message: str) -> None:
    with running_scorer(world) as st:
        stub = st.stub()
        req = rank_request("u1", ["i0"])
        mutate(req)
        with pytest.raises(grpc.RpcError) as err:
            stub.Rank(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details()
        assert len(stub.Rank(rank_request("u1", ["i0"]), timeout=10).items) == 1  # still serving


def test_retrieve_without_index_is_unavailable_and_k_is_checked(world: Settings) -> None:
    with running_scorer(world) as st:
        stub = st.stub()
        with pytest.raises(grpc.RpcError) as err:
            stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=0), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "k must be in 1..1000" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=10), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_reflection_and_metrics(world: Settings) -> None:
    port = free_port()
    with running_scorer(world.with_overrides(serve_metrics_port=port)) as st:
        channel = st.channel()
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="streamrank.v1.RankingService"), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answers[0].list_services_response.service}
        assert "streamrank.v1.RankingService" in names and "grpc.health.v1.Health" in names
        st.stub().Rank(rank_request("u1", ["i0", "i1"]), timeout=10)
        with pytest.raises(grpc.RpcError):
            st.stub().Rank(rank_request("u1", [""]), timeout=10)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    # counted under the model that answered (the default one) and, once chosen, its version
    assert 'streamrank_request_seconds_count{method="Rank",model="din",version="1"} 1.0' in text
    assert 'streamrank_responses_total{code="OK",method="Rank",model="din",version="1"} 1.0' in text
    assert 'streamrank_responses_total{code="INVALID_ARGUMENT",method="Rank",model="din",version=""} 1.0' in text
    assert 'streamrank_model_version{model="din"} 1.0' in text
    assert 'streamrank_replica_lag_records{topic=' in text


def test_hot_swap_under_load_every_response_matches_its_version(world: Settings) -> None:
    items = [f"i{k}" for k in range(30)]
    responses: list[ranking_pb2.RankResponse] = []
    failures: list[str] = []
    stop = threading.Event()
    versions_files = [_trained(world, n=1024, seed=s) for s in range(1, 6)]
    with running_scorer(world) as st:
        def load() -> None:
            stub = st.stub()
            while not stop.is_set():
                try:
                    responses.append(stub.Rank(rank_request("u1", items, scenario="web"), timeout=10))
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")
        clients = [threading.Thread(target=load) for _ in range(3)]
        for c in clients:
            c.start()
        for files in versions_files:  # a new version every second while the clients run
            time.sleep(1.0)
            publish(world, "din", files)
        time.sleep(1.0)
        stop.set()
        for c in clients:
            c.join(30)
    assert failures == []
    served = {r.model_version for r in responses}
    assert len(served) >= 4 and max(served) == 6, served
    registry = Registry(world.registry_root(), "din")
    rankers = {v: load_ranker(registry, v) for v in served}
    ctx = RequestContext("u1", Behaviors(["i0", "i8", "i16"], [2, 2, 2], [0, 0, 0], ["c0", "c0", "c0"]),
                         scenario="web")
    counts = {"i3": Counts(100, 40, 5), "i4": Counts(100, 1, 0), "i8": Counts(user_item_clicks=2)}
    cands = [Candidate(i, ItemAttrs(category=f"c{int(i[1:]) % 8}"), counts.get(i, Counts())) for i in items]
    expected = {v: dict(zip(items, r.score(ctx, cands).tolist(), strict=True)) for v, r in rankers.items()}
    for resp in responses:
        exp = expected[resp.model_version]
        assert all(abs(it.score - exp[it.item_id]) < 1e-5 for it in resp.items), resp.model_version


def test_broken_version_is_refused_and_live_one_keeps_serving(world: Settings) -> None:
    with running_scorer(world) as st:
        files = dict(_trained(world, n=1024, seed=1))
        files["model.pt"] = b"not a torch file"
        publish(world, "din", files)
        deadline = time.monotonic() + 10
        while 2 not in st.scorer.watcher.failed.get("din", {}) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 2 in st.scorer.watcher.failed["din"]
        assert st.stub().Rank(rank_request("u1", ["i0"]), timeout=10).model_version == 1


def test_restarted_scorer_serves_same_scores_from_its_replica(world: Settings, tmp_path) -> None:
    items = [f"i{k}" for k in range(12)]
    replica = str(tmp_path / "replica")
    with running_scorer(world, replica) as st:
        before = st.stub().Rank(rank_request("u1", items, scenario="web"), timeout=10)
        applied = st.scorer.replica.records_applied
    assert applied > 0
    # Restart against an empty topic namespace: the only source of u1's features is the replica on disk.
    elsewhere = world.with_overrides(topic_prefix=world.topic_prefix + "gone.")
    produce_state(elsewhere, [], [])
    with running_scorer(elsewhere, replica) as st:
        after = st.stub().Rank(rank_request("u1", items, scenario="web"), timeout=10)
    assert [(i.item_id, i.score) for i in after.items] == [(i.item_id, i.score) for i in before.items]
    # Restart on the original topics: it resumes from its stored offsets (nothing re-applied) and catches up.
    produce_state(world, [user_features("u2", ["i1"], ["c1"])], [])
    with running_scorer(world, replica) as st:
        assert st.scorer.replica.records_applied == 1
        assert st.scorer.replica.user("u2") is not None


def test_graceful_shutdown_finishes_in_flight_calls(world: Settings) -> None:
    st = ScorerThread(world).start()
    stub = st.stub()
    req = rank_request("u1", [f"i{k}" for k in range(200)])
    req.behaviors.item_ids.extend(f"i{k}" for k in range(50))
    futures = [stub.Rank.future(req, timeout=30) for _ in range(20)]
    time.sleep(0.05)
    st.stop(grace_s=20)
    codes = []
    for f in futures:
        try:
            f.result()
            codes.append("OK")
        except grpc.RpcError as exc:
            codes.append(exc.code().name)
    # Every call the server started (each is counted, whatever its code) was answered OK: none was cancelled by
    # the shutdown. Calls that had not reached the servicer yet are refused (UNAVAILABLE or CANCELLED).
    served = sum(s.value for m in st.scorer.metrics.responses.collect() for s in m.samples
                 if s.name.endswith("_total") and s.labels["method"] == "Rank")
    assert codes.count("OK") == served >= 1, (codes, served)
    assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, codes
