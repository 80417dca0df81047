"""Which events partitions a worker's processor works for, and how a partition arrives and leaves.

A partition's in-memory work (its users' attribution deadlines, impressions waiting for the counters, requests
closed while waiting) belongs to its owner only. When the group moves a partition away, the processor forgets
that work (its state stays in RocksDB and in the changelog); when one arrives, it is taken from the changelog
(`adopt`) or, when the local state is as new, reloaded from RocksDB. A batch's changelog records are written
here too (stream/changelog.py): the rows of the users it changed and one `P` record per owned partition.

A mixin of `BatchProcessor` (stream/processor.py), kept apart so each file has one job; it declares the
attributes of the processor it uses.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from streamrank.stream.changelog import PartitionImage, meta_value, tag
from streamrank.stream.counters import ExchangeRecord, SealedCounters
from streamrank.stream.encode import decode_exchange
from streamrank.stream.statecodec import load_state
from streamrank.stream.store import StateStore
from streamrank.stream.userstate import PendingRequest, UserState

if TYPE_CHECKING:
    from streamrank.stream.processor import BatchResult


class PartitionOwnership:
    """Assignment, hand-off and changelog records of the batch processor."""

    store: StateStore
    counters: SealedCounters
    users: dict[str, UserState]
    offsets: dict[tuple[str, int], int]
    durable_offsets: dict[tuple[str, int], int]
    watermarks: dict[int, int]
    assigned: set[int] | None
    gained: set[int]
    deadlines: dict[int, list[tuple[int, int, str, str]]]
    waiting: list[tuple[int, int, str, str, str]]
    closed: dict[tuple[str, str], PendingRequest]
    closed_dirty: set[tuple[str, str]]
    events_topic: str
    changelog_writer: int | None
    resend_exchange: list[ExchangeRecord]
    _changelog_batch: int

    # Defined by BatchProcessor (these stubs only type the mixin):
    def _user(self, user_id: str) -> UserState: raise NotImplementedError
    def _partitions(self) -> set[int]: raise NotImplementedError
    def _schedule(self, partition: int, ts_ms: int, user_id: str, request_id: str) -> None: raise NotImplementedError
    def _wait_all(self, user_id: str, request_id: str, req: PendingRequest) -> None: raise NotImplementedError

    # -- assignment ------------------------------------------------------------------------------
    def assign(self, partitions: set[int], restored: set[int] | frozenset[int] = frozenset()) -> None:
        """Takes the consumer's assignment of events partitions. Work of partitions no longer owned is
        forgotten; partitions gained and not restored from the changelog (`restored`, already adopted) are
        reloaded from RocksDB. The item stats they own are published again with the next batch (all of them at
        start-up)."""
        previous = self.assigned
        self.gained |= partitions - (previous or set())
        self.drop(self._known_partitions() - partitions)
        if previous is not None:
            for p in partitions - previous - set(restored):
                self.drop({p})
                self._load_pending(p)
        self.assigned = set(partitions)

    def revoke(self, partitions: set[int]) -> None:
        """The group took partitions away: their work here is forgotten until they come back."""
        self.drop(partitions)
        if self.assigned is not None:
            self.assigned -= partitions

    def _known_partitions(self) -> set[int]:
        return set(self.deadlines) | set(self.watermarks) | {u.partition for u in self.users.values()}

    def _partition_of_user(self, user_id: str) -> int:
        user = self.users.get(user_id) or self.store.load_user(user_id)
        return -1 if user is None else user.partition

    def drop(self, partitions: set[int]) -> None:
        """Forgets the in-memory work of partitions (deadlines, waiting impressions, closed requests, cached
        users); their state is durable in RocksDB and in the changelog already (called between batches)."""
        if not partitions:
            return
        for p in partitions:
            self.deadlines.pop(p, None)
        candidates = {entry[2] for entry in self.waiting} | {key[0] for key in self.closed}
        gone = {uid for uid in candidates if self._partition_of_user(uid) in partitions}
        gone |= {uid for uid, user in self.users.items() if user.partition in partitions}
        self._forget_users(gone)

    def _forget_users(self, gone: set[str]) -> None:
        for uid in gone:
            self.users.pop(uid, None)
        self.waiting = [entry for entry in self.waiting if entry[2] not in gone]
        heapq.heapify(self.waiting)
        for key in [key for key in self.closed if key[0] in gone]:
            del self.closed[key]
            self.closed_dirty.discard(key)

    def _load_pending(self, partition: int | None) -> None:
        """Schedules the stored users with open requests and the stored closed requests, of one partition
        (None: all, at start-up)."""
        for user in self.store.load_pending_users():
            if partition is None or user.partition == partition:
                self.users[user.user_id] = user
                for request_id, req in user.pending.items():
                    self._schedule(user.partition, req.ts_ms, user.user_id, request_id)
                    self._wait_all(user.user_id, request_id, req)
        for (user_id, request_id), req in self.store.load_closed_requests():
            if partition is None or self._partition_of_user(user_id) == partition:
                self.closed[(user_id, request_id)] = req
                self._wait_all(user_id, request_id, req)

    # -- the changelog ---------------------------------------------------------------------------
    def _changelog(self, written: dict[bytes, bytes], result: BatchResult, open_changed: set[int]
                   ) -> dict[int, list[tuple[bytes, bytes]]]:
        """The changelog records of a committed batch, per owned events partition: the rows it wrote, then each
        changed partition's `P` record (offset, watermark, open counter buckets) that completes them."""
        assert self.changelog_writer is not None
        self._changelog_batch += 1
        head = tag(self.changelog_writer, self._changelog_batch)
        own = self._partitions()
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in written.items():
            user_id = key[1:].split(b"\x00", 1)[0].decode()
            user = result.touched.get(user_id) or self._user(user_id)
            if user.partition in own:
                out.setdefault(user.partition, []).append((key, head + value))
        counters = self.counters
        sealed = result.sealed
        for p in sorted((set(out) | result.partitions | open_changed | set(sealed)) & own):
            exchange = sealed.get(p, b"")
            meta = meta_value(self.offsets.get((self.events_topic, p), -1), self.watermarks.get(p, 0),
                              counters.packed_open(p), counters.open_keys(p), exchange)
            out.setdefault(p, []).append((b"P", head + meta))
        return out

    def adopt(self, image: PartitionImage, changelog_position: tuple[str, int], changelog_last: int) -> None:
        """Takes a partition's image restored from the changelog in place of what this worker held of it (an
        older copy, or nothing): its users, closed requests, open counter buckets, offset and watermark, in
        memory and in RocksDB at once. The worker's own counters (from the exchange, read to its end first)
        stay; the partition's sealed floor only rises."""
        p = image.partition
        users: dict[str, UserState] = {uid: load_state(raw) for uid, raw in image.users.items()}
        closed = {key: load_state(raw) for key, raw in image.closed.items() if raw}
        self.drop({p})
        self._forget_users(set(users) | {key[0] for key in image.closed})
        self.deadlines[p] = []
        for line in image.exchange.split(b"\n") if image.exchange else []:
            # The buckets its batch sealed: their exchange record goes out after the changelog, so it may never
            # have been sent. Applied here (at most once per bucket) and sent again with the next batch.
            part, sealed_to, idle, buckets, watermark, _ = decode_exchange(line)
            self.counters.apply(part, sealed_to, buckets)
            self.resend_exchange.append(ExchangeRecord(part, sealed_to, idle, buckets, watermark))
        self.counters.adopt_open(p, image.open_ints, image.open_keys)
        self.counters.open_dirty.discard(p)
        self.offsets[(self.events_topic, p)] = image.offset
        self.offsets[changelog_position] = changelog_last
        self.watermarks[p] = image.watermark
        for user in users.values():
            for request_id, req in user.pending.items():
                self._schedule(p, req.ts_ms, user.user_id, request_id)
                self._wait_all(user.user_id, request_id, req)
        for key, req in closed.items():
            self.closed[key] = req
            self._wait_all(key[0], key[1], req)
        counters = self.counters
        self.store.adopt_partition(
            image.users, image.closed, {uid for uid, user in users.items() if user.pending},
            (p, counters.packed_open(p), counters.open_keys(p)),
            {(self.events_topic, p): image.offset, changelog_position: changelog_last}, (p, image.watermark))
        self.durable_offsets = dict(self.offsets)
