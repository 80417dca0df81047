"""Positives and negatives for MicRec's semantic- and session-level CL, from a weighted item graph.

`session_cooccurrence` counts item co-occurrences with the stream worker's own definition: each user's
interactions are replayed through `UserState.cooc_partners` (same session or less than
`Settings.cooc_window_ms` = one hour apart, among the latest `cooc_lookback` interactions; a repeat of
an item adds nothing) into a `CoocCounts` (symmetric counts), exactly as the worker does per event, so
offline training and the streamed `cooc` topic agree. Only training interactions are replayed.

`NeighbourSampler` holds an item -> {neighbour: weight} graph over item codes (CSR) and draws, per
anchor, one positive with probability proportional to the weight (co-occurrence counts; uniform for the
top-k semantic neighbours), and up to k distinct negatives among items that are not neighbours (never
co-occurred), redrawing picks that hit a neighbour (MicRec Sec. 3.5, 5.3). `with_group_boost` multiplies
the weight of same-category neighbours (the paper's Sec. 4.1 emphasis on same-category co-occurrences in
positive sampling).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from streamrank.config import Settings
from streamrank.events.types import CLICK
from streamrank.stream.aggregates import CoocCounts
from streamrank.stream.userstate import UserState

# Keep every neighbour offline (the worker trims to its top `cooc_top_m`; "never co-occurred" needs all).
UNBOUNDED = 1 << 40
DENSE_LIMIT = 1 << 27  # item x item cells up to which membership is a dense bool table (ML-1M: 13.7M)


def session_cooccurrence(sequences: Iterable[tuple[Sequence[str], Sequence[int]]],
                         settings: Settings | None = None, fold_every: int = 200) -> CoocCounts:
    """Co-occurrence counts of per-user interaction sequences (item ids, ms timestamps, oldest first).

    Default settings are the worker's (one-hour window, lookback 50) with no top-M trimming.
    `fold_every` users, the pending pairs are folded into the counts (bounds memory).
    """
    settings = settings or Settings(cooc_top_m=UNBOUNDED)
    cooc = CoocCounts(settings)
    for n, (items, stamps) in enumerate(sequences, start=1):
        state = UserState(user_id="")
        for item, ts in zip(items, stamps, strict=True):
            partners = state.cooc_partners(ts, "", item, settings)
            if partners:
                cooc.add_pairs(item, partners)
            state.append_behavior(item, CLICK, ts, "", "", settings)
        if n % fold_every == 0:
            cooc.take_delta()
    cooc.take_delta()
    return cooc


class NeighbourSampler:
    """Weighted neighbour lists over item codes 0..n_items-1 (CSR), with positive/negative sampling."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray, n_items: int) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.n_items = n_items
        self.cum = np.concatenate([[0.0], np.cumsum(self.weights)])
        rows = np.repeat(np.arange(n_items, dtype=np.int64), np.diff(self.indptr))
        self.keys = np.sort(rows * n_items + self.indices)
        self.adj: np.ndarray | None = None  # dense adjacency for fast membership where it fits
        if n_items * n_items <= DENSE_LIMIT:
            self.adj = np.zeros((n_items, n_items), dtype=bool)
            self.adj[rows, self.indices] = True

    @classmethod
    def from_lists(cls, neighbours: Sequence[Mapping[int, float]]) -> NeighbourSampler:
        """From per-item {neighbour code: weight} maps (index = item code)."""
        indptr = np.zeros(len(neighbours) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(m) for m in neighbours])
        indices = np.fromiter((j for m in neighbours for j in m), dtype=np.int64, count=int(indptr[-1]))
        weights = np.fromiter((w for m in neighbours for w in m.values()), dtype=np.float64, count=int(indptr[-1]))
        return cls(indptr, indices, weights, len(neighbours))

    @classmethod
    def from_table(cls, table: np.ndarray) -> NeighbourSampler:
        """From an (N, k) table of neighbour codes (e.g. top-k by title embedding), uniform weights."""
        n, k = table.shape
        return cls(np.arange(n + 1) * k, table.reshape(-1), np.ones(n * k), n)

    @classmethod
    def from_cooc(cls, cooc: CoocCounts, item_index: Mapping[str, int], n_items: int) -> NeighbourSampler:
        """From co-occurrence counts keyed by item id (ids outside `item_index` are dropped)."""
        lists: list[dict[int, float]] = [{} for _ in range(n_items)]
        for item, row in cooc.counts.items():
            i = item_index.get(item)
            if i is None:
                continue
            lists[i] = {item_index[o]: float(c) for o, c in row.items() if o in item_index}
        return cls.from_lists(lists)

    def degree(self, items: np.ndarray) -> np.ndarray:
        """Number of neighbours of each item."""
        return self.indptr[items + 1] - self.indptr[items]

    def positives(self, anchors: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One neighbour per anchor drawn with probability weight / row total; (codes, has_neighbour).

        Anchors without neighbours get themselves as a placeholder and has_neighbour False.
        """
        anchors = np.asarray(anchors, dtype=np.int64)
        start, end = self.indptr[anchors], self.indptr[anchors + 1]
        has = end > start
        base, total = self.cum[start], self.cum[end] - self.cum[start]
        target = base + rng.random(len(anchors)) * total
        j = np.clip(np.searchsorted(self.cum, target, side="right") - 1, start, np.maximum(end - 1, start))
        out = anchors.copy()
        out[has] = self.indices[j[has]]
        return out, has

    def are_neighbours(self, anchors: np.ndarray, others: np.ndarray) -> np.ndarray:
        """Boolean array shaped like `others` (M, K): whether others[m, k] is a neighbour of anchors[m]."""
        if self.adj is not None:
            return self.adj[np.asarray(anchors, dtype=np.int64)[:, None], others]
        if not len(self.keys):
            return np.zeros(others.shape, dtype=bool)
        keys = np.asarray(anchors, dtype=np.int64)[:, None] * self.n_items + others
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[pos] == keys

    def with_group_boost(self, groups: np.ndarray, factor: float) -> NeighbourSampler:
        """A copy whose edges between two items of the same group (e.g. category code; a negative code =
        unknown, never the same) weigh `factor` times more when drawing positives; negatives unchanged."""
        groups = np.asarray(groups, dtype=np.int64)
        rows = np.repeat(np.arange(self.n_items, dtype=np.int64), np.diff(self.indptr))
        same = (groups[rows] == groups[self.indices]) & (groups[rows] >= 0)
        out = copy.copy(self)  # indptr, indices and the sorted keys are shared (read-only)
        out.weights = self.weights * np.where(same, float(factor), 1.0)
        out.cum = np.concatenate([[0.0], np.cumsum(out.weights)])
        return out

    def _allowed(self, anchors: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether items[m, k] may be a negative of anchors[m]: neither the anchor nor a neighbour."""
        return (items != anchors[:, None]) & ~self.are_neighbours(anchors, items)

    def negatives(self, anchors: np.ndarray, pool: np.ndarray, k: int, rng: np.random.Generator,
                  rounds: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """k picks from `pool` (item codes) per anchor: (positions into pool (M, k), valid (M, k)).

        A pick is valid when it is neither the anchor nor one of its neighbours (for co-occurrence: an item
        that never co-occurred with it) nor an item picked already for that anchor. Invalid picks are
        redrawn `rounds` times; rows still short then are filled exactly (a random subset of the pool's
        distinct allowed items), so every anchor gets min(k, allowed distinct pool items) negatives (the
        paper's "up to 50"). Invalid picks are left only where the pool runs short; mask them out.
        """
        anchors = np.asarray(anchors, dtype=np.int64)
        pick = rng.integers(0, len(pool), size=(len(anchors), k))
        allowed = self._allowed(anchors, pool[pick])
        valid = allowed & ~_repeats(pool[pick])
        for _ in range(rounds):
            bad = ~valid
            if not bad.any():
                return pick, valid
            rows = np.nonzero(bad)[0]
            pick[bad] = rng.integers(0, len(pool), size=len(rows))
            allowed[bad] = self._allowed(anchors[rows], pool[pick[bad]][:, None])[:, 0]
            valid = allowed & ~_repeats(pool[pick])
        short = np.nonzero(~valid.all(1))[0]
        if len(short):
            pick[short], valid[short] = self._fill(anchors[short], pool, k, rng)
        return pick, valid

    def _fill(self, anchors: np.ndarray, pool: np.ndarray, k: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Exact draw: per anchor, min(k, n allowed) distinct allowed pool items at random (positions, valid)."""
        items, first = np.unique(np.asarray(pool, dtype=np.int64), return_index=True)
        ok = self._allowed(anchors, np.broadcast_to(items, (len(anchors), len(items))))
        prio = np.where(ok, rng.random(ok.shape), -1.0)
        kk = min(k, len(items))
        top = np.argpartition(-prio, kk - 1, axis=1)[:, :kk]
        pick = np.zeros((len(anchors), k), dtype=np.int64)
        valid = np.zeros((len(anchors), k), dtype=bool)
        pick[:, :kk] = first[top]
        valid[:, :kk] = np.take_along_axis(prio, top, axis=1) >= 0
        return pick, valid


def _repeats(items: np.ndarray) -> np.ndarray:
    """(M, K) bool: True where items[m, k] equals an item earlier in its row (the first copy stays False)."""
    order = np.argsort(items, axis=1, kind="stable")
    srt = np.take_along_axis(items, order, axis=1)
    dup = np.zeros(items.shape, dtype=bool)
    dup_sorted = np.zeros(items.shape, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup
