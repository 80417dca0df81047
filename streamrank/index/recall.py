"""Recall of an approximate index against exact search: the query sample and the measurement.

Every build measures recall@k on a query sample and stores it in the index metadata, so a served index always
says how close to exact it is. Without a caller-supplied sample, queries are item embeddings picked at random
(seeded) plus isotropic Gaussian noise whose norm is `noise` (default 0.25) times the picked row's norm: close
to where real queries land (user vectors score highest against some items) but not copies of items, which an
approximate index finds too easily.
"""

from __future__ import annotations

import faiss
import numpy as np

DEFAULT_NOISE = 0.25
EXACT_BATCH = 256  # queries per exact-search call: bounds the (batch, count) score matrix faiss allocates


def sample_queries(embeddings: np.ndarray, n: int, seed: int = 0, noise: float = DEFAULT_NOISE) -> np.ndarray:
    """`n` float32 query vectors: randomly chosen rows of `embeddings` plus noise of relative norm `noise`.

    Deterministic for a given seed, so a test (or an auditor) can regenerate the very queries a build used.
    """
    rng = np.random.default_rng(seed)
    rows = embeddings[rng.integers(0, embeddings.shape[0], size=n)].astype(np.float32, copy=True)
    direction = rng.standard_normal(rows.shape).astype(np.float32)
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    rows += noise * np.linalg.norm(rows, axis=1, keepdims=True) * direction
    return np.ascontiguousarray(rows)


def exact_neighbours(embeddings: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Row indices (n, k) of the exact top-k by `metric` ("ip": largest inner product, "l2": nearest).

    Uses a faiss flat index (BLAS), in batches of EXACT_BATCH queries.
    """
    flat = faiss.IndexFlatIP(embeddings.shape[1]) if metric == "ip" else faiss.IndexFlatL2(embeddings.shape[1])
    flat.add(embeddings)
    k = min(k, embeddings.shape[0])
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], EXACT_BATCH):
        _, labels = flat.search(queries[start:start + EXACT_BATCH], k)
        out[start:start + EXACT_BATCH] = labels
    return out


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found_q ∩ exact_q| / k, where k is `exact`'s width; -1 labels in `found` never count.

    Ties in the exact scores can make this slightly pessimistic (an equally good item outside the exact list
    counts as a miss); continuous embeddings make that negligible.
    """
    if exact.shape[0] == 0 or exact.shape[1] == 0:
        return 1.0
    hits = [len(set(f[f >= 0].tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits) / exact.shape[1])
