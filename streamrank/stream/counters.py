"""Item counters that samples can carry deterministically: counts per bucket of effective event time.

A sample's item counters (impressions, clicks, purchases of the shown item in its scenario) used to be read
from worker-wide totals at the moment the impression was processed, so they depended on how the consumer
interleaved partitions: two replays of one log gave different sample bytes. Here they are a function of the
events alone (docs/design.md, "Deterministic item counters"):

- each event gets an *effective time* `eff = max(ts, wm_p, Z_p)`: its timestamp, bumped up to its partition's
  newest event time before it (a late event within its partition counts as of that time) and to the
  partition's floor. The first two terms depend only on the partition's own order (fixed by its offsets);
  the floor moves only for a partition that the idle rule let the frontier pass, the one place where wall
  time can change a value;
- counts are kept per bucket of `eff` (width B), per source partition until the partition's watermark
  passes the bucket's end (then *sealed*, and sent to the other workers). The frontier `F` is the lowest
  sealed boundary over the events topic's partitions that are not idle, whichever worker owns them; it
  only moves forward, and every bucket below it is complete, because every later event has `eff >= F`;
- an impression counts the events with `eff < C`, its *cut* `C = floor(eff_i / B) * B`: the counts as of
  the start of its own bucket, between 0 and B stale. Since `eff_i >= F`, `C >= F`; the impression is
  answered when `F` reaches `C` (at once when `C == F`, the steady state of a live stream).

Buckets below the frontier are folded into one base row per key, after the impressions waiting for them
have been answered in order of their cuts, so an answer is a base row, never a sum over buckets. The folded
buckets of the last `history_ms` are kept by bucket start: a partition rebuilt by replay after it moved to
this worker answers its impressions as of their cuts, which the frontier may have passed by then (the base
row less the buckets from the cut on).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

Key = tuple[str, str]  # (scenario, item id)
Row = list[int]  # [impressions, clicks, add-to-carts, purchases]


@dataclass(slots=True)
class ExchangeRecord:
    """One partition's newly sealed item-counter buckets, for the workers that own the other partitions:
    its sealed floor, whether it is idle, the counts per bucket start and (scenario, item), and its watermark."""

    partition: int
    sealed_to: int
    idle: bool
    buckets: dict[int, dict[tuple[str, str], list[int]]]
    watermark: int = 0
    frontier: int = 0  # the sender's frontier after the batch: it answered every impression with a cut below


def floor_to(value: int, step: int) -> int:
    """The largest multiple of step that is <= value."""
    return value - value % step


class SealedCounters:
    """Per (scenario, item) counts by effective-time bucket, folded into base rows below the frontier."""

    def __init__(self, bucket_ms: int, history_ms: int = 0) -> None:
        self.bucket_ms = bucket_ms
        self.history_ms = history_ms
        self.history: dict[int, dict[Key, Row]] = {}  # bucket start -> the rows folded from it (last history_ms)
        self.history_dirty: set[int] = set()  # starts to persist
        self.history_dropped: set[int] = set()  # starts to delete
        self.history_low = 0  # every bucket folded from here on is in the history
        self.frontier = 0  # F: every bucket below it is complete and folded into `base`
        self.base: dict[Key, Row] = {}
        self.buckets: dict[Key, dict[int, Row]] = {}
        self.by_bucket: dict[int, set[Key]] = {}  # bucket start -> keys with counts in it
        self._starts: list[int] = []  # the starts of by_bucket, as a heap (folding takes the oldest first)
        self.dirty: set[Key] = set()  # keys to persist at the next commit
        self.sealed_changed: set[Key] = set()  # keys whose counts as of the frontier changed (to publish)
        # Contributions not sealed yet, per source partition: partition -> bucket start -> key -> row. A
        # partition's bucket is sealed (moved into `buckets`) once its watermark passes the bucket's end.
        self.open: dict[int, dict[int, dict[Key, Row]]] = {}
        # Z_p: every contribution of partition p below it is sealed; no event of p lands below it again.
        self.sealed_to: dict[int, int] = {}
        # The floor of effective time for this worker's own events of a partition: raised to the end of
        # what an idle partition sealed, and to the frontier when it resumes (`resume`). Kept apart from
        # `sealed_to`, which another owner's records raise: a partition rebuilt by replay after a move
        # must compute the buckets its first owner did, not land every event above that owner's floor.
        self.floor: dict[int, int] = {}
        self.open_dirty: set[int] = set()  # partitions whose open buckets, sealed floor or idle mark changed
        self.remote_idle: set[int] = set()  # other workers' partitions marked idle in their last record
        # Other workers' partitions' newest event times, from their records: when every partition is idle, the
        # newest watermark over the whole topic sets the frontier, the same at every worker.
        self.remote_marks: dict[int, int] = {}
        # The frontier each partition's owner had reached (and answered its impressions up to) when it sent
        # its last record: a worker replaying a partition that moved here leaves the impressions above it
        # waiting, so that their emissions are sent (the previous owner may not have sent them).
        self.announced: dict[int, int] = {}
        # Every partition of the events topic (set by the worker): until each has announced a frontier, the
        # whole history is kept (an owner that died before announcing one may have left any cut waiting).
        self.partitions: set[int] = set()

    def effective_time(self, ts_ms: int, partition_watermark: int, partition: int) -> int:
        """The event's effective time: its timestamp, bumped to its partition's watermark and to the
        partition's own floor (which `seal_all` and `resume` raise around idle periods)."""
        return max(ts_ms, partition_watermark, self.floor.get(partition, 0))

    def resume(self, partition: int) -> None:
        """A partition that was idle has an event again: the frontier may have passed it meanwhile, so its
        events count from the frontier on (the stated non-determinism of idle partitions)."""
        if self.frontier > self.floor.get(partition, 0):
            self.floor[partition] = self.frontier
            self.open_dirty.add(partition)

    def cut_of(self, effective_ms: int) -> int:
        """An impression's cut: its item counters count the events with effective time below it."""
        return floor_to(effective_ms, self.bucket_ms)

    def frontier_for(self, low_watermark: int) -> int:
        """The frontier a low watermark (the slowest live partition's newest event time) allows."""
        return floor_to(low_watermark, self.bucket_ms)

    def add(self, partition: int, key: Key, type_index: int, effective_ms: int) -> None:
        """Counts one event of a partition, of a type (0 impression .. 3 purchase), at its effective time
        (>= the frontier and the partition's sealed floor), in the partition's open buckets."""
        start = floor_to(effective_ms, self.bucket_ms)
        opened = self.open.get(partition)
        if opened is None:
            opened = self.open[partition] = {}
        rows = opened.get(start)
        if rows is None:
            rows = opened[start] = {}
        row = rows.get(key)
        if row is None:
            row = rows[key] = [0, 0, 0, 0]
        row[type_index] += 1
        self.open_dirty.add(partition)

    def seal(self, partition: int, upto: int) -> dict[int, dict[Key, Row]]:
        """Seals the partition's contributions below `upto` (a bucket start): moves them into the buckets the
        frontier folds and raises its sealed floor; returns them by bucket (what other workers must apply)."""
        have = self.sealed_to.get(partition, 0)
        opened = self.open.get(partition)
        out: dict[int, dict[Key, Row]] = {}
        if opened:
            for start in sorted(s for s in opened if s < upto):
                rows = opened.pop(start)
                if start >= have:  # below it: applied already from a previous owner's records
                    out[start] = rows
                    self._merge(start, rows)
            if not opened:
                del self.open[partition]
            self.open_dirty.add(partition)
        if upto > have:
            self.sealed_to[partition] = upto
            self.open_dirty.add(partition)
        return out

    def seal_all(self, partition: int) -> dict[int, dict[Key, Row]]:
        """Seals every open bucket of a partition that went idle: the frontier may pass them while it is quiet."""
        opened = self.open.get(partition)
        if not opened:
            return {}
        end = max(opened) + self.bucket_ms
        if end > self.floor.get(partition, 0):
            self.floor[partition] = end  # no later event of the partition lands in a sealed bucket
        return self.seal(partition, end)

    def note_frontier(self, partition: int, frontier: int) -> None:
        """Records the frontier a partition's owner announced. The latest record wins, not the highest: a
        partition's records are in order on the topic, and a later owner may have reached a lower frontier
        than an earlier one did (it answered only what it announced). 0 (the sender was still replaying the
        partition) announces nothing."""
        if frontier and frontier != self.announced.get(partition, 0):
            self.announced[partition] = frontier
            self.open_dirty.add(partition)

    def apply(self, partition: int, upto: int, sealed: dict[int, dict[Key, Row]], idle: bool = False,
              watermark: int = 0) -> None:
        """Applies another worker's sealed contributions of a partition, each bucket at most once (buckets
        below the floor already applied are skipped: a re-sent record may cover other buckets)."""
        if watermark > self.remote_marks.get(partition, 0):
            self.remote_marks[partition] = watermark
        if idle:
            self.remote_idle.add(partition)
        else:
            self.remote_idle.discard(partition)
        have = self.sealed_to.get(partition, 0)
        for start, rows in sealed.items():
            if start >= have:
                self._merge(start, rows)
        if upto > have:
            self.sealed_to[partition] = upto
        self.open_dirty.add(partition)

    def _merge(self, start: int, rows: dict[Key, Row]) -> None:
        buckets = self.buckets
        for key, row in rows.items():
            series = buckets.get(key)
            if series is None:
                series = buckets[key] = {}
            mine = series.get(start)
            if mine is None:
                series[start] = list(row)
                self._note_bucket(start, key)
            else:
                for i in range(4):
                    mine[i] += row[i]
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

    def sealed_below(self, key: Key, cut: int) -> tuple[Row, bool]:
        """The key's counts over the events below `cut`, and whether they are exact: the base row (folded to
        the cut, when it is the frontier or above) less the folded buckets from the cut on. A cut older than
        the history gets the counts as of the frontier less the history (False)."""
        row = self.sealed(key)
        if cut >= self.frontier:
            return row, True
        for start, rows in self.history.items():
            if start >= cut:
                old = rows.get(key)
                if old is not None:
                    for i in range(4):
                        row[i] -= old[i]
        return row, cut >= self.history_low

    def fold_to(self, line: int) -> None:
        """Adds every bucket below `line` (<= the frontier) into the base rows; the keys changed are noted."""
        starts = self._starts
        keep = self.history_ms > 0
        while starts and starts[0] < line:
            start = heapq.heappop(starts)
            folded: dict[Key, Row] = {}
            for key in self.by_bucket.pop(start):
                series = self.buckets[key]
                row = series.pop(start)
                base = self.base.get(key)
                if base is None:
                    self.base[key] = list(row)
                else:
                    for i in range(4):
                        base[i] += row[i]
                folded[key] = row
                if not series:
                    del self.buckets[key]
                self.dirty.add(key)
                self.sealed_changed.add(key)
            if keep:
                self.history[start] = folded
                self.history_dirty.add(start)
        if keep:
            # Kept: the last history_ms, and everything above the lowest frontier a partition's owner announced
            # (a partition whose owner died is replayed by its next owner from where that one had answered).
            announced = ([self.announced.get(p, 0) for p in self.partitions] if self.partitions
                         else [a for a in self.announced.values() if a])
            low = min([line - self.history_ms, *announced])
            self.history_low = max(self.history_low, low)
            for start in [s for s in self.history if s < low]:
                del self.history[start]
                self.history_dirty.discard(start)
                self.history_dropped.add(start)

    def packed(self, key: Key) -> list[int]:
        """What the store keeps for a key, as integers: the base row, then (start, row) per open bucket."""
        out = list(self.base.get(key) or (0, 0, 0, 0))
        for start, row in (self.buckets.get(key) or {}).items():
            out.append(start)
            out += row
        return out

    def packed_open(self, partition: int) -> list[int]:
        """What the store keeps for a partition: its sealed floor, idle mark and watermark (both from another
        worker's records), effective-time floor and announced frontier, then (start, row) per open bucket and
        key; the keys are kept apart (`open_keys`), in the same order."""
        out = [self.sealed_to.get(partition, 0), int(partition in self.remote_idle), self.floor.get(partition, 0),
               self.remote_marks.get(partition, 0), self.announced.get(partition, 0)]
        for start, rows in sorted((self.open.get(partition) or {}).items()):
            for row in rows.values():
                out.append(start)
                out += row
        return out

    def open_keys(self, partition: int) -> list[Key]:
        """The keys of `packed_open`'s rows, in its order."""
        return [key for _, rows in sorted((self.open.get(partition) or {}).items()) for key in rows]

    def restore_open(self, partition: int, ints: list[int], keys: list[Key]) -> None:
        """Refills one partition's sealed floor and open buckets from `packed_open` / `open_keys`."""
        if ints[0]:
            self.sealed_to[partition] = ints[0]
        if ints[1]:
            self.remote_idle.add(partition)
        if ints[2]:
            self.floor[partition] = ints[2]
        if ints[3]:
            self.remote_marks[partition] = ints[3]
        if ints[4]:
            self.announced[partition] = ints[4]
        for n, key in enumerate(keys):
            i = 5 + 5 * n
            start = ints[i]
            self.open.setdefault(partition, {}).setdefault(start, {})[key] = ints[i + 1:i + 5]

    def adopt_open(self, partition: int, ints: list[int], keys: list[Key]) -> None:
        """Replaces a partition's open buckets and effective-time floor with those of its previous owner's
        changelog image (`packed_open` / `open_keys` there). The sealed floor only rises: buckets this worker
        applied from that owner's exchange records are not sealed again."""
        self.open.pop(partition, None)
        self.floor.pop(partition, None)
        have = self.sealed_to.get(partition, 0)
        if ints:
            self.restore_open(partition, [max(have, ints[0]), 0, ints[2], 0, 0, *ints[5:]], keys)
        self.open_dirty.add(partition)

    def packed_history(self, start: int) -> tuple[list[Key], list[int]]:
        """What the store keeps for a folded bucket of the history: its keys, and their rows in that order."""
        rows = self.history[start]
        return list(rows), [n for row in rows.values() for n in row]

    def restore_history(self, start: int, keys: list[Key], ints: list[int]) -> None:
        """Refills one folded bucket of the history from `packed_history`."""
        self.history[start] = {key: ints[4 * n:4 * n + 4] for n, key in enumerate(keys)}
        self.history_low = min(self.history)  # what was pruned below the oldest kept bucket is not known

    def restore(self, frontier: int, rows: Iterable[tuple[Key, list[int]]]) -> None:
        """Refills the counters from stored rows (`packed` lists), at start-up."""
        self.frontier = frontier
        self.history_low = frontier if self.history_ms > 0 else 0  # lowered by restore_history
        for key, ints in rows:
            if any(ints[:4]):
                self.base[key] = ints[:4]
            for i in range(4, len(ints), 5):
                start = ints[i]
                self.buckets.setdefault(key, {})[start] = ints[i + 1:i + 5]
                self._note_bucket(start, key)
