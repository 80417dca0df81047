"""A replay buffer over recently learned samples: the online trainer's remedy for one-pass, correlated order.

A stream arrives user by user (ML-1M's log is dominated by users who rate dozens of films in one session),
so consecutive micro-batches are correlated and each sample is seen once. Production online learners mix
each fresh batch with samples drawn from a bounded buffer of recent ones (experience replay), which gives
the model more than one pass over recent data and decorrelates its steps without delaying any fresh
sample: the fresh batch is still predicted before it is learned (the prequential metrics stay honest), and
only samples already learned are replayed.

The buffer keeps the newest `capacity` samples in a ring (oldest evicted first) and draws uniformly without
replacement, from a seeded generator so a run is reproducible. It is not checkpointed: a restarted trainer
refills it from what it learns next (docs/online-training.md, "Replay").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class ReplayBuffer(Generic[T]):
    """The newest `capacity` items, drawn uniformly at random."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"replay buffer capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._items: list[T] = []
        self._cursor = 0  # where the next item goes once the ring is full
        self._rng = np.random.default_rng(seed)
        self.added = 0
        self.drawn = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: Sequence[T]) -> None:
        """Appends items in order; once full, each evicts the oldest."""
        if not self.capacity:
            return
        self.added += len(items)
        for item in items[-self.capacity:]:
            if len(self._items) < self.capacity:
                self._items.append(item)
            else:
                self._items[self._cursor] = item
                self._cursor = (self._cursor + 1) % self.capacity

    def draw(self, n: int) -> list[T]:
        """min(n, len) distinct items, uniformly at random."""
        n = min(n, len(self._items))
        if n <= 0:
            return []
        self.drawn += n
        return [self._items[int(i)] for i in self._rng.choice(len(self._items), size=n, replace=False)]

    def oldest_first(self) -> list[T]:
        """The buffer's items from oldest to newest (for tests and inspection)."""
        return self._items[self._cursor:] + self._items[: self._cursor]
