"""Helpers for scorer tests: trained model versions in a registry, worker-like topic records, a scorer thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import torch
from kafka import KafkaProducer

from streamrank.config import Settings
from streamrank.features.raw import RawExample
from streamrank.features.spec import FeatureSpec
from streamrank.index.refresh import build_retrieval
from streamrank.index.refresh import publish_retrieval as publish_build
from streamrank.models.ranking.artifact import model_files
from streamrank.models.retrieval import build_retrieval_model, retrieval_files
from streamrank.registry.store import Registry
from streamrank.serve.server import Scorer
from streamrank.stream.encode import item_stats_record
from streamrank.topics import ensure_topics
from streamrank.train.learner import OnlineLearner
from streamrank.v1 import events_pb2, features_pb2, ranking_pb2, ranking_pb2_grpc
from tests.synthetic_samples import T0, make_samples


def trained_files(settings: Settings, preset: str = "din", n: int = 2048, seed: int = 0) -> dict[str, bytes]:
    """Artefact files of a small model trained on synthetic samples (users u0.., items i0.., categories c0..)."""
    learner = OnlineLearner(settings, preset, seed=seed)
    samples = make_samples(n, seed=seed)
    for start in range(0, n, 512):
        learner.learn(samples[start:start + 512])
    return model_files(learner.model, preset)


def publish(settings: Settings, name: str, files: dict[str, bytes]) -> int:
    """Publishes a version and makes it current; returns its number."""
    return Registry(settings.registry_root(), name).publish(files, {"test": True}).version


def user_features(user_id: str, items: list[str], categories: list[str], clicks: dict[str, int] | None = None,
                  ts: int = T0) -> features_pb2.UserFeatures:
    """A UserFeatures snapshot as the worker writes it (clicks only)."""
    msg = features_pb2.UserFeatures(user_id=user_id, updated_ms=ts, clicks=len(items))
    msg.behaviors.item_ids.extend(items)
    msg.behaviors.categories.extend(categories)
    msg.behaviors.types.extend([events_pb2.CLICK] * len(items))
    msg.behaviors.ts_ms.extend(ts - 1000 * (len(items) - k) for k in range(len(items)))
    msg.item_clicks.update(clicks or {})
    return msg


def produce_state(settings: Settings, users: list[features_pb2.UserFeatures], items: list[events_pb2.Item],
                  stats: list[tuple[str, str, list[int]]] = ()) -> None:
    """Writes user snapshots, catalog entries and item stats (scenario, item, counts) to their topics."""
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    try:
        for u in users:
            producer.send(settings.topic("user-features"), key=u.user_id.encode(), value=u.SerializeToString())
        for it in items:
            producer.send(settings.topic("items"), key=it.item_id.encode(), value=it.SerializeToString())
        for scenario, item_id, counts in stats:
            key, value = item_stats_record(scenario, item_id, "w1", counts, T0)
            producer.send(settings.topic("item-stats"), key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def catalog(n: int = 40, categories: int = 8) -> list[events_pb2.Item]:
    """Catalog entries i0..i{n-1} in categories c0.. (the synthetic samples' convention)."""
    return [events_pb2.Item(item_id=f"i{i}", title=f"item {i}", category=f"c{i % categories}") for i in range(n)]


class ScorerThread:
    """A Scorer running on its own asyncio loop in a thread, so tests can call it with a blocking channel."""

    def __init__(self, settings: Settings, replica_dir: str | None = None) -> None:
        self.scorer = Scorer(settings, replica_dir)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def start(self, ready_timeout_s: float = 60, wait_ready: bool = True) -> ScorerThread:
        """Starts the scorer and (with wait_ready) waits until it reports ready (models loaded, replica caught
        up)."""
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.scorer.start(), self.loop).result(60)
        if not wait_ready:
            return self
        deadline = time.monotonic() + ready_timeout_s
        while not self.scorer.ready():
            if time.monotonic() > deadline:
                raise TimeoutError("scorer not ready")
            time.sleep(0.05)
        asyncio.run_coroutine_threadsafe(self.scorer.update_health(), self.loop).result(10)
        return self

    def stop(self, grace_s: float = 5) -> None:
        """Graceful stop, then the loop."""
        asyncio.run_coroutine_threadsafe(self.scorer.stop(grace_s), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def channel(self) -> grpc.Channel:
        """A blocking channel to the scorer."""
        return grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def stub(self) -> ranking_pb2_grpc.RankingServiceStub:
        """A blocking RankingService stub on a new channel."""
        return ranking_pb2_grpc.RankingServiceStub(self.channel())


@contextmanager
def running_scorer(settings: Settings, replica_dir: str | None = None) -> Iterator[ScorerThread]:
    """A started ScorerThread, stopped on exit."""
    st = ScorerThread(settings, replica_dir).start()
    try:
        yield st
    finally:
        st.stop()


def rank_request(user_id: str, items: list[str], **kw: object) -> ranking_pb2.RankRequest:
    """A RankRequest for these candidate ids."""
    req = ranking_pb2.RankRequest(user_id=user_id, **kw)  # type: ignore[arg-type]
    for item_id in items:
        req.candidates.add(item_id=item_id)
    return req


def retrieval_model_files(seed: int = 0) -> dict[str, bytes]:
    """An (untrained, seeded) base two-tower model whose vocabularies cover the synthetic users and items."""
    torch.manual_seed(seed)
    examples = [RawExample.from_sample(s) for s in make_samples(400, seed=seed)]
    spec = FeatureSpec(max_seq_len=20, dense=()).fit(examples)
    return retrieval_files(build_retrieval_model("base", spec), "base")


def publish_retrieval(settings: Settings, seed: int = 0, version: int = 1) -> int:
    """Builds the retrieval version over the synthetic catalog and publishes it as `retrieval`."""
    build = build_retrieval(retrieval_model_files(seed), catalog(), "base", version)
    return publish_build(settings, "retrieval", build).version


def scorer_world(settings: Settings) -> Settings:
    """Serving settings, a DIN version, a retrieval version and a little user/catalog state, all published."""
    s = settings.with_overrides(serve_port=0, serve_metrics_port=0, serve_models="din", serve_retrieval="retrieval",
                                serve_poll_s=0.2)
    publish(s, "din", trained_files(s, "din", n=512))
    publish_retrieval(s)
    produce_state(s, [user_features("u1", ["i0", "i8", "i16"], ["c0", "c0", "c0"])], catalog())
    return s
