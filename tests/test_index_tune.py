"""Search parameters tuned for a recall target on real queries: the doubling rule, IVF and HNSW builds that
reach the target, metadata that records the steps (and old metadata without them), and the recent users
that `index build` measures recall with, read from the user-features topic of the embedded broker."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from kafka import KafkaProducer

from streamrank.config import Settings
from streamrank.index import IndexMeta, build_index, index_files, index_from_files
from streamrank.index.recall import sample_queries
from streamrank.index.refresh import build_retrieval, recent_users
from streamrank.index.synthetic import clustered_embeddings
from streamrank.index.tune import tune_search
from streamrank.topics import ensure_topics
from tests.servetools import catalog, retrieval_model_files, user_features

N, DIM = 4000, 16


def test_doubling_stops_at_the_first_value_reaching_the_target_or_at_the_limit() -> None:
    exact = np.arange(10)[None, :]

    def search(value: int) -> np.ndarray:  # recall = value / 10: the first `value` exact items are found
        return np.where(np.arange(10) < value, np.arange(10), -1)[None, :]

    assert [(s.value, s.recall) for s in tune_search("ivf", 1, 64, exact, 0.6, search)] == \
        [(1, 0.1), (2, 0.2), (4, 0.4), (8, 0.8)]
    assert [s.value for s in tune_search("hnsw", 3, 5, exact, 0.99, search)] == [3, 5]  # capped: exhaustive
    assert [(s.value, s.recall) for s in tune_search("flat", 0, 0, exact, 0.99, search)] == [(0, 1.0)]


@pytest.mark.parametrize("kind, params", [("ivf", {"nlist": 64, "nprobe": 1}), ("hnsw", {"efSearch": 4})])
def test_build_widens_its_search_until_the_target_holds(kind: str, params: dict[str, int]) -> None:
    items = clustered_embeddings(N, DIM, n_centres=64, seed=1, centre_seed=0)
    ids = [f"i{k}" for k in range(N)]
    queries = sample_queries(items, 100, seed=5, noise=0.6)  # far from the items: the hard case
    plain = build_index(items, ids, kind=kind, recall_k=50, recall_sample=queries, **params)
    tuned = build_index(items, ids, kind=kind, recall_k=50, recall_sample=queries, target_recall=0.95, **params)
    name = "nprobe" if kind == "ivf" else "efSearch"
    assert plain.meta.recall_at_k < 0.95 <= tuned.meta.recall_at_k
    assert tuned.meta.params[name] > params[name] and tuned.meta.target_recall == 0.95
    steps = tuned.meta.tuning
    assert steps[0][0] == params[name] and steps[-1] == [tuned.meta.params[name], tuned.meta.recall_at_k]
    assert all(b[0] == 2 * a[0] or b[0] == steps[-1][0] for a, b in itertools.pairwise(steps))
    reloaded = index_from_files(index_files(tuned))  # the tuned parameter is what a loaded index searches with
    assert reloaded.meta == tuned.meta
    _, found = reloaded.search(queries[:5], 10)
    _, again = tuned.search(queries[:5], 10)
    assert found == again


def test_metadata_written_before_tuning_still_loads() -> None:
    items = clustered_embeddings(500, DIM, n_centres=16, seed=1, centre_seed=0)
    meta = build_index(items, [f"i{k}" for k in range(500)], kind="flat", recall_k=10).meta.to_dict()
    old = {k: v for k, v in meta.items() if k not in ("target_recall", "tuning")}
    loaded = IndexMeta.from_dict(json.loads(json.dumps(old)))
    assert loaded.target_recall == 0.0 and loaded.tuning == []


def test_recent_users_are_the_newest_updates_and_measure_recall(settings: Settings) -> None:
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    for k in range(120):  # u0 oldest ... u119 newest; u5 updated again last
        msg = user_features(f"u{k}", ["i0", "i1"], ["c0", "c1"], ts=1_000_000 + k)
        producer.send(settings.topic("user-features"), key=msg.user_id.encode(), value=msg.SerializeToString())
    again = user_features("u5", ["i2"], ["c2"], ts=2_000_000)
    producer.send(settings.topic("user-features"), key=b"u5", value=again.SerializeToString())
    producer.flush()
    producer.close()
    users = recent_users(settings, n=60)
    assert [u.user_id for u in users[:3]] == ["u5", "u119", "u118"]
    assert len(users) == 60 and list(users[0].behaviors.item_ids) == ["i2"]  # the latest snapshot of u5
    build = build_retrieval(retrieval_model_files(), catalog(), "base", 1, kind="ivf", recall_users=users,
                            target_recall=0.9, nlist=4, nprobe=1)
    assert build.meta["index"]["recall_queries"] == 60  # the users' tower vectors, not item-like queries
    assert build.meta["index"]["recall_at_k"] >= 0.9
