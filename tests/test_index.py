"""The FAISS item index: exactness, recall, exclude/k handling, input checks, serialisation and corruption."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from streamrank.index import (
    IndexBuildError,
    IndexLoadError,
    IndexMeta,
    ItemIndex,
    ItemIndexError,
    build_index,
    index_files,
    index_from_files,
    load_index,
    save_index,
)
from streamrank.index.backend import AUTO_FLAT_MAX, auto_kind
from streamrank.index.recall import sample_queries
from streamrank.index.synthetic import clustered_embeddings

N, DIM, K = 3000, 16, 20


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    return clustered_embeddings(N, DIM, n_centres=64, seed=1, centre_seed=0)


@pytest.fixture(scope="module")
def ids() -> list[str]:
    return [f"item-{i}" for i in range(N)]


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered_embeddings(50, DIM, n_centres=64, seed=2, centre_seed=0)


@pytest.fixture(scope="module")
def built(items: np.ndarray, ids: list[str]) -> dict[str, ItemIndex]:
    return {kind: build_index(items, ids, kind=kind, recall_k=K, recall_queries=100) for kind in
            ("flat", "ivf", "hnsw")}


def exact_top(items: np.ndarray, ids: list[str], q: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
    scores = q @ items.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), [[ids[i] for i in row] for row in order]


def test_flat_is_exact(built, items, ids, queries) -> None:
    scores, found = built["flat"].search(queries, K)
    want_scores, want = exact_top(items, ids, queries, K)
    assert found == want
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert built["flat"].meta.recall_at_k == 1.0 and built["flat"].meta.kind == "flat"
    assert all(type(i) is str for row in found for i in row)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_is_high_and_stored_recall_is_true(built, items, ids, queries, kind) -> None:
    index = built[kind]
    assert index.meta.recall_k == K and index.meta.recall_queries == 100
    assert index.meta.recall_at_k >= 0.95
    # Recompute the stored figure independently: same query sample, numpy ground truth.
    sample = sample_queries(items, 100, seed=0)
    _, want = exact_top(items, ids, sample, K)
    _, found = index.search(sample, K)
    recomputed = np.mean([len(set(f) & set(w)) / K for f, w in zip(found, want, strict=True)])
    assert recomputed == pytest.approx(index.meta.recall_at_k, abs=0.005)
    _, want_q = exact_top(items, ids, queries, K)
    _, found_q = index.search(queries, K)
    assert np.mean([len(set(f) & set(w)) / K for f, w in zip(found_q, want_q, strict=True)]) >= 0.95


def test_l2_metric_scores_are_negative_squared_distances(items, ids, queries) -> None:
    index = build_index(items, ids, kind="flat", metric="l2", recall_queries=10)
    scores, found = index.search(queries[:3], 5)
    rows = [[ids.index(i) for i in row] for row in found]
    dist = np.array([[np.sum((queries[b] - items[r]) ** 2) for r in row] for b, row in enumerate(rows)])
    np.testing.assert_allclose(scores, -dist, rtol=1e-4, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_k_is_clipped(built, queries) -> None:
    small = build_index(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"], kind="flat", recall_queries=5)
    scores, found = small.search(np.ones((2, 4), dtype=np.float32), 10)
    assert scores.shape == (2, 4) and [len(f) for f in found] == [4, 4]
    for k in (0, -3):
        scores, found = built["hnsw"].search(queries[:3], k)
        assert scores.shape == (3, 0) and found == [[], [], []]
    scores, found = built["flat"].search(queries[:0], 5)
    assert scores.shape == (0, 5) and found == []
    one_d_scores, one_d = built["flat"].search(queries[0], 3)  # a single vector is one query
    assert one_d_scores.shape == (1, 3) and one_d == built["flat"].search(queries[:1], 3)[1]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_exclude_leaves_items_out_and_still_returns_k(built, items, ids, queries, kind) -> None:
    index = built[kind]
    _, top = index.search(queries[:5], 15)
    exclude = [set(row[:10]) | {"not-an-item"} for row in top]
    scores, found = index.search(queries[:5], 10, exclude=exclude)
    assert [len(f) for f in found] == [10] * 5 and not np.isnan(scores).any()
    assert all(not (set(f) & e) for f, e in zip(found, exclude, strict=True))
    if kind == "flat":
        _, want = exact_top(items, ids, queries[:5], 20)
        assert found == [[i for i in w if i not in e][:10] for w, e in zip(want, exclude, strict=True)]


def test_exclude_almost_everything_returns_what_is_left(built, ids, queries) -> None:
    keep = {"item-7", "item-123", "item-2999"}
    exclude = [set(ids) - keep, set()]
    scores, found = built["hnsw"].search(queries[:2], 10, exclude=exclude)
    assert set(found[0]) == keep and len(found[1]) == 10
    assert np.isnan(scores[0, 3:]).all() and not np.isnan(scores[0, :3]).any()
    with pytest.raises(ItemIndexError, match="exclude"):
        built["flat"].search(queries[:2], 5, exclude=[set()])


def test_sparse_ivf_widens_its_search_to_fill_k(items, ids, queries) -> None:
    index = build_index(items, ids, kind="ivf", nlist=64, nprobe=1, recall_k=K, recall_queries=20)
    _, labels = index.raw_search(queries[:10], 200)
    assert (labels < 0).any()  # one cell cannot hold 200 items: faiss alone comes back short
    scores, found = index.search(queries[:10], 200, exclude=[{"item-1"}] * 10)
    assert [len(f) for f in found] == [200] * 10 and not np.isnan(scores).any()


def test_concurrent_searches_agree_with_sequential(built, queries) -> None:
    index = built["hnsw"]
    expected = [index.search(queries[i:i + 1], K)[1] for i in range(len(queries))]
    results: dict[int, list[list[str]]] = {}

    def worker(offset: int) -> None:
        for i in range(offset, len(queries), 4):
            results[i] = index.search(queries[i:i + 1], K)[1]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(queries))] == expected


def test_auto_picks_flat_for_small_catalogs(items, ids) -> None:
    index = build_index(items, ids, use_gpu=False, recall_queries=10)
    assert index.meta.kind == "flat" and index.meta.device == "cpu" and len(index) == N
    assert auto_kind(AUTO_FLAT_MAX, gpu=False) == "flat"
    assert auto_kind(AUTO_FLAT_MAX + 1, gpu=False) == "ivf"
    assert auto_kind(AUTO_FLAT_MAX + 1, gpu=True) == "ivf"  # faiss has no GPU HNSW either way


@pytest.mark.parametrize(("embeddings", "item_ids", "kwargs", "match"), [
    (np.array([[1.0, np.nan], [0.0, 1.0]]), ["a", "b"], {}, "NaN or inf"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), ["a", "b"], {}, "NaN or inf"),
    (np.array([[1e39, 0.0], [0.0, 1.0]]), ["a", "b"], {}, "NaN or inf"),  # overflows float32
    (np.eye(2), ["a", "a"], {}, "duplicate item id 'a'"),
    (np.eye(2), ["a"], {}, "1 ids for 2 embedding rows"),
    (np.zeros((0, 4)), [], {}, "empty catalog"),
    (np.zeros((2, 2, 2)), ["a", "b"], {}, "2-D"),
    ([["x", "y"]], ["a"], {}, "float32"),
    (np.eye(2), ["a", "b"], {"kind": "annoy"}, "unknown index kind"),
    (np.eye(2), ["a", "b"], {"metric": "cosine"}, "unknown metric"),
    (np.eye(2), ["a", "b"], {"kind": "hnsw", "ef_search": 10}, "unknown parameter"),
    (np.eye(2), ["a", "b"], {"kind": "hnsw", "M": 0}, "positive integer"),
    (np.eye(2), ["a", "b"], {"use_gpu": True}, "no GPU"),
])
def test_bad_build_input_is_refused(embeddings, item_ids, kwargs, match) -> None:
    with pytest.raises(IndexBuildError, match=match):
        build_index(embeddings, item_ids, recall_queries=5, **kwargs)


def test_bad_queries_are_refused(built) -> None:
    with pytest.raises(ItemIndexError, match=f"expected dim {DIM}, got 3"):
        built["hnsw"].search(np.zeros((2, 3), dtype=np.float32), 5)
    with pytest.raises(ItemIndexError, match="NaN"):
        built["flat"].search(np.full((1, DIM), np.nan), 5)


def reseal(files: dict[str, bytes], **meta_changes: object) -> dict[str, bytes]:
    """Rewrites index_meta.json with fresh checksums (and changed meta fields) to reach deeper checks."""
    record = json.loads(files["index_meta.json"])
    record["meta"].update(meta_changes)
    for name in ("index.faiss", "ids.json"):
        record["files"][name]["sha256"] = hashlib.sha256(files[name]).hexdigest()
    return {**files, "index_meta.json": json.dumps(record).encode()}


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_files_round_trip(built, queries, kind) -> None:
    index = built[kind]
    files = index_files(index)
    assert set(files) == {"index.faiss", "ids.json", "index_meta.json"}
    again = index_from_files(files, use_gpu=False)
    assert again.meta == index.meta and again.ids == index.ids
    for a, b in zip(again.search(queries, K), index.search(queries, K), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_inconsistent_files_are_refused(built) -> None:
    files = index_files(built["flat"])
    other = index_files(built["hnsw"])
    ids = json.loads(files["ids.json"])
    cases = {
        "missing": ({k: v for k, v in files.items() if k != "ids.json"}, "missing"),
        "swapped without reseal": ({**files, "index.faiss": other["index.faiss"]}, "checksum"),
        "kind mismatch": (reseal({**files, "index.faiss": other["index.faiss"]}), "metadata says flat"),
        "fewer ids": (reseal({**files, "ids.json": json.dumps(ids[:-1]).encode()}), "count=3000"),
        "duplicate ids": (reseal({**files, "ids.json": json.dumps(ids[:-1] + ids[:1]).encode()}), "duplicate"),
        "count": (reseal(files, count=10), "ids"),
        "dim": (reseal(files, dim=DIM + 1), "dim"),
        "garbage index": (reseal({**files, "index.faiss": b"not a faiss index"}), "deserialised"),
        "bad meta json": ({**files, "index_meta.json": b"{"}, "JSON"),
        "unknown meta field": (reseal(files, colour="red"), "unknown fields"),
    }
    for name, (bad, match) in cases.items():
        with pytest.raises(IndexLoadError, match=match):
            index_from_files(bad)
        assert name


def test_save_load_round_trip(built, queries, tmp_path: Path) -> None:
    path = save_index(built["hnsw"], tmp_path / "idx")
    assert sorted(p.name for p in path.iterdir()) == ["checksums.json", "ids.json", "index.faiss",
                                                       "index_meta.json"]
    loaded = load_index(path)
    assert loaded.meta == built["hnsw"].meta
    assert loaded.faiss_index.hnsw.efSearch == built["hnsw"].meta.params["efSearch"]
    a_scores, a_ids = loaded.search(queries, K)
    b_scores, b_ids = built["hnsw"].search(queries, K)
    assert a_ids == b_ids
    np.testing.assert_array_equal(a_scores, b_scores)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
@pytest.mark.parametrize("name", ["index.faiss", "ids.json", "index_meta.json"])
def test_corrupted_directory_is_refused(built, tmp_path: Path, damage: str, name: str) -> None:
    path = save_index(built["ivf"], tmp_path / "idx")
    target = path / ("checksums.json" if damage == "manifest" else name)
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "delete":
        target.unlink()
    else:
        target.write_bytes(b"[]")
    with pytest.raises(ItemIndexError):
        load_index(path)


def test_meta_dict_round_trip_and_refusals(built) -> None:
    meta = built["ivf"].meta
    assert IndexMeta.from_dict(json.loads(meta.to_json())) == meta
    with pytest.raises(IndexLoadError, match="missing fields"):
        IndexMeta.from_dict({k: v for k, v in meta.to_dict().items() if k != "dim"})
    with pytest.raises(IndexLoadError, match="is not int"):
        IndexMeta.from_dict({**meta.to_dict(), "count": "12"})
    with pytest.raises(IndexLoadError, match="unknown kind"):
        IndexMeta.from_dict({**meta.to_dict(), "kind": "lsh"})
