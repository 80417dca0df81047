"""Item counters that samples can carry deterministically: counts per bucket of effective event time.

A sample's item counters (impressions, clicks, purchases of the shown item in its scenario) used to be read
from worker-wide totals at the moment the impression was processed, so they depended on how the consumer
interleaved partitions: two replays of one log gave different sample bytes. Here they are a function of the
events alone (docs/design.md, "Deterministic item counters"):

- each event gets an *effective time* `eff = max(ts, wm_p, F)`: its timestamp, bumped up to its partition's
  newest event time before it (a late event within its partition counts as of that time) and to the sealed
  frontier F. The first two terms depend only on the partition's own order (fixed by its offsets); F binds
  only for a partition that the idle rule let the frontier pass, the one place where wall time can change
  a value;
- counts are kept per bucket of `eff` (width B). The frontier `F = floor(min over the assigned, non-idle
  partitions of wm / B) * B` only moves forward; every bucket below it is complete, because every later
  event has `eff >= F`;
- an impression counts the events with `eff < C`, its *cut* `C = floor(eff_i / B) * B`: the counts as of
  the start of its own bucket, between 0 and B stale. Since `eff_i >= F`, `C >= F`; the impression is
  answered when `F` reaches `C` (at once when `C == F`, the steady state of a live stream).

Buckets below the frontier are folded into one base row per key, after the impressions waiting for them
have been answered in order of their cuts, so an answer is always a base row, never a sum over buckets.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

Key = tuple[str, str]  # (scenario, item id)
Row = list[int]  # [impressions, clicks, add-to-carts, purchases]


def floor_to(value: int, step: int) -> int:
    """The largest multiple of step that is <= value."""
    return value - value % step


class SealedCounters:
    """Per (scenario, item) counts by effective-time bucket, folded into base rows below the frontier."""

    def __init__(self, bucket_ms: int) -> None:
        self.bucket_ms = bucket_ms
        self.frontier = 0  # F: every bucket below it is complete and folded into `base`
        self.base: dict[Key, Row] = {}
        self.buckets: dict[Key, dict[int, Row]] = {}
        self.by_bucket: dict[int, set[Key]] = {}  # bucket start -> keys with counts in it
        self._starts: list[int] = []  # the starts of by_bucket, as a heap (folding takes the oldest first)
        self.dirty: set[Key] = set()  # keys to persist at the next commit
        self.sealed_changed: set[Key] = set()  # keys whose counts as of the frontier changed (to publish)

    def effective_time(self, ts_ms: int, partition_watermark: int) -> int:
        """The event's effective time: its timestamp, bumped to its partition's watermark and the frontier."""
        return max(ts_ms, partition_watermark, self.frontier)

    def cut_of(self, effective_ms: int) -> int:
        """An impression's cut: its item counters count the events with effective time below it."""
        return floor_to(effective_ms, self.bucket_ms)

    def frontier_for(self, low_watermark: int) -> int:
        """The frontier a low watermark (the slowest live partition's newest event time) allows."""
        return floor_to(low_watermark, self.bucket_ms)

    def add(self, key: Key, type_index: int, effective_ms: int) -> None:
        """Counts one event of a type (0 impression .. 3 purchase) at its effective time (>= the frontier)."""
        start = floor_to(effective_ms, self.bucket_ms)
        series = self.buckets.get(key)
        if series is None:
            series = self.buckets[key] = {}
        row = series.get(start)
        if row is None:
            row = series[start] = [0, 0, 0, 0]
            self._note_bucket(start, key)
        row[type_index] += 1
        self.dirty.add(key)

    def _note_bucket(self, start: int, key: Key) -> None:
        keys = self.by_bucket.get(start)
        if keys is None:
            keys = self.by_bucket[start] = set()
            heapq.heappush(self._starts, start)
        keys.add(key)

    def sealed(self, key: Key) -> Row:
        """The key's counts over the events below the frontier (a copy)."""
        base = self.base.get(key)
        return [0, 0, 0, 0] if base is None else list(base)

    def fold_to(self, line: int) -> None:
        """Adds every bucket below `line` (<= the frontier) into the base rows; the keys changed are noted."""
        starts = self._starts
        while starts and starts[0] < line:
            start = heapq.heappop(starts)
            for key in self.by_bucket.pop(start):
                series = self.buckets[key]
                row = series.pop(start)
                base = self.base.get(key)
                if base is None:
                    self.base[key] = row
                else:
                    for i in range(4):
                        base[i] += row[i]
                if not series:
                    del self.buckets[key]
                self.dirty.add(key)
                self.sealed_changed.add(key)

    def packed(self, key: Key) -> list[int]:
        """What the store keeps for a key, as integers: the base row, then (start, row) per open bucket."""
        out = list(self.base.get(key) or (0, 0, 0, 0))
        for start, row in (self.buckets.get(key) or {}).items():
            out.append(start)
            out += row
        return out

    def restore(self, frontier: int, rows: Iterable[tuple[Key, list[int]]]) -> None:
        """Refills the counters from stored rows (`packed` lists), at start-up."""
        self.frontier = frontier
        for key, ints in rows:
            if any(ints[:4]):
                self.base[key] = ints[:4]
            for i in range(4, len(ints), 5):
                start = ints[i]
                self.buckets.setdefault(key, {})[start] = ints[i + 1:i + 5]
                self._note_bucket(start, key)
