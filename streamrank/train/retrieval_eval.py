"""Offline retrieval metrics by exact search: HIT@K against the full corpus and item coverage@K.

For each evaluation row (a user with a held-out target), every corpus item is scored, the items the user
rated before are excluded, and the top `max(ks)` are kept (torch.topk: exact, no index). HIT@K is 1 when
the target is among the top K; coverage@K is the share of corpus items in at least one row's top K
(the MicRec paper's aggregate-diversity "item coverage").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

KS = (50, 100, 200, 500)


@dataclass
class RetrievalEval:
    """Per-row hits for each K (0/1 float arrays, aligned with the split) and coverage per K."""

    hits: dict[int, np.ndarray]
    coverage: dict[int, float]

    def summary(self) -> dict[str, float]:
        """Means: {"hit@50": ..., "coverage@50": ...}."""
        out = {f"hit@{k}": float(v.mean()) for k, v in self.hits.items()}
        out.update({f"coverage@{k}": c for k, c in self.coverage.items()})
        return out

    def mean_hit(self) -> float:
        """The mean of HIT@K over the Ks (the early-stopping criterion on validation)."""
        return float(np.mean([v.mean() for v in self.hits.values()]))


def exact_topk(score_rows: Callable[[np.ndarray], Tensor], n_rows: int, n_items: int,
               exclude: Sequence[np.ndarray], k: int, chunk: int = 1024) -> np.ndarray:
    """(n_rows, k) item codes of the best-scored items per row, excluded items never returned.

    `score_rows(rows)` returns the (len(rows), n_items) score matrix of those rows.
    """
    k = min(k, n_items)
    out = np.empty((n_rows, k), dtype=np.int64)
    for s in range(0, n_rows, chunk):
        rows = np.arange(s, min(s + chunk, n_rows))
        scores = score_rows(rows).float().clone()
        r = np.repeat(np.arange(len(rows)), [len(exclude[i]) for i in rows])
        c = np.concatenate([exclude[i] for i in rows]) if len(r) else np.zeros(0, dtype=np.int64)
        scores[torch.from_numpy(r).to(scores.device), torch.from_numpy(c).to(scores.device)] = float("-inf")
        out[rows] = torch.topk(scores, k, dim=1).indices.cpu().numpy()
    return out


def hits_and_coverage(topk: np.ndarray, targets: np.ndarray, n_items: int, ks: Sequence[int] = KS) -> RetrievalEval:
    """HIT@K per row and coverage@K from top lists (n_rows, >= max(ks))."""
    found = topk == np.asarray(targets)[:, None]
    rank = np.where(found.any(1), found.argmax(1), topk.shape[1])
    hits = {k: (rank < k).astype(np.float64) for k in ks}
    coverage = {k: len(np.unique(topk[:, :k])) / n_items for k in ks}
    return RetrievalEval(hits, coverage)


def evaluate_scores(score_rows: Callable[[np.ndarray], Tensor], targets: np.ndarray, n_items: int,
                    exclude: Sequence[np.ndarray], ks: Sequence[int] = KS) -> RetrievalEval:
    """Exact-search HIT@K and coverage@K of a scoring function (model or baseline)."""
    topk = exact_topk(score_rows, len(targets), n_items, exclude, max(ks))
    return hits_and_coverage(topk, targets, n_items, ks)
