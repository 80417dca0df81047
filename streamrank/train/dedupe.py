"""The sample keys a learner saw last, to drop duplicates: a worker replaying a batch after a crash re-sends
its samples, and the trainer must learn each once. Bounded (the oldest keys are forgotten first); not
checkpointed: a restarted trainer resumes from offsets that its checkpoint covers exactly."""

from __future__ import annotations

from collections import deque
from typing import TypeVar

T = TypeVar("T")


class RecentKeys:
    """The newest `capacity` keys, with a set for membership."""

    def __init__(self, capacity: int) -> None:
        self._order: deque[str] = deque(maxlen=capacity)
        self._set: set[str] = set()

    def fresh(self, items: list[T], keys: list[str]) -> tuple[list[T], list[str]]:
        """The items whose key is not among the recent ones (nor earlier in `items`), with their keys; their
        keys join the recent ones."""
        out, out_keys = [], []
        order, seen = self._order, self._set
        for item, key in zip(items, keys, strict=True):
            if key in seen:
                continue
            if len(order) == order.maxlen:
                seen.discard(order[0])
            order.append(key)
            seen.add(key)
            out.append(item)
            out_keys.append(key)
        return out, out_keys
