"""The world `streamrank bench serve` measures: ML-1M users and catalog in the topics, models in a registry.

- Ranking: an AW-MoE & CL model whose vocabularies cover ML-1M (users, films, genres), with default dense
  features. Its weights are freshly initialised: latency depends on shapes, not on what was learned.
- User features: each ML-1M user's last 50 ratings as clicks, on the user-features topic as the worker
  writes them, so Rank reads 50 behaviours per user from the scorer's replica.
- Retrieval: a base two-tower model trained on the first `tower_ratings` ML-1M ratings (default all, one
  epoch, about three minutes on 2 cores; `streamrank.train.retrieval_serving`: stream-available fields
  only), so that user vectors and item vectors have the geometry of a trained model; `tower_ratings=0` keeps
  it untrained (the quick smoke run). `retrieval` indexes the ML-1M catalog through its item tower.
  `retrieval-1m` is the same model over a 1M-item catalog made from it: each synthetic item is a real film's
  item-tower vector plus Gaussian noise of relative norm `SPREAD` (`scaled_catalog`), since ML-1M has only
  3,706 films. Its recall@100 against exact search is measured, and the index's search width tuned to 0.95,
  with 500 real users' user-tower vectors (their last 50 ratings) as queries: what Retrieve really searches
  with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from kafka import KafkaProducer

from streamrank.config import Settings
from streamrank.data.movielens import load_movielens
from streamrank.data.requests import movielens_items
from streamrank.events.producer import produce_items
from streamrank.features.raw import Behaviors, Candidate, ItemAttrs, RawExample, RequestContext
from streamrank.features.spec import FeatureSpec
from streamrank.index import build_index
from streamrank.index.refresh import build_retrieval, item_candidate, package_retrieval, publish_retrieval
from streamrank.models.ranking.artifact import model_files
from streamrank.models.ranking.config import make_config
from streamrank.models.ranking.moe import RankingModel
from streamrank.models.retrieval import build_retrieval_model, retrieval_files
from streamrank.models.retrieval.artifact import retrieval_from_files
from streamrank.models.retrieval.model import TwoTowerModel
from streamrank.registry.store import Registry
from streamrank.topics import ensure_topics
from streamrank.train.retrieval_serving import train_servable
from streamrank.v1 import events_pb2, features_pb2

HISTORY = 50
SPREAD = 0.5  # noise norm of a synthetic item relative to its film's vector


@dataclass
class World:
    """What the load generator needs to build requests."""

    users: list[str]
    items: list[str]
    categories: dict[str, str]
    histories: dict[str, Behaviors]
    ranker: str
    retrieval_names: dict[str, int]  # name -> catalog size


def _histories(limit_users: int | None) -> tuple[dict[str, Behaviors], dict[str, str], list[events_pb2.Item]]:
    ml = load_movielens("ml-1m")
    catalog = list(movielens_items(ml))
    category = {it.item_id: it.category for it in catalog}
    r = ml.ratings
    by_user: dict[str, list[int]] = {}
    for row, user in enumerate(r.user_id.tolist()):
        by_user.setdefault(user, []).append(row)
    users = sorted(by_user)[:limit_users] if limit_users else sorted(by_user)
    items, stamps = r.item_id, r.ts_s
    histories = {}
    for user in users:
        rows = by_user[user][-HISTORY:]
        ids = [str(items[i]) for i in rows]
        ts = [int(stamps[i]) * 1000 for i in rows]
        histories[user] = Behaviors(ids, [events_pb2.CLICK] * len(ids), ts, [category.get(i, "") for i in ids])
    return histories, category, catalog


def _spec(histories: dict[str, Behaviors], catalog: list[events_pb2.Item], dense: bool) -> FeatureSpec:
    examples = [RawExample(user, it.item_id, item=ItemAttrs(category=it.category), scenario="web")
                for user, it in zip(histories, catalog * (len(histories) // len(catalog) + 1), strict=False)]
    examples += [RawExample("", it.item_id, item=ItemAttrs(category=it.category)) for it in catalog]
    spec = FeatureSpec(max_seq_len=HISTORY) if dense else FeatureSpec(max_seq_len=20, dense=())
    return spec.fit(examples)


def _produce_users(settings: Settings, histories: dict[str, Behaviors]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20)
    try:
        for user, b in histories.items():
            msg = features_pb2.UserFeatures(user_id=user, updated_ms=max(b.ts_ms or [0]), clicks=len(b))
            msg.behaviors.item_ids.extend(b.item_ids)
            msg.behaviors.types.extend(b.types)
            msg.behaviors.ts_ms.extend(b.ts_ms)
            msg.behaviors.categories.extend(b.categories)
            producer.send(settings.topic("user-features"), key=user.encode(), value=msg.SerializeToString())
        producer.flush()
    finally:
        producer.close()


def scaled_catalog(item_vectors: np.ndarray, n: int, spread: float = SPREAD, seed: int = 3) -> np.ndarray:
    """`n` float32 vectors, each a random row of `item_vectors` plus isotropic noise of expected norm
    `spread` x that row's norm: a large catalog with the geometry (norms, clusters) of a trained item tower."""
    rng = np.random.default_rng(seed)
    base = np.asarray(item_vectors, dtype=np.float32)
    dim = base.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65_536):
        stop = min(n, start + 65_536)
        rows = base[rng.integers(0, len(base), size=stop - start)]
        scale = np.float32(spread / np.sqrt(dim)) * np.linalg.norm(rows, axis=1, keepdims=True)
        out[start:stop] = rows + scale * rng.standard_normal((stop - start, dim), dtype=np.float32)
    return out


