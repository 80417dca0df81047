"""Search parameters chosen for a recall target, on the queries the index will really answer.

An approximate index's recall depends on where queries land: the same 1M-item IVF index had recall@100
0.995 on item-like queries and 0.856 on real users' user-tower vectors (docs/benchmarks/serve.md). So the
build measures recall on a sample of real queries (recent users' tower vectors, `recall_sample`) and, when
it is below `target`, widens the search parameter (IVF `nprobe`, HNSW `efSearch`) by doubling until the
target holds or the search is exhaustive, re-measuring on the same queries against the same exact top-k.
Doubling, not a finer search: each step costs one pass over the sample, and latency grows about linearly
with the parameter, so the first value that reaches the target is within 2x of the smallest that does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamrank.index.recall import recall_at_k

TUNED_PARAM = {"ivf": "nprobe", "hnsw": "efSearch"}


@dataclass(frozen=True)
class TuneStep:
    """One measured value of the search parameter."""

    value: int
    recall: float


def tune_search(kind: str, start: int, limit: int, exact: np.ndarray, target: float,
                search: Callable[[int], np.ndarray]) -> list[TuneStep]:
    """Measured steps from `start`, doubling up to `limit`, until recall >= target; the last step is the
    chosen value. `search(value)` returns the index's top-k labels for the sample at that value. Flat
    indexes (no parameter) are exact: one step at recall 1."""
    if kind not in TUNED_PARAM:
        return [TuneStep(0, 1.0)]
    steps, value = [], max(1, min(start, limit))
    while True:
        steps.append(TuneStep(value, recall_at_k(search(value), exact)))
        if steps[-1].recall >= target or value >= limit:
            return steps
        value = min(limit, value * 2)
