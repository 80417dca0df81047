"""Worker-wide aggregates: session co-occurrence counts and scenario statistics.

Counts are additive, so their totals do not depend on how partitions interleave; only the top-M trimming
of co-occurrence neighbours does (documented in docs/design.md).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import repeat
from operator import itemgetter

from streamrank.config import Settings
from streamrank.events.types import TYPE_INDEX


class CoocCounts:
    """item -> {neighbour: count}, bounded to the top M neighbours per item, with per-batch deltas.

    Pairs are tallied during a batch (Counter.update runs in C) and folded into the counts by take_delta()
    at its end, where each item over 2*M neighbours is trimmed back to its top M once.
    """

    def __init__(self, settings: Settings) -> None:
        self.top_m = settings.cooc_top_m
        self.counts: dict[str, dict[str, int]] = {}
        self._pairs: Counter[tuple[str, str]] = Counter()

    def add_pairs(self, item_id: str, partners: list[str]) -> None:
        """Counts one co-occurrence of item_id with each partner (both directions, at take_delta())."""
        self._pairs.update(zip(repeat(item_id), partners))

    def take_delta(self) -> tuple[dict[str, dict[str, int]], set[str]]:
        """Folds the batch's pairs into the counts; returns the per-item deltas and the changed items."""
        delta: dict[str, dict[str, int]] = defaultdict(dict)
        for (a, b), n in self._pairs.items():
            row = delta[a]
            row[b] = row.get(b, 0) + n
            row = delta[b]
            row[a] = row.get(a, 0) + n
        self._pairs = Counter()
        counts = self.counts
        limit = 2 * self.top_m
        for item_id, changes in delta.items():
            mine = counts.get(item_id)
            if mine is None:
                counts[item_id] = dict(changes)
                mine = counts[item_id]
            else:
                get = mine.get
                for other, n in changes.items():
                    mine[other] = get(other, 0) + n
            if len(mine) > limit:
                counts[item_id] = _top(mine, self.top_m)
        return dict(delta), set(delta)

    def neighbours(self, item_id: str, k: int | None = None) -> list[tuple[str, int]]:
        """The item's neighbours by decreasing count (ties by id), at most k."""
        ranked = sorted(self.counts.get(item_id, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked if k is None else ranked[:k]


def _top(counter: dict[str, int], m: int) -> dict[str, int]:
    """The m largest entries (ties broken by id, so the result is deterministic).

    Two sorts with C-level keys: by id, then by count descending; the sort is stable (also with
    reverse=True), so ties stay in id order. About 3x faster than one sort with a tuple-building lambda.
    """
    ranked = sorted(sorted(counter.items(), key=itemgetter(0)), key=itemgetter(1), reverse=True)
    return dict(ranked[:m])


class ScenarioStats:
    """Impressions/clicks/add-to-carts/purchases per scenario and per (scenario, item), all time and bucketed."""

    def __init__(self, settings: Settings) -> None:
        self.bucket_ms = settings.stats_bucket_ms
        self.window_ms = settings.stats_window_ms
        # Buckets are kept for the window plus this grace, so partitions a little behind still land.
        self.keep_ms = settings.stats_window_ms + settings.stats_grace_ms
        self.scenario: dict[str, list[int]] = {}
        self.item: dict[tuple[str, str], list[int]] = {}
        # (scenario, item or "") -> {bucket start ms: counts}
        self.buckets: dict[tuple[str, str], dict[int, list[int]]] = {}
        # Newest event time seen (the end of the "recent" window) and the low watermark: the slowest input
        # partition's newest event time, below which an event counts as late. Replays at full speed put
        # months between partitions within one fetch, so only the minimum across partitions is safe.
        self.watermark = 0
        self.low_watermark = 0
        self.late = 0
        self.dirty: set[tuple[str, str]] = set()

    def add(self, scenario: str, item_id: str, etype: int, ts_ms: int) -> None:
        """Counts one event."""
        idx = TYPE_INDEX[etype]
        row = self.scenario.get(scenario)
        if row is None:
            row = self.scenario[scenario] = [0, 0, 0, 0]
        row[idx] += 1
        key = (scenario, item_id)
        row = self.item.get(key)
        if row is None:
            row = self.item[key] = [0, 0, 0, 0]
        row[idx] += 1
        self.dirty.add((scenario, ""))
        self.dirty.add(key)
        if ts_ms > self.watermark:
            self.watermark = ts_ms
        if ts_ms < self.low_watermark - self.keep_ms:
            self.late += 1
            return
        bucket = ts_ms - ts_ms % self.bucket_ms
        for k in ((scenario, ""), key):
            series = self.buckets.get(k)
            if series is None:
                series = self.buckets[k] = {}
            counts = series.get(bucket)
            if counts is None:
                counts = series[bucket] = [0, 0, 0, 0]
            counts[idx] += 1

    def item_counts(self, scenario: str, item_id: str) -> list[int]:
        """All-time [impressions, clicks, add-to-carts, purchases] of an item in a scenario."""
        return self.item.get((scenario, item_id)) or [0, 0, 0, 0]

    def recent(self, scenario: str, item_id: str = "") -> list[int]:
        """Counts over the recent window (ending at the newest event time seen); item "" = whole scenario."""
        start = self.watermark - self.window_ms
        total = [0, 0, 0, 0]
        for bucket, counts in self.buckets.get((scenario, item_id), {}).items():
            if bucket + self.bucket_ms > start:
                for i in range(4):
                    total[i] += counts[i]
        return total

    def expire(self, low_watermark: int) -> None:
        """Advances the low watermark and drops buckets older than it minus window and grace (once per batch)."""
        self.low_watermark = max(self.low_watermark, low_watermark)
        horizon = self.low_watermark - self.keep_ms
        for key in list(self.buckets):
            series = self.buckets[key]
            old = [b for b in series if b + self.bucket_ms <= horizon]
            for b in old:
                del series[b]
            if not series:
                del self.buckets[key]
                self.dirty.add(key)
            elif old:
                self.dirty.add(key)
