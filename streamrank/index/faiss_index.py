"""The item index: top-k items for query vectors, over a faiss flat, IVF or HNSW index (docs/index.md).

`build_index` validates the catalog, builds the index, measures its recall@k against exact search and records
everything in `IndexMeta`; `ItemIndex.search` is what the scorer calls, from many threads at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from streamrank.index import backend
from streamrank.index.meta import KINDS, METRICS, IndexBuildError, IndexMeta, ItemIndexError, as_matrix, check_ids
from streamrank.index.recall import exact_neighbours, recall_at_k, sample_queries
from streamrank.index.tune import TUNED_PARAM, tune_search

log = logging.getLogger(__name__)


class ItemIndex:
    """A searchable item catalog: `faiss_index` row i is the embedding of `ids[i]`.

    Searching is safe from many threads at once: a built faiss CPU index is read-only during search, and the
    OpenMP thread count is set per calling thread. GPU indexes share one resources object, so their searches
    are serialised by a lock. Do not change faiss parameters on `faiss_index` while others are searching.
    """

    def __init__(self, faiss_index: faiss.Index, ids: Sequence[str], meta: IndexMeta, gpu_resources: Any = None):
        self.faiss_index = faiss_index
        self.ids: list[str] = list(ids)
        self.meta = meta
        self._gpu_resources = gpu_resources  # must outlive a GPU index
        self._id_array = np.array(self.ids, dtype=object)
        self._rows: dict[str, int] | None = None  # id -> row, built on first use of `exclude`
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if meta.device == "cuda" else contextlib.nullcontext())

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        m = self.meta
        return f"ItemIndex(kind={m.kind}, metric={m.metric}, count={m.count}, dim={m.dim}, device={m.device})"

    @property
    def gpu_resources(self) -> Any:
        """The faiss GPU resources the index lives on (None on CPU); storage keeps them alive on reload."""
        return self._gpu_resources

    def search(self, queries: np.ndarray, k: int,
               exclude: Sequence[set[str]] | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k items per query, best first: float32 scores (B, k') and plain-`str` item ids per query.

        k' = min(k, count) (k <= 0 gives empty answers). Scores are higher-is-better: the inner product, or
        the negative squared L2 distance. `exclude[b]` lists ids to leave out for query b: the search fetches
        k + len(exclude[b]) and filters, widening the search when that is not enough, so every query gets k
        items whenever the catalog has them. Positions past a shorter answer hold NaN in `scores`.
        """
        q = as_matrix(queries, "queries", self.meta.dim)
        batch = q.shape[0]
        if exclude is not None and len(exclude) != batch:
            raise ItemIndexError(f"exclude has {len(exclude)} entries for {batch} queries")
        k = max(0, min(int(k), len(self.ids)))
        scores = np.full((batch, k), np.nan, dtype=np.float32)
        if k == 0 or batch == 0:
            return scores, [[] for _ in range(batch)]
        excluded = [set(map(str, e)) for e in exclude] if exclude is not None else [set() for _ in range(batch)]
        fetch = min(len(self.ids), k + max(len(e) for e in excluded))
        raw_scores, labels = self.raw_search(q, fetch)
        if exclude is None and (labels >= 0).all():  # the common, fast path
            scores[:] = raw_scores[:, :k]
            return scores, [row.tolist() for row in self._id_array[labels[:, :k]]]
        want = [min(k, len(self.ids) - self._in_catalog(e)) for e in excluded]
        answers: list[list[str]] = [[] for _ in range(batch)]
        pending = self._fill(range(batch), raw_scores, labels, excluded, want, scores, answers)
        scale = 1
        while pending:
            scale *= 4
            fetch = min(len(self.ids), fetch * 4)
            params, exhaustive = backend.escalated_params(self.meta.kind, self.faiss_index, scale, fetch)
            raw_scores, labels = self.raw_search(q[pending], fetch, params)
            pending = self._fill(pending, raw_scores, labels, excluded, want, scores, answers)
            if exhaustive and fetch >= len(self.ids):
                break
        return scores, answers

    def raw_search(self, q: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """faiss search of a validated float32 batch: (higher-is-better scores, row labels; -1 = no result)."""
        if self.meta.device == "cuda":
            k = min(k, backend.GPU_MAX_K)
        backend.set_threads_for_batch(q.shape[0])
        with self._lock:
            distances, labels = self.faiss_index.search(q, k, params=params)
        return (distances if self.meta.metric == "ip" else -distances), labels

    def _in_catalog(self, ids: set[str]) -> int:
        """How many of `ids` are items of this index."""
        if not ids:
            return 0
        if self._rows is None:
            self._rows = {item: row for row, item in enumerate(self.ids)}
        return sum(1 for item in ids if item in self._rows)

    def _fill(self, rows: Sequence[int], raw_scores: np.ndarray, labels: np.ndarray, excluded: list[set[str]],
              want: list[int], scores: np.ndarray, answers: list[list[str]]) -> list[int]:
        """Writes each query's filtered answer; returns the queries that are still short of `want` items."""
        short = []
        for pos, b in enumerate(rows):
            keep = labels[pos] >= 0
            found = self._id_array[labels[pos][keep]].tolist()
            found_scores = raw_scores[pos][keep]
            if excluded[b]:
                mask = [item not in excluded[b] for item in found]
                found = [item for item, m in zip(found, mask, strict=True) if m]
                found_scores = found_scores[np.asarray(mask, dtype=bool)]
            n = min(len(found), want[b])
            answers[b] = found[:n]
            scores[b, :n] = found_scores[:n]
            scores[b, n:] = np.nan
            if n < want[b]:
                short.append(b)
        return short


def build_index(embeddings: np.ndarray, ids: Sequence[str], kind: str = "auto", metric: str = "ip",
                model: str = "", model_version: int = 0, recall_k: int = 100, recall_queries: int = 200,
                seed: int = 0, use_gpu: bool | None = None, recall_sample: np.ndarray | None = None,
                target_recall: float | None = None, **params: int) -> ItemIndex:
    """Builds an index over `embeddings` (row i = item `ids[i]`) and measures its recall against exact search.

    kind="auto" is exact (flat) up to `backend.AUTO_FLAT_MAX` items and IVF above, the choice
    docs/benchmarks/index.md supports. `params` are the kind's parameters (IVF: nlist, nprobe, train_size;
    HNSW: M, efConstruction, efSearch); unknown names are refused. Recall@recall_k is measured on
    `recall_sample` when given, else on `recall_queries` noisy item embeddings (`recall.sample_queries`,
    seeded by `seed`) and stored in the metadata. With `target_recall`, an IVF or HNSW index widens its
    search parameter (nprobe / efSearch, by doubling) until that recall holds on the sample or the search is
    exhaustive (`streamrank.index.tune`); the steps are in `meta.tuning`. use_gpu=None uses a GPU when faiss
    has one.
    Bad input (not 2-D, NaN/inf, empty, ids not one per row or not unique) raises IndexBuildError.
    """
    if metric not in METRICS:
        raise IndexBuildError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if kind != "auto" and kind not in KINDS:
        raise IndexBuildError(f"unknown index kind {kind!r}; expected auto or one of {KINDS}")
    x = as_matrix(embeddings, "embeddings", error=IndexBuildError)
    count, dim = x.shape
    if count == 0 or dim == 0:
        raise IndexBuildError(f"empty catalog: embeddings have shape {x.shape}")
    item_ids = check_ids(ids, count)
    if recall_k < 1 or (recall_sample is None and recall_queries < 1):
        raise IndexBuildError(f"recall_k={recall_k} and recall_queries={recall_queries} must be positive")
    queries = (as_matrix(recall_sample, "recall_sample", dim, IndexBuildError) if recall_sample is not None
               else sample_queries(x, recall_queries, seed))
    gpu = backend.want_gpu(use_gpu)
    kind = backend.auto_kind(count, gpu) if kind == "auto" else kind
    resolved = backend.resolve_params(kind, count, dict(params))
    on_gpu = gpu and kind != "hnsw"  # faiss has no GPU HNSW

    faiss.omp_set_num_threads(backend.all_threads())
    started = time.perf_counter()
    index, resources = _train_and_add(x, kind, metric, resolved, seed, on_gpu)
    build_seconds = time.perf_counter() - started
    backend.apply_search_params(index, kind, resolved, on_gpu)

    meta = IndexMeta(kind=kind, metric=metric, dim=dim, count=count, params=resolved, recall_at_k=0.0,
                     recall_k=min(recall_k, count), recall_queries=int(queries.shape[0]),
                     build_seconds=round(build_seconds, 3), model=model, model_version=int(model_version),
                     created_ms=int(time.time() * 1000), device="cuda" if on_gpu else "cpu")
    item_index = ItemIndex(index, item_ids, meta, resources)
    exact = exact_neighbours(x, queries, meta.recall_k, metric)

    def found_at(value: int) -> np.ndarray:
        if value:
            backend.apply_search_params(index, kind, {TUNED_PARAM[kind]: value}, on_gpu)
        return np.concatenate([item_index.raw_search(queries[s:s + 256], meta.recall_k)[1]
                               for s in range(0, queries.shape[0], 256)]) if queries.shape[0] else exact

    if target_recall is None or kind not in TUNED_PARAM:
        item_index.meta = dataclasses.replace(meta, recall_at_k=round(recall_at_k(found_at(0), exact), 6))
        return item_index
    name = TUNED_PARAM[kind]
    limit = resolved["nlist"] if kind == "ivf" else count
    steps = tune_search(kind, resolved[name], limit, exact, target_recall, found_at)
    chosen = steps[-1]
    item_index.meta = dataclasses.replace(
        meta, params={**resolved, name: chosen.value}, recall_at_k=round(chosen.recall, 6),
        target_recall=target_recall, tuning=[[s.value, round(s.recall, 6)] for s in steps])
    if chosen.recall < target_recall:
        log.warning("index recall@%d %.4f stays below the target %.2f even at %s=%d (exhaustive)", meta.recall_k,
                    chosen.recall, target_recall, name, chosen.value)
    return item_index


def _train_and_add(x: np.ndarray, kind: str, metric: str, params: dict[str, int], seed: int,
                   on_gpu: bool) -> tuple[faiss.Index, Any]:
    """A trained, filled faiss index (moved to the GPU first when `on_gpu`) and its GPU resources, if any."""
    index = backend.new_cpu_index(kind, metric, x.shape[1], params)
    resources = None
    if on_gpu:
        index, resources = backend.to_gpu(index)
    if kind == "ivf":
        backend.ivf_of(index).cp.seed = seed
        rng = np.random.default_rng(seed)
        train = x if params["train_size"] >= x.shape[0] else x[np.sort(
            rng.choice(x.shape[0], size=params["train_size"], replace=False))]
        index.train(train)
    index.add(x)
    return index, resources