def _two_tower(histories: dict[str, Behaviors], catalog: list[events_pb2.Item], tower_ratings: int,
               log) -> tuple[dict[str, bytes], TwoTowerModel]:
    """The retrieval model's registry files and the model: trained on ML-1M, or untrained when 0 ratings."""
    if tower_ratings <= 0:
        model = build_retrieval_model("base", _spec(histories, catalog, dense=False))
        return retrieval_files(model, "base"), model
    t = time.perf_counter()
    ml = load_movielens("ml-1m")
    servable = train_servable(ml, min(tower_ratings, len(ml.ratings.user_id)), "base", epochs=1)
    log(f"  two-tower: base trained on {servable.ratings:,} ML-1M ratings, 1 epoch "
        f"({time.perf_counter() - t:.0f}s)")
    model, _ = retrieval_from_files(servable.files)
    return servable.files, model


def prepare(settings: Settings, ranker: str = "aw_moe_cl", synthetic_items: int = 1_000_000,
            limit_users: int | None = None, tower_ratings: int = 1_000_209, log=print) -> World:
    """Publishes models, catalog and user features; returns what requests are built from."""
    torch.manual_seed(0)
    ensure_topics(settings)
    t = time.perf_counter()
    histories, category, catalog = _histories(limit_users)
    produce_items(settings, catalog, progress=False)
    _produce_users(settings, histories)
    log(f"  topics: {len(catalog):,} items, {len(histories):,} users with {HISTORY} behaviours "
        f"({time.perf_counter() - t:.1f}s)")
    model = RankingModel(_spec(histories, catalog, dense=True), make_config(ranker))
    Registry(settings.registry_root(), ranker).publish(model_files(model, ranker), {"bench": "serve"})
    files, two_tower = _two_tower(histories, catalog, tower_ratings, log)
    built = build_retrieval(files, catalog, "base", 1)
    publish_retrieval(settings, "retrieval", built)
    names = {"retrieval": len(catalog)}
    if synthetic_items:
        t = time.perf_counter()
        vectors = scaled_catalog(two_tower.encode_items([item_candidate(it) for it in catalog]), synthetic_items)
        # recall is measured on what Retrieve really searches with: the user tower's vectors of real users
        users = list(histories)[:500]
        queries = two_tower.encode_users([RequestContext(u, histories[u]) for u in users])
        index = build_index(vectors, [f"syn{i}" for i in range(synthetic_items)], model="base", model_version=1,
                            recall_sample=queries, target_recall=0.95)
        publish_retrieval(settings, "retrieval-1m", package_retrieval(files, index, "base",
                                                                      time.perf_counter() - t))
        log(f"  1M index: {index.meta.kind} {index.meta.params}, recall@{index.meta.recall_k} "
            f"{index.meta.recall_at_k:.4f}, built in {time.perf_counter() - t:.0f}s")
        names["retrieval-1m"] = synthetic_items
    return World(list(histories), [it.item_id for it in catalog], category, histories, ranker, names)


def candidates_of(world: World, rng: np.random.Generator, n: int) -> list[Candidate]:
    """n distinct catalog items as candidates (attributes as the catalog has them)."""
    picks = rng.choice(len(world.items), size=n, replace=False)
    return [Candidate(world.items[i], ItemAttrs(category=world.categories[world.items[i]])) for i in picks]
