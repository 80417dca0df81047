"""Retrieve end to end: a two-tower model and its FAISS index published together, served over loopback gRPC."""

from __future__ import annotations

import time

import numpy as np
import pytest

from streamrank.config import Settings
from streamrank.features.raw import Behaviors, RequestContext
from streamrank.index.refresh import build_retrieval, read_catalog
from streamrank.registry.store import Registry
from streamrank.serve.models import load_retriever
from streamrank.v1 import ranking_pb2
from tests import servetools
from tests.servetools import catalog, publish_retrieval, retrieval_model_files, running_scorer


@pytest.fixture
def retrieve_world(settings: Settings) -> Settings:
    """Serving settings with a DIN version, a retrieval version and a little state published."""
    return servetools.scorer_world(settings)


def test_retrieve_returns_the_exact_top_k_of_its_version(retrieve_world: Settings) -> None:
    with running_scorer(retrieve_world) as st:
        stub = st.stub()
        resp = stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=5, request_id="q"), timeout=10)
        seen = stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=5, exclude_seen=True), timeout=10)
        everything = stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=1000), timeout=10)
        cold = stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="stranger", k=3), timeout=10)
    assert resp.request_id == "q" and resp.index == "retrieval" and resp.index_version == 1
    assert resp.model == "base" and resp.model_version == 1
    loaded = load_retriever(Registry(retrieve_world.registry_root(), "retrieval"), 1)
    ctx = RequestContext("u1", Behaviors(["i0", "i8", "i16"], [2, 2, 2], [0, 0, 0], ["c0", "c0", "c0"]))
    from streamrank.index.refresh import item_candidate

    items = catalog()
    vectors = loaded.model.encode_items([item_candidate(it) for it in items])
    exact = vectors @ loaded.user_vector(ctx)[0]
    order = np.argsort(-exact)
    assert [it.item_id for it in resp.items] == [items[i].item_id for i in order[:5]]
    assert [it.score for it in resp.items] == pytest.approx(exact[order[:5]].tolist(), abs=1e-4)
    assert len(seen.items) == 5 and not {"i0", "i8", "i16"} & {it.item_id for it in seen.items}
    assert len(everything.items) == len(items)  # k beyond the catalog: all of it
    assert len(cold.items) == 3


def test_new_retrieval_version_is_swapped_in(retrieve_world: Settings) -> None:
    with running_scorer(retrieve_world) as st:
        stub = st.stub()
        first = stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=5), timeout=10)
        publish_retrieval(retrieve_world, seed=7, version=2)
        deadline = time.monotonic() + 10
        resp = first
        while resp.index_version == 1 and time.monotonic() < deadline:
            time.sleep(0.1)
            resp = stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=5), timeout=10)
    assert resp.index_version == 2 and resp.model_version == 2
    assert [i.item_id for i in resp.items] != [i.item_id for i in first.items] or \
        [i.score for i in resp.items] != [i.score for i in first.items]


def test_catalog_is_read_from_the_items_topic(retrieve_world: Settings) -> None:
    items = read_catalog(retrieve_world)
    assert sorted(it.item_id for it in items) == sorted(it.item_id for it in catalog())


def test_retrieval_build_refuses_empty_catalog() -> None:
    with pytest.raises(ValueError, match="catalog is empty"):
        build_retrieval(retrieval_model_files(), [], "base", 1)


def test_index_build_command_publishes_a_servable_version(tmp_path) -> None:
    from streamrank.cli import main
    from streamrank.config import load_settings

    model_dir = tmp_path / "base-model"
    model_dir.mkdir()
    for name, data in retrieval_model_files().items():
        (model_dir / name).write_bytes(data)
    data_dir = tmp_path / "data"
    build = ["index", "build", "--model-dir", str(model_dir), "--catalog", "movielens:ml-100k", "--data-dir",
             str(data_dir)]
    assert main(build) == 2  # the synthetic model knows categories c0..c7, not MovieLens genres: refused
    assert main([*build, "--min-attribute-coverage", "0"]) == 0  # unless asked
    registry = Registry(load_settings(data_dir=str(data_dir)).registry_root(), "retrieval")
    loaded = load_retriever(registry, registry.current_version())
    assert len(loaded.index) == 1682 and loaded.index.meta.recall_at_k == 1.0  # exact at this size
    assert loaded.model_name == "base-model"
