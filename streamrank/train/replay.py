"""A replay buffer over recently learned samples: the online trainer's remedy for one-pass, correlated order.

A stream arrives user by user (ML-1M's log is dominated by users who rate dozens of films in one session),
so consecutive micro-batches are correlated and each sample is seen once. Production online learners mix
each fresh batch with samples drawn from a bounded buffer of recent ones (experience replay), which gives
the model more than one pass over recent data and decorrelates its steps without delaying any fresh
sample: the fresh batch is still predicted before it is learned (the prequential metrics stay honest), and
only samples already learned are replayed.

The buffer holds samples **as tensors** (the rows of the batches they were learned in, one user row per
sample), in preallocated ring columns: adding a batch is one slice copy per column and drawing is one
`index_select` per column, so a replayed sample is never decoded or tensorised again (which used to cost
the trainer as much as the replay step itself: docs/online-training.md, "Trainer speed"). Index columns are
kept as int32 (vocabularies stay far below 2^31 rows), halving the memory of the behaviour sequences.

Rows hold vocabulary indices, which stay valid while their ids are live. Every id of a row was stamped
with the vocabulary clock when the row was encoded, so a row whose `stamp` (that clock) is not older than
an expiry's cut-off references no freed index; `expire(older_than)` drops the rows older than it (the
oldest ones: stamps never decrease), and `clear()` empties the buffer after the learner restores older
vocabularies. The buffer is not checkpointed: a restarted trainer refills it from what it learns next.
Draws are uniform without replacement over the rows held, from a seeded generator (reproducible runs).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import torch

from streamrank.features.batch import Batch, ItemSide, UserSide

_USER = [f.name for f in fields(UserSide)]
_ITEM = [f.name for f in fields(ItemSide)]


def batch_columns(batch: Batch) -> dict[str, torch.Tensor]:
    """The batch as named row columns, one user row per candidate (`u.`/`i.` prefixes, `labels` and
    `fnw_rows`, all False when the batch has none, so that every batch has the same columns)."""
    rows = batch if batch.owner_is_identity else batch.per_candidate()
    out = {f"u.{n}": getattr(rows.users, n) for n in _USER}
    out.update({f"i.{n}": getattr(rows.items, n) for n in _ITEM})
    if batch.labels is not None:
        out["labels"] = batch.labels
    fnw = batch.fnw_rows
    out["fnw_rows"] = torch.zeros(len(batch), dtype=torch.bool, device=batch.owner.device) if fnw is None else fnw
    return out


def columns_batch(cols: dict[str, torch.Tensor]) -> Batch:
    """Inverse of `batch_columns` (owner = arange)."""
    users = UserSide(**{n: cols[f"u.{n}"] for n in _USER})
    items = ItemSide(**{n: cols[f"i.{n}"] for n in _ITEM})
    return Batch(users, items, torch.arange(len(items)), cols.get("labels"), cols.get("fnw_rows"))


def concat_batches(first: Batch, second: Batch) -> Batch:
    """One training batch of `first`'s rows then `second`'s (owner = arange; a grouped batch is expanded per
    candidate, its candidates in their order), so a step's outputs start with `first`'s candidates."""
    a, b = batch_columns(first), batch_columns(second)
    return columns_batch({k: torch.cat([a[k], b[k].to(device=a[k].device, dtype=a[k].dtype)]) for k in a})


class ReplayBuffer:
    """The newest `capacity` learned samples as tensor rows, drawn uniformly at random."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"replay buffer capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._cols: dict[str, torch.Tensor] = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self._stamps = np.zeros(capacity, dtype=np.int64)
        self._start = 0  # ring position of the oldest row
        self._size = 0
        self._rng = np.random.default_rng(seed)
        self.added = 0
        self.drawn = 0
        self.dropped = 0  # rows dropped by expiry or clear (not by eviction)

    def __len__(self) -> int:
        return self._size

    def _allocate(self, cols: dict[str, torch.Tensor]) -> None:
        for name, t in cols.items():
            store = torch.int32 if t.dtype == torch.int64 else t.dtype
            self._dtypes[name] = t.dtype
            self._cols[name] = torch.zeros((self.capacity, *t.shape[1:]), dtype=store)

    def add(self, batch: Batch, stamp: int) -> None:
        """Appends the batch's rows (all stamped `stamp`, the vocabulary clock they were encoded at); once
        full, each evicts the oldest. A batch larger than the capacity keeps only its last rows."""
        if not self.capacity or not len(batch):
            return
        cols = {k: v.detach().cpu() for k, v in batch_columns(batch).items()}
        if not self._cols:
            self._allocate(cols)
        elif cols.keys() != self._cols.keys() or any(
                cols[k].shape[1:] != self._cols[k].shape[1:] for k in cols):
            self.clear()  # another layout (a model with other features): start over
            self._allocate(cols)
        n = len(batch)
        keep = min(n, self.capacity)
        self.added += n
        pos = (self._start + self._size) % self.capacity
        first = min(keep, self.capacity - pos)  # rows up to the end of the ring, then the rest from 0
        for name, col in cols.items():
            src = col[n - keep:].to(self._cols[name].dtype)
            self._cols[name][pos:pos + first] = src[:first]
            self._cols[name][:keep - first] = src[first:]
        self._stamps[pos:pos + first] = stamp
        self._stamps[:keep - first] = stamp
        overflow = max(0, self._size + keep - self.capacity)
        self._start = (self._start + overflow) % self.capacity
        self._size = min(self.capacity, self._size + keep)

    def draw(self, n: int) -> Batch | None:
        """min(n, len) distinct rows, uniformly at random, as one batch (None when nothing is held)."""
        n = min(n, self._size)
        if n <= 0:
            return None
        self.drawn += n
        return self._gather(self._rng.choice(self._size, size=n, replace=False))

    def _ring(self, ages: np.ndarray) -> np.ndarray:
        """Ring positions of the rows `ages` places after the oldest."""
        return (self._start + ages) % self.capacity

    def _gather(self, ages: np.ndarray) -> Batch:
        rows = torch.from_numpy(self._ring(ages))
        return columns_batch({k: c.index_select(0, rows).to(self._dtypes[k]) for k, c in self._cols.items()})

    def _drop_oldest(self, k: int) -> None:
        k = min(k, self._size)
        if k <= 0:  # nothing held (a buffer of capacity 0 holds nothing: no ring to move)
            return
        self._start = (self._start + k) % self.capacity
        self._size -= k
        self.dropped += k

    def expire(self, older_than: int) -> int:
        """Drops the rows stamped before `older_than` (they may reference indices an expiry freed); returns
        how many. Stamps never decrease, so they are the oldest rows."""
        if not self._size:
            return 0
        stale = int(np.searchsorted(self._stamps[self._ring(np.arange(self._size))], older_than, side="left"))
        self._drop_oldest(stale)
        return stale

    def clear(self) -> None:
        """Drops every row (after the learner went back to older vocabularies)."""
        self._drop_oldest(self._size)

    def oldest_first(self) -> Batch | None:
        """Every row held, from oldest to newest (for tests and inspection)."""
        return self._gather(np.arange(self._size)) if self._size else None
