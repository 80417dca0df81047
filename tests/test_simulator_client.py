"""The simulator's gRPC client and the log replay against a real scorer on loopback and the embedded broker."""

from __future__ import annotations

import time

import grpc
import pytest
from kafka import KafkaConsumer

from simulator.arms import FALLBACK_VERSION, Arm
from simulator.catalog import CatalogParams
from simulator.client import ScorerClient, ScorerError
from simulator.environment import Environment, EnvParams
from simulator.online import run_online
from simulator.publish import KafkaSink
from simulator.replay import run_replay
from simulator.replay_log import LoggedInteraction
from streamrank.broker import free_port
from streamrank.config import Settings
from streamrank.v1 import events_pb2, ranking_pb2
from tests import servetools
from tests.servetools import running_scorer
from tests.synthetic_samples import T0

SMALL = EnvParams(n_users=50, catalog=CatalogParams(n_items=200, n_categories=8, n_brands=20), n_candidates=30)


@pytest.fixture
def scorer_world(settings: Settings) -> Settings:
    """Serving settings with a DIN version, a retrieval version and a little state published."""
    return servetools.scorer_world(settings)


def test_client_calls_errors_and_replay(scorer_world: Settings) -> None:
    with running_scorer(scorer_world) as st, ScorerClient(f"127.0.0.1:{st.port}", max_inflight=2) as client:
        client.wait_ready(10)
        got = client.retrieve("u1", 5, request_id="q")
        direct = st.stub().Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=5), timeout=10)
        assert got.items == [i.item_id for i in direct.items] and got.version == direct.index_version == 1
        ranked = client.rank("u1", ["i0", "i1", "i2", "i3"], scenario="web", attributes=[
            None, events_pb2.ItemAttributes(category="c1"), None, None])
        assert sorted(ranked.items) == ["i0", "i1", "i2", "i3"] and ranked.model == "din" and ranked.version == 1
        assert ranked.scores == sorted(ranked.scores, reverse=True)
        futures = [client.rank_async(f"u{n}", ["i0", "i1", "i2"]) for n in range(20)]  # > max_inflight
        assert all(f.result(10).version == 1 for f in futures)
        with pytest.raises(ScorerError) as bad:
            client.rank("u1", ["i0"], model="no-such-model")
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT and not bad.value.unavailable
        assert "Rank" in str(bad.value) and str(st.port) in str(bad.value)

        # Replay: Retrieve then Rank (model arm) or random, events to the embedded broker, logged-item ranks.
        logged = [LoggedInteraction(f"u{n % 4}", f"i{(5 * n) % 40}", T0 + 60_000 * n,
                                    events_pb2.PURCHASE if n % 3 == 0 else events_pb2.CLICK, "web",
                                    f"u{n % 4}/s1") for n in range(40)]
        arms = [Arm("model", model="din"), Arm("random", builtin="random")]
        sink = KafkaSink(scorer_world)
        result = run_replay(logged, arms, client=client, sink=sink, candidates="retrieve", retrieve_k=40,
                            slate_size=5, ks=(5, 40), concurrency=8)
        sink.close()

        # Online: a model arm ranks through the scorer and every response names its version.
        online = run_online(Environment(SMALL), [Arm("model", model="din"), Arm("pop", builtin="popularity")], 120,
                            client=client, concurrency=8)
    served = online.columns()
    assert set(served["model_version"][served["arm"] == "model"]) == {1}
    assert set(served["served_by"][served["arm"] == "model"]) == {"model:din"}
    cols = result.columns()
    assert len(result) == 40 and set(result.retrieval_versions) == {1}
    assert set(cols["arm"]) == {"model", "random"}
    assert set(cols["model_version"][cols["arm"] == "model"]) == {1}
    assert cols["in_candidates"].all() and cols["hit@40"].all()  # k = 40 retrieves the whole catalog
    consumer = KafkaConsumer(scorer_world.topic("events"), bootstrap_servers=scorer_world.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    events = []
    deadline = time.monotonic() + 20
    while len(events) < sink.sent and time.monotonic() < deadline:
        for message in consumer:
            event = events_pb2.Event()
            event.ParseFromString(message.value)
            assert message.key == event.user_id.encode()
            events.append(event)
    consumer.close()
    assert len(events) == sink.sent
    clicks = [e for e in events if e.type == events_pb2.CLICK]
    buys = [e for e in events if e.type == events_pb2.PURCHASE]
    assert len(clicks) == 40 and len(buys) == 14
    impressions = {(e.request_id, e.item_id) for e in events if e.type == events_pb2.IMPRESSION}
    assert all((c.request_id, c.item_id) in impressions for c in clicks)  # every click labels an impression


def test_unreachable_scorer_is_a_clear_unavailable_error() -> None:
    with ScorerClient(f"127.0.0.1:{free_port()}", timeout_s=1.0) as client:
        with pytest.raises(ScorerError) as err:
            client.rank("u1", ["i0"])
        assert err.value.unavailable and "UNAVAILABLE" in str(err.value)
        with pytest.raises(ScorerError, match="not SERVING"):
            client.wait_ready(0.5)
        result = run_online(Environment(SMALL), [Arm("model", model="din", fallback="popularity")], 30, client=client)
    assert set(result.model_version) == {FALLBACK_VERSION} and set(result.served_by) == {"fallback:popularity"}
