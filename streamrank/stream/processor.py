"""Folds a batch of raw events-topic records into the worker's state and collects what it must emit.

The processor is synchronous and knows nothing of Kafka clients: the service hands it records and writes
what it returns (outputs first, then state with offsets in one atomic batch), which keeps it testable and
lets the offline reference replay the same logic-free path in tests.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from streamrank.config import Settings
from streamrank.events.partitioning import partition_of
from streamrank.events.types import CLICK, IMPRESSION, TYPE_INDEX
from streamrank.events.validate import PROCESSING_ERROR, InvalidEvent, decode_event
from streamrank.stream.aggregates import CoocCounts, ScenarioStats
from streamrank.stream.counters import ExchangeRecord, SealedCounters
from streamrank.stream.encode import (
    cooc_update,
    decode_exchange,
    emission_message,
    exchange_message,
    item_stats_record,
    request_template,
    sample_messages,
    user_snapshot,
)
from streamrank.stream.ownership import PartitionOwnership
from streamrank.stream.store import StateStore
from streamrank.stream.userstate import PendingImpression, PendingRequest, UserState
from streamrank.v1 import events_pb2, features_pb2

log = logging.getLogger(__name__)


class ConsumedRecord(Protocol):
    """What the processor reads of a consumed message: aiokafka's ConsumerRecord has these attributes, so
    the consumer hands its records over as they are (no copy per record)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class Record(NamedTuple):
    """One consumed message built by hand (tests, benchmarks), as the processor needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class DeadLetter:
    """A record refused with its reason; goes to the dead-letter topic unchanged."""

    record: ConsumedRecord
    reason: str
    detail: str


@dataclass(slots=True)
class BatchResult:
    """What one batch produced: messages to send and counters."""

    samples: list[tuple[bytes, bytes]] = field(default_factory=list)
    snapshots: list[tuple[bytes, bytes]] = field(default_factory=list)
    cooc: list[tuple[bytes, bytes]] = field(default_factory=list)
    item_stats: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    processed: int = 0
    duplicates: int = 0
    replayed: int = 0
    counters: Counter[str] = field(default_factory=Counter)
    touched: dict[str, UserState] = field(default_factory=dict)
    cooc_dirty: set[str] = field(default_factory=set)
    exchange: list[ExchangeRecord] = field(default_factory=list)
    # Events partitions of the batch's records, and what its commit wrote to the changelog, per partition
    partitions: set[int] = field(default_factory=set)
    changelog: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    sealed: dict[int, bytes] = field(default_factory=dict)  # the exchange records per partition, as JSON lines


class BatchProcessor(PartitionOwnership):
    """The worker's state machine over events; one instance per worker process."""

    def __init__(self, settings: Settings, store: StateStore, now_ms: int | None = None) -> None:
        self.settings = settings
        self.store = store
        self.now_ms = now_ms  # fixed clock for tests; None = wall clock
        self.users: dict[str, UserState] = {}
        self.cooc = CoocCounts(settings)
        self.stats = ScenarioStats(settings)
        self.offsets: dict[tuple[str, int], int] = store.load_offsets()
        # The offsets as of the last commit(): what is really durable (self.offsets runs ahead in a batch).
        self.durable_offsets: dict[tuple[str, int], int] = dict(self.offsets)
        self.watermarks: dict[int, int] = store.load_watermarks()
        self.batch_seq = store.load_batch_seq()
        # Events partitions this worker owns (set by the consumer on assignment; None: those seen so far).
        self.assigned: set[int] | None = None
        # Partitions caught up and quiet for counter_idle_ms (set by the consumer): they leave the minimum
        # that moves the counters' frontier, so a quiet partition does not hold every impression back.
        self.idle: set[int] = set()
        # Every partition of the events topic, when several workers share it (set by the consumer): the
        # frontier then waits for the other workers' partitions too (their sealed floors and idle marks
        # come in exchange records). None: this worker's partitions only.
        self.all_partitions: set[int] | None = None
        self.resend_exchange: list[ExchangeRecord] = []  # sealed buckets of adopted images, sent again
        self.announced_idle: set[int] = set()  # own partitions whose last exchange record said idle
        # Partitions this worker gained at its last assignments: the item stats they own are published again
        # (their previous owner may have folded them and died before sending).
        self.gained: set[int] = set()
        self._rebuilding = False  # set by process(): replaying a partition that moved here
        # Own partitions whose replay (after a move) has not reached the group's committed offset yet (set
        # by the consumer): no frontier is announced for them, since their impressions are not all answered.
        self.replaying: set[int] = set()
        # (deadline, tie, user_id, request_id) per partition
        self.deadlines: dict[int, list[tuple[int, int, str, str]]] = {}
        # Impressions waiting for the frontier to reach their cut: (cut, tie, user_id, request_id, item_id)
        self.waiting: list[tuple[int, int, str, str, str]] = []
        # Requests whose window closed while an impression still waited: kept apart from their user (whose
        # record stays small and untouched by the answer), stored under their own keys until they go out.
        self.closed: dict[tuple[str, str], PendingRequest] = {}
        self.closed_dirty: set[tuple[str, str]] = set()
        self._tie = 0
        self.events_topic = settings.topic("events")
        # The changelog (stream/changelog.py): this process's writer id (None: no changelog) and batch number.
        self.changelog_writer: int | None = None
        self._changelog_batch = 0
        # The history covers what a partition rebuilt by replay can still emit: impressions within the
        # attribution window of its newest events, and the batch its previous owner sealed but never committed.
        self.counters = SealedCounters(settings.counter_bucket_ms,
                                       settings.attribution_window_ms + 4 * settings.counter_bucket_ms)
        store.load_aggregates(self.cooc, self.stats, self.counters)
        self._load_pending(None)
        for lines in store.load_sealed_records():
            for line in lines.split(b"\n"):
                self.resend_exchange.append(ExchangeRecord(*decode_exchange(line)))
        self.catalog = store.catalog_cache
        # fake_negative: impressions go out at once as negatives and again as positives when clicked
        self.fake_negative = settings.label_policy == "fake_negative"
        self.policy = (features_pb2.LABEL_POLICY_FAKE_NEGATIVE if self.fake_negative
                       else features_pb2.LABEL_POLICY_WINDOW)

    # ------------------------------------------------------------------------------------------
    def _remember(self, user: UserState) -> None:
        # No eviction here: a user changed earlier in the batch must not be reloaded from the store,
        # which does not hold the batch yet. The cache is trimmed after each commit.
        self.users[user.user_id] = user

    def _trim_cache(self) -> None:
        users = self.users
        excess = len(users) - self.settings.user_cache_size
        if excess > 0:
            for old in list(users)[:excess]:
                del users[old]

    def _user(self, user_id: str) -> UserState:
        user = self.users.get(user_id)
        if user is None:
            user = self.store.load_user(user_id) or UserState(user_id)
            self._remember(user)
        return user

    def _schedule(self, partition: int, ts_ms: int, user_id: str, request_id: str) -> None:
        self._tie += 1
        heap = self.deadlines.setdefault(partition, [])
        heapq.heappush(heap, (ts_ms + self.settings.attribution_window_ms, self._tie, user_id, request_id))

    def _wait(self, cut_ms: int, user_id: str, request_id: str, item_id: str) -> None:
        self._tie += 1
        heapq.heappush(self.waiting, (cut_ms, self._tie, user_id, request_id, item_id))

    def _wait_all(self, user_id: str, request_id: str, req: PendingRequest) -> None:
        for item_id, imp in req.impressions.items():
            if not imp.answered:
                self._wait(imp.cut_ms, user_id, request_id, item_id)

    # ------------------------------------------------------------------------------------------
    def process(self, records: Sequence[ConsumedRecord], rebuild: bool = False) -> BatchResult:
        """Applies a batch in memory; returns its outputs and what changed (persist it with commit()).

        `rebuild`: records another worker owned and already emitted for (a partition moved here). The caller
        drops the outputs of applying them; the frontier does not move, so nothing is sealed or answered in
        this batch: the next batch (whose outputs are sent) does that for every partition, and an
        impression's samples released there are sent, not dropped with the rebuild's.
        """
        result = BatchResult()
        touched = result.touched
        settings = self.settings
        offsets = self.offsets
        self._rebuilding = rebuild
        for record in records:
            tp = (record.topic, record.partition)
            last = offsets.get(tp)
            if last is not None and record.offset <= last:
                result.replayed += 1  # already folded into the durable state before a restart
                continue
            offsets[tp] = record.offset
            try:
                event = decode_event(record.value, settings, self.now_ms)
            except InvalidEvent as exc:
                result.dead.append(DeadLetter(record, exc.reason, exc.detail))
                result.counters[f"dlq.{exc.reason}"] += 1
                continue
            try:
                user = self._user(event.user_id)
                if user.is_duplicate(event.event_id, event.ts_ms, settings):
                    result.duplicates += 1
                    continue
                self._apply(event, user, record.partition, result)
                touched[user.user_id] = user
                self._close_due(record.partition, event.ts_ms, result, touched)
                result.processed += 1
            except Exception as exc:  # a bug must not stop the worker nor lose the event silently
                log.exception("processing failed for %s@%s", tp, record.offset)
                result.dead.append(DeadLetter(record, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
                result.counters[f"dlq.{PROCESSING_ERROR}"] += 1
        result.partitions = {record.partition for record in records}
        # Event time advances at the slowest assigned partition; one not read yet holds it at 0.
        parts = self._partitions()
        if parts:
            self.stats.expire(min(self.watermarks.get(p, 0) for p in parts))
        self.batch_seq += 1
        delta, result.cooc_dirty = self.cooc.take_delta()
        for item_id, neighbours in delta.items():
            result.cooc.append((item_id.encode(), cooc_update(item_id, neighbours, settings.worker_id,
                                                              self.batch_seq, self.stats.watermark)))
        return result if rebuild else self._finish(result)

    def tick(self) -> BatchResult:
        """A batch without records: moves the frontier (a partition went idle) and answers who waited for it."""
        return self._finish(BatchResult())

    def frontier_target(self) -> int:
        """Where the counters' frontier may move now: the slowest live partition's watermark, in buckets.

        A partition not read yet holds it at 0; idle partitions leave the minimum; when every partition is
        idle, the newest watermark over the topic sets it (nothing can arrive below the frontier: see
        effective_time); other workers' watermarks come in their exchange records, so every worker folds to
        the same frontier.
        """
        counters = self.counters
        floors = counters.sealed_to
        own = self._partitions()
        parts = own | (self.all_partitions or set())
        idle = self.idle
        remote_idle = counters.remote_idle
        live = [floors.get(p, 0) for p in parts if (p not in idle if p in own else p not in remote_idle)]
        if live:
            return max(counters.frontier, min(live))
        marks = self.watermarks
        newest = max((marks.get(p, 0) if p in own else counters.remote_marks.get(p, 0) for p in parts), default=0)
        return max(counters.frontier, counters.frontier_for(newest))

    def seal_partitions(self, result: BatchResult) -> None:
        """Seals each own partition's counter buckets below its watermark (all of them once it is idle) and
        adds what was sealed to the batch's exchange records, for the workers that own other partitions."""
        counters = self.counters
        marks = self.watermarks
        floors = counters.sealed_to
        own = self._partitions()
        # Records sealed before a restart or by an adopted image's owner: sent again for the partitions owned
        # (another's are its new owner's to send; a stale idle mark of ours would mislead the others).
        result.exchange.extend(rec for rec in self.resend_exchange if rec.partition in own)
        self.resend_exchange = []
        for p in sorted(own):
            idle = p in self.idle
            before = floors.get(p, 0)
            sealed = counters.seal_all(p) if idle else counters.seal(p, counters.frontier_for(marks.get(p, 0)))
            floor = floors.get(p, 0)
            if sealed or floor != before or idle != (p in self.announced_idle):
                result.exchange.append(ExchangeRecord(p, floor, idle, sealed, marks.get(p, 0)))
                if idle:
                    self.announced_idle.add(p)
                else:
                    self.announced_idle.discard(p)

    def _answers_now(self, cut_ms: int, partition: int) -> bool:
        """Whether an impression is answered as it is applied: its cut is at or below the frontier. When
        replaying a partition that moved here, only below the frontier its previous owner announced: that
        owner answered (and sent) every impression with a cut below it, but one with a cut at it may have
        come after the announcement. The others wait, and their emissions go out with the next batch's
        outputs (re-sent with identical bytes if they had been sent)."""
        counters = self.counters
        if cut_ms > counters.frontier:
            return False
        return not self._rebuilding or cut_ms < counters.announced.get(partition, 0)

    def apply_exchange(self, records: list[ExchangeRecord]) -> None:
        """Applies other workers' exchange records (their partitions' sealed counter buckets and idle marks)
        and notes the frontier each record's sender announced for its partition. Records of a partition this
        worker owns now come from its previous owner: each bucket is applied at most once, so a bucket sealed
        here is not applied again, and one that owner sealed is not sealed again here (SealedCounters.seal)."""
        for rec in records:
            self.counters.note_frontier(rec.partition, rec.frontier)
            self.counters.apply(rec.partition, rec.sealed_to, rec.buckets, rec.idle, rec.watermark)

    def _partitions(self) -> set[int]:
        return self.assigned if self.assigned is not None else set(self.watermarks)

    def stats_owner(self, key: tuple[str, str]) -> int:
        """The events partition whose owner publishes a (scenario, item)'s item stats: the one its key hashes
        to, so that exactly one worker publishes each key and item-stats records need no worker id."""
        return partition_of(f"{key[0]}\x1f{key[1]}", len(self.all_partitions or self._partitions()))

    def _stats_to_publish(self) -> list[tuple[str, str]]:
        """The (scenario, item) keys whose item stats this batch publishes: those the frontier changed, and
        all of a gained partition's, each only by its owner. Every worker holds every key's counts below the
        frontier (the exchange), so any could; the owner rule keeps one record per change."""
        counters = self.counters
        keys = counters.sealed_changed
        counters.sealed_changed = set()
        own = self._partitions()
        whole = self.all_partitions is None or own >= self.all_partitions
        if self.gained:
            gained, self.gained = self.gained, set()
            keys = keys | {key for key in counters.base if whole or self.stats_owner(key) in gained}
        if whole:
            return list(keys)
        return [key for key in keys if self.stats_owner(key) in own]

    def _finish(self, result: BatchResult) -> BatchResult:
        """Moves the frontier, answers the impressions it reached, and adds the batch's snapshots and item stats."""
        settings = self.settings
        # Snapshots of the users the batch's events changed (an answered impression changes no snapshot).
        for user in result.touched.values():
            result.snapshots.append((user.user_id.encode(), user_snapshot(user, settings)))
        self.seal_partitions(result)
        target = self.frontier_target()
        counters = self.counters
        waiting = self.waiting
        moved = target > counters.frontier
        # Impressions below the frontier wait only after a replay (`_answers_now`); cuts below the
        # frontier are answered from the history of folded buckets.
        if moved or (waiting and waiting[0][0] <= counters.frontier):
            folded = counters.frontier
            while waiting and waiting[0][0] <= target:
                cut, _, user_id, request_id, item_id = heapq.heappop(waiting)
                if cut > folded:
                    counters.fold_to(cut)
                    folded = cut
                self._release(user_id, request_id, item_id, result)
            counters.fold_to(target)
            counters.frontier = target
        replaying = self.replaying
        if moved and self.all_partitions is not None:
            # Announce the new frontier for every own partition (the records of this batch carry it).
            have = {rec.partition for rec in result.exchange}
            floors, marks = counters.sealed_to, self.watermarks
            result.exchange.extend(ExchangeRecord(p, floors.get(p, 0), p in self.announced_idle, {}, marks.get(p, 0))
                                   for p in sorted(self._partitions() - have - replaying))
        for rec in result.exchange:
            rec.frontier = 0 if rec.partition in replaying else counters.frontier
            counters.note_frontier(rec.partition, rec.frontier)  # as the other workers will (ours are not read back)
        for scenario, item_id in self._stats_to_publish():
            result.item_stats.append(item_stats_record(scenario, item_id, settings.worker_id,
                                                       counters.sealed((scenario, item_id)), counters.frontier))
        return result

    def commit(self, result: BatchResult) -> None:
        """Makes a processed batch durable: its state changes and offsets in one atomic write."""
        closed = {key: self.closed.get(key) for key in self.closed_dirty}
        self.closed_dirty = set()
        open_changed = set(self.counters.open_dirty)
        sealed: dict[int, list[bytes]] = {}
        for rec in result.exchange:
            sealed.setdefault(rec.partition, []).append(exchange_message(
                rec.partition, rec.sealed_to, rec.idle, rec.buckets, rec.watermark, 0)[1])
        result.sealed = {p: b"\n".join(lines) for p, lines in sealed.items()}  # JSON lines per partition
        written = self.store.commit(result.touched, self.cooc, result.cooc_dirty, self.stats, self.counters, closed,
                                    self.offsets, self.watermarks, self.batch_seq, result.sealed)
        if self.changelog_writer is not None:
            result.changelog = self._changelog(written, result, open_changed)
        self.durable_offsets = dict(self.offsets)
        self._trim_cache()

    def _category(self, event: events_pb2.Event) -> tuple[str, str, str, float | None]:
        attrs = event.item
        if attrs.category or attrs.brand or attrs.shop or attrs.HasField("price"):
            return attrs.category, attrs.brand, attrs.shop, attrs.price if attrs.HasField("price") else None
        item = self.catalog.get(event.item_id)
        if item is None:
            return "", "", "", None
        return item.category, item.brand, "", item.price if item.HasField("price") else None

    def _apply(self, event: events_pb2.Event, user: UserState, partition: int, result: BatchResult) -> None:
        settings = self.settings
        etype = event.type
        ts = event.ts_ms
        if ts > user.max_ts:
            user.max_ts = ts
        user.partition = partition
        if partition in self.idle:  # it was quiet and has an event again
            self.idle.discard(partition)
            self.counters.resume(partition)
        effective = self.counters.effective_time(ts, self.watermarks.get(partition, 0), partition)
        if event.item_id:
            self.counters.add(partition, (event.scenario, event.item_id), TYPE_INDEX[etype], effective)
        if etype == IMPRESSION:
            user.totals[0] += 1
            request_id = event.request_id or event.event_id
            req = user.pending.get(request_id)
            if req is None:
                template = request_template(user.user_id, request_id, ts, event.session_id, event.scenario,
                                            event.query, user.snapshot(settings.feature_sequence_length))
                req = PendingRequest(ts, event.scenario, template)
                user.pending[request_id] = req
                self._schedule(partition, ts, user.user_id, request_id)
            if event.item_id not in req.impressions:
                category, brand, shop, price = self._category(event)
                imp = req.impressions[event.item_id] = PendingImpression(
                    event.event_id, event.position, category, brand, shop, price,
                    (0, 0, 0, user.item_clicks.get(event.item_id, 0), user.category_clicks.get(category, 0)),
                    cut_ms=self.counters.cut_of(effective),
                )
                if self._answers_now(imp.cut_ms, partition):
                    self._answer(imp, event.scenario, event.item_id, result)
                else:
                    self._wait(imp.cut_ms, user.user_id, request_id, event.item_id)
                if self.fake_negative:
                    self._emit(user.user_id, request_id, req, event.item_id, features_pb2.EMISSION_IMPRESSION, ts,
                               result)
            self.stats.add(event.scenario, event.item_id, etype, ts)
            return
        user.totals[TYPE_INDEX[etype]] += 1
        self.stats.add(event.scenario, event.item_id, etype, ts)
        labelled = user.label_open(etype, event.item_id, event.request_id, ts, settings)
        if labelled is not None and labelled[2] and self.fake_negative:
            self._emit(user.user_id, labelled[0], labelled[1], event.item_id, features_pb2.EMISSION_POSITIVE, ts,
                       result)
        category = self._category(event)[0]
        partners = user.cooc_partners(ts, event.session_id, event.item_id, settings)
        if partners:
            self.cooc.add_pairs(event.item_id, partners)
        if etype == CLICK:
            user.count_click(event.item_id, category)
        user.append_behavior(event.item_id, etype, ts, category, event.session_id, settings)

    def _close_due(self, partition: int, ts_ms: int, result: BatchResult,
                   touched: dict[str, UserState]) -> None:
        """Closes the attribution windows of this partition that ended before its newest event time."""
        watermark = self.watermarks.get(partition, 0)
        if ts_ms > watermark:
            watermark = self.watermarks[partition] = ts_ms
        heap = self.deadlines.get(partition)
        while heap and heap[0][0] < watermark:
            _, _, user_id, request_id = heapq.heappop(heap)
            user = self._user(user_id)
            req = user.pending.pop(request_id, None)
            if req is None:
                continue
            touched[user_id] = user
            if req.all_answered():
                self._emit_closed(user.user_id, request_id, req, watermark, result)
            else:  # its samples go out when the last impression is answered
                req.closed_at = watermark
                self.closed[(user_id, request_id)] = req
                self.closed_dirty.add((user_id, request_id))

    # -- item counters and the emissions that wait for them ---------------------------------------
    def _answer(self, imp: PendingImpression, scenario: str, item_id: str, result: BatchResult) -> None:
        """Fills the impression's item counters with the sealed counts below its cut (the frontier now, or
        below it for a partition rebuilt by replay)."""
        c, exact = self.counters.sealed_below((scenario, item_id), imp.cut_ms)
        if not exact:
            result.counters["counters.cut_beyond_history"] += 1
        imp.counts = (c[0], c[1], c[3], imp.counts[3], imp.counts[4])
        imp.answered = True

    def _emit(self, user_id: str, request_id: str, req: PendingRequest, item_id: str, emission: int,
              emitted_ts_ms: int, result: BatchResult) -> None:
        """Sends a fake_negative emission now, or holds it until the impression's counters are answered (with
        the labels it has now: a purchase processed while it waits must not change it)."""
        self._send_emission(user_id, request_id, req, item_id, emission, emitted_ts_ms,
                            tuple(req.impressions[item_id].labels), result)  # type: ignore[arg-type]

    def _send_emission(self, user_id: str, request_id: str, req: PendingRequest, item_id: str, emission: int,
                       emitted_ts_ms: int, labels: tuple[bool, bool, bool], result: BatchResult) -> None:
        imp = req.impressions[item_id]
        if not imp.answered:
            imp.held.append((emission, emitted_ts_ms, labels))
            return
        result.samples.append(emission_message(user_id, request_id, req, item_id, emission, emitted_ts_ms, labels))
        result.counters["emissions.impression" if emission == features_pb2.EMISSION_IMPRESSION
                        else "emissions.positive"] += 1

    def _emit_closed(self, user_id: str, request_id: str, req: PendingRequest, watermark: int,
                     result: BatchResult) -> None:
        result.samples.extend(sample_messages(user_id, request_id, req, self.policy, watermark))
        result.counters["samples"] += len(req.impressions)

    def _release(self, user_id: str, request_id: str, item_id: str, result: BatchResult) -> None:
        """Answers a waiting impression (the frontier reached its cut) and sends what waited for it."""
        key = (user_id, request_id)
        req = self.closed.get(key)
        if req is not None:
            self.closed_dirty.add(key)
        else:
            user = self._user(user_id)
            req = user.pending.get(request_id)
            if req is None:
                return
            result.touched[user_id] = user
        imp = req.impressions[item_id]
        self._answer(imp, req.scenario, item_id, result)
        held, imp.held = imp.held, []
        for emission, emitted_ts_ms, labels in held:
            self._send_emission(user_id, request_id, req, item_id, emission, emitted_ts_ms, labels, result)
        if req.closed_at >= 0 and req.all_answered():
            del self.closed[key]
            self._emit_closed(user_id, request_id, req, req.closed_at, result)
