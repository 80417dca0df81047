"""The events consumer of the worker: batches from Kafka, folded into RocksDB, outputs sent, offsets committed.

Faust's per-event stream path costs ~75 us per event here (docs/design.md), more than the whole budget at
10k events/s, so the hot topic is read by this Faust service with its own aiokafka consumer in batches.
Order per batch: process in memory -> send outputs and wait for the broker's acks -> write state and
offsets in one RocksDB batch -> write the batch's changelog records (stream/changelog.py) -> send its counter
exchange records -> commit offsets to Kafka. A partition gained from another worker is restored from the
changelog before any batch runs (`position`). A kill -9 anywhere in between loses nothing:
on restart the consumer is positioned from the offsets in RocksDB, not from Kafka's commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError, KafkaError
from mode import Service

from streamrank import kafka_security
from streamrank.config import Settings
from streamrank.observability import ProgressLog
from streamrank.stream.changelog import ImageBuilder, new_writer_id
from streamrank.stream.encode import decode_exchange, exchange_message
from streamrank.stream.kafka_io import high_watermarks, read_to_high_watermark, send_keyed, send_to
from streamrank.stream.processor import (
    BatchProcessor,
    BatchResult,
    ConsumedRecord,
    DeadLetter,
    ExchangeRecord,
)

log = logging.getLogger(__name__)


class _Positioner(ConsumerRebalanceListener):
    """On assignment, moves each partition to just after the last offset folded into RocksDB."""

    def __init__(self, service: EventsService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.service.revoke({tp.partition for tp in revoked})
        log.info("events partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service.position(list(assigned))


class EventsService(Service):
    """Consumes the events topic in batches for one worker process."""

    def __init__(self, settings: Settings, processor: BatchProcessor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.processor = processor
        self.topic = settings.topic("events")
        self.consumer: AIOKafkaConsumer | None = None
        self.exchange: AIOKafkaConsumer | None = None  # the counter exchange topic, every partition, no group
        self.producer: AIOKafkaProducer | None = None
        # The state changelog (stream/changelog.py): written after each commit, read when a partition is gained.
        self.changelog: AIOKafkaConsumer | None = None
        self.changelog_topic = settings.topic("changelog")
        # What the last restores read and took (status file, benchmarks).
        self.restores: deque[dict[str, Any]] = deque(maxlen=64)
        # Held while a batch is handled and while a gained partition is restored: they change the same state.
        self.state_lock = asyncio.Lock()
        # This process's writer id, on its changelog values and exchange records: a worker skips its own exchange
        # records when it reads the topic back, and applies every other writer's, also of partitions it owns now.
        self.writer_id = new_writer_id()
        self._writer_header = ("w", str(self.writer_id).encode())
        # Partitions rebuilt from scratch: outputs for offsets below the group's commit were sent already.
        self.silent_until: dict[int, int] = {}
        self.counters: Counter[str] = Counter()
        self.dead_by_reason: Counter[str] = Counter()  # dead letters per reason (the DLQ's x-reason)
        self.batch_seconds = 0.0  # wall time spent handling batches (with `batches`: the mean latency)
        self.lag: dict[int, int] = {}  # partition -> records behind its high watermark, after the last batch
        self.first_record_at = 0.0  # when the first batch arrived (wall clock)
        self.last_batch_at = 0.0  # when the last batch became durable
        self.idle = asyncio.Event()
        self.last_record_at: dict[int, float] = {}  # partition -> monotonic time of its last record (or assignment)
        self._idle_checked_at = 0.0
        self.progress = ProgressLog(log, settings.progress_every_s)
        self.closing = False  # set by on_stop: no batch starts after it

    async def on_start(self) -> None:
        s = self.settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers, linger_ms=10, max_batch_size=512 * 1024, acks=1,
            max_request_size=4 * 1024 * 1024, client_id=f"{s.worker_id}-out", **kafka_security.aiokafka(s),
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=f"{s.worker_id}.events",
            client_id=s.worker_id, enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=10_000, heartbeat_interval_ms=2_000, max_poll_interval_ms=300_000,
            fetch_max_bytes=16 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024,
            **kafka_security.aiokafka(s),
        )
        await self.consumer.start()
        if s.changelog:
            await self._open_changelog()
        # Every partition of the events topic holds the counters' frontier, whichever worker owns it; the
        # other workers' sealed counter buckets come in on the exchange topic (docs/design.md).
        self.processor.all_partitions = set(await self.producer.partitions_for(self.topic))
        self.processor.counters.partitions = set(self.processor.all_partitions)
        self.exchange = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id=f"{s.worker_id}-counters", **kafka_security.aiokafka(s),
        )
        await self.exchange.start()
        topic = s.topic("counters")
        parts = [TopicPartition(topic, p) for p in sorted(await self.producer.partitions_for(topic))]
        self.exchange.assign(parts)
        for tp in parts:
            last = self.processor.offsets.get((tp.topic, tp.partition))
            if last is None:
                await self.exchange.seek_to_beginning(tp)
            else:
                self.exchange.seek(tp, last + 1)
        self.consumer.subscribe([self.topic], listener=_Positioner(self))  # assignments need the exchange reader

    async def _open_changelog(self) -> None:
        """Starts the changelog reader and this process's writer id; without a changelog partition per events
        partition the worker runs without one (hand-offs then replay the events topic)."""
        assert self.producer is not None
        s = self.settings
        events = await self.producer.partitions_for(self.topic)
        changelog = await self.producer.partitions_for(self.changelog_topic)
        if not events <= changelog:
            log.error("topic %s has partitions %s, not one per events partition %s: running without a changelog",
                      self.changelog_topic, sorted(changelog), sorted(events))
            return
        self.changelog = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id=f"{s.worker_id}-changelog",
            fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
            **kafka_security.aiokafka(s),
        )
        await self.changelog.start()
        self.processor.changelog_writer = self.writer_id

    async def on_stop(self) -> None:
        # Let the batch in flight become durable (the loop exits after it, and starts no other) before closing
        # the clients.
        self.closing = True
        try:
            async with asyncio.timeout(60):
                await self.state_lock.acquire()
        except TimeoutError:
            log.warning("a batch was still in flight at shutdown; it will be replayed on restart")
        if self.consumer is not None:
            await self.consumer.stop()
        if self.exchange is not None:
            await self.exchange.stop()
        if self.changelog is not None:
            await self.changelog.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def revoke(self, partitions: set[int]) -> None:
        """The batch in flight finishes (and writes its changelog) before the group moves its partitions; the
        processor then forgets their work. At shutdown on_stop holds the lock (the last batch is done)."""
        if self.closing or not partitions:
            return
        try:
            async with asyncio.timeout(30):
                await self.state_lock.acquire()
        except TimeoutError:
            log.warning("a batch was still in flight when partitions %s were revoked", sorted(partitions))
            return
        try:
            self.processor.revoke(partitions)
        finally:
            self.state_lock.release()

    async def position(self, assigned: list[TopicPartition]) -> None:
        """Restores gained partitions from the changelog, seeks assigned partitions to the durable offsets, and
        marks those that must be rebuilt silently from the events topic (no changelog, or it is behind)."""
        assert self.consumer is not None
        async with self.state_lock:
            restored = set()
            if self.changelog is not None:
                await self._pull_exchange(to_end=True)
                restored = {p for p in await self._changed_elsewhere([tp.partition for tp in assigned])
                            if await self._restore(p)}
            self.processor.assign({tp.partition for tp in self.consumer.assignment()}, restored)
        stored = self.processor.offsets
        now = time.monotonic()
        for tp in assigned:
            self.last_record_at[tp.partition] = now
        for tp in assigned:
            last = stored.get((tp.topic, tp.partition))
            committed = await self.consumer.committed(tp)
            if last is not None:
                self.consumer.seek(tp, last + 1)
                start = last + 1
            else:
                await self.consumer.seek_to_beginning(tp)
                start = 0
            if committed is not None and committed > start:
                # Another worker owned this partition: rebuild its state without re-emitting outputs.
                self.silent_until[tp.partition] = committed
                log.warning("partition %s: rebuilding state from offset %s silently up to %s",
                            tp.partition, start, committed)
        log.info("events partitions assigned: %s", sorted(tp.partition for tp in assigned))

    async def _changed_elsewhere(self, partitions: list[int]) -> list[int]:
        """The partitions whose changelog holds records after the last this worker wrote or read (another
        owner's since): one round of fetches over all of them."""
        changelog = self.changelog
        assert changelog is not None
        if not partitions:
            return []
        tps = [TopicPartition(self.changelog_topic, p) for p in partitions]
        changelog.assign(tps)
        mine = {tp: self.processor.offsets.get((tp.topic, tp.partition), -1) for tp in tps}
        for tp in tps:
            changelog.seek(tp, mine[tp] + 1)
        highs = await high_watermarks(changelog, tps, lambda m: None)
        return [tp.partition for tp in tps if highs[tp] > mine[tp] + 1]

    async def _restore(self, partition: int) -> bool:
        """Reads a partition's changelog (one that holds another owner's records) and takes its image
        (processor.adopt)."""
        changelog = self.changelog
        assert changelog is not None
        started = time.monotonic()
        ctp = TopicPartition(self.changelog_topic, partition)
        position = (ctp.topic, partition)
        changelog.assign([ctp])
        await changelog.seek_to_beginning(ctp)
        builder = ImageBuilder(partition)
        await read_to_high_watermark(changelog, ctp, lambda m: builder.add(m.key, m.value))
        end = await changelog.position(ctp)
        image = builder.finish()
        # Records after this worker's own: the partition had another owner since, whose state is the newer even
        # at an equal events offset (answers and closed windows change it without a record).
        local = self.processor.offsets.get((self.topic, partition), -1)
        taken = image.offset >= 0
        if taken:
            self.processor.adopt(image, position, end - 1)
            self.silent_until.pop(partition, None)
        else:
            self.processor.offsets[position] = end - 1
        seconds = time.monotonic() - started
        self.restores.append({"partition": partition, "records": image.records, "ignored": image.ignored,
                              "users": len(image.users), "offset": image.offset, "local_offset": local,
                              "taken": taken, "seconds": round(seconds, 3)})
        self.counters["changelog_restores"] += taken
        log.info("partition %s: changelog read (%s records, %s ignored, %s users, offset %s, newest named %s) in "
                 "%.2f s; %s", partition, image.records, image.ignored, len(image.users), image.offset,
                 image.newest_meta, seconds,
                 "restored from it" if taken else "no complete batch in it")
        return taken

    @Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        s = self.settings
        while not self.should_stop and not self.closing:
            try:
                records = await self._collect(s.batch_size, s.batch_within_s)
                await self._pull_exchange()
            except ConsumerStoppedError:
                if self.closing:
                    break  # on_stop closed the clients while this waited for records
                raise
            self.progress.maybe(self._progress_counters(), self._progress_line)
            await self._update_idle_partitions()
            async with self.state_lock:
                if self.closing:
                    break
                if records:
                    self.idle.clear()
                    await self.handle(records)
                    continue
                self.idle.set()
                if self.processor.gained or self.processor.frontier_target() > self.processor.counters.frontier:
                    await self.tick()

    async def _update_idle_partitions(self) -> None:
        """Marks the partitions caught up to their end and without records for counter_idle_ms (wall time).

        They leave the minimum that moves the item counters' frontier, so one quiet partition does not hold
        every impression back. The end offsets are asked at most once a second, only for quiet partitions.
        """
        assert self.consumer is not None
        now = time.monotonic()
        idle_s = self.settings.counter_idle_ms / 1000
        quiet = [tp for tp in self.consumer.assignment()
                 if now - self.last_record_at.get(tp.partition, now) >= idle_s]
        if not quiet:
            self.processor.idle = set()
            return
        if now - self._idle_checked_at < min(1.0, idle_s):
            return
        self._idle_checked_at = now
        # The high watermarks of the last fetches: ListOffsets under-reports on the embedded broker (STACK.md),
        # which made a partition with records left look caught up.
        offsets = self.processor.offsets
        highs = {tp: self.consumer.highwater(tp) for tp in quiet}
        self.processor.idle = {
            tp.partition for tp in quiet
            if highs[tp] is not None and offsets.get((tp.topic, tp.partition), -1) + 1 >= highs[tp]
        }

    async def _pull_exchange(self, to_end: bool = False) -> None:
        """Applies the exchange records that came in (other workers' sealed counter buckets); they become
        durable, with their offsets, at the next commit. A malformed record is logged and skipped. `to_end`:
        every record up to the topic's current end (before a restore from the changelog: the buckets a
        partition's image says were sealed were sent before it)."""
        if self.exchange is None:
            return
        self._apply_exchange(await self.exchange.getmany(timeout_ms=0, max_records=100_000))
        if not to_end:
            return
        parts = list(self.exchange.assignment())
        messages: list[Any] = []
        highs = await high_watermarks(self.exchange, parts, messages.append)
        self._apply_exchange({tp: [m for m in messages if m.partition == tp.partition] for tp in parts})
        for tp in parts:
            if await self.exchange.position(tp) < highs[tp]:
                rest: list[Any] = []
                await read_to_high_watermark(self.exchange, tp, rest.append)
                self._apply_exchange({tp: rest})

    def _apply_exchange(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        offsets = self.processor.offsets
        records: list[ExchangeRecord] = []
        for tp, messages in fetched.items():
            for m in messages:
                last = offsets.get((tp.topic, tp.partition))
                if last is not None and m.offset <= last:
                    continue
                offsets[(tp.topic, tp.partition)] = m.offset
                if self._writer_header in (m.headers or ()):
                    continue  # this process's own record: nothing to decode or apply
                try:
                    records.append(ExchangeRecord(*decode_exchange(m.value or b"")))
                except ValueError as exc:
                    log.warning("counter exchange %s@%s skipped: %s", tp, m.offset, exc)
                    self.counters["exchange_malformed"] += 1
        if records:
            self.processor.apply_exchange(records)
            self.counters["exchange_records"] += len(records)

    async def tick(self) -> BatchResult:
        """Moves the counters' frontier without records (partitions went idle): answers, sends, commits."""
        self._note_replaying()
        result = self.processor.tick()
        await self._send(result)
        self.processor.commit(result)
        self._count(result, 0, batch=False)  # with the durable offsets the status file shows
        await self._write_changelog(result)
        await self._send_exchange(result)
        return result

    def _note_replaying(self) -> None:
        """Tells the processor which own partitions are still being replayed up to the committed offset."""
        offsets = self.processor.offsets
        self.processor.replaying = {
            p for p, end in self.silent_until.items()
            if offsets.get((self.topic, p), -1) + 1 < end and p in (self.processor.assigned or ())}

    async def _collect(self, max_records: int, within_s: float) -> list[ConsumedRecord]:
        """Gathers up to max_records records, waiting at most within_s once the first has arrived."""
        assert self.consumer is not None
        out: list[ConsumedRecord] = []
        deadline: float | None = None
        while len(out) < max_records:
            timeout = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                fetched = await self.consumer.getmany(timeout_ms=int(timeout * 1000),
                                                      max_records=max_records - len(out))
            except IllegalStateError:  # no assignment yet (group join in progress)
                await asyncio.sleep(0.2)
                return out
            now = time.monotonic()
            for tp, messages in fetched.items():
                out.extend(messages)
                if messages:
                    self.last_record_at[tp.partition] = now
            if not out:
                return out
            if not self.first_record_at:
                self.first_record_at = time.time()
            if deadline is None:
                deadline = time.monotonic() + within_s
            if time.monotonic() >= deadline:
                break
        return out

    async def handle(self, records: list[ConsumedRecord]) -> BatchResult:
        """Processes one batch end to end (see the module docstring for the order)."""
        started = time.monotonic()
        own = self.processor.assigned
        if own is not None and any(r.partition not in own for r in records):
            records = [r for r in records if r.partition in own]  # fetched before a revoke: the new owner's
        silent = [r for r in records if r.offset < self.silent_until.get(r.partition, -1)]
        if silent:
            # Outputs of the rebuilt range went out from the previous owner; the batch below moves the
            # frontier and sends what it releases, for every partition (processor.process, `rebuild`).
            muted = self.processor.process(silent, rebuild=True)
            self.processor.commit(muted)
            await self._write_changelog(muted)
            records = [r for r in records if r.offset >= self.silent_until.get(r.partition, -1)]
        self._note_replaying()
        result = self.processor.process(records)
        await self._send(result)
        self.processor.commit(result)
        self._count(result, len(records) + len(silent))  # with the durable offsets the status file shows
        await self._write_changelog(result)
        await self._send_exchange(result)
        await self._commit_kafka()
        self.batch_seconds += time.monotonic() - started
        self._measure_lag()
        return result

    def _measure_lag(self) -> None:
        """Records behind each assigned partition's high watermark (known from the last fetch: no request)."""
        if self.consumer is None:
            return
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            done = self.processor.offsets.get((tp.topic, tp.partition))
            if high is not None:
                self.lag[tp.partition] = max(0, high - (done + 1 if done is not None else 0))

    async def _send(self, result: BatchResult) -> None:
        """Sends a batch's outputs (not its exchange records: `_send_exchange`) and waits for them."""
        assert self.producer is not None
        s = self.settings
        futures = []
        for topic, messages in (
            (s.topic("samples"), result.samples),
            (s.topic("user-features"), result.snapshots),
            (s.topic("cooc"), result.cooc),
            (s.topic("item-stats"), result.item_stats),
        ):
            if messages:
                futures.extend(await send_keyed(self.producer, topic, messages))
        futures.extend([await self._dead_letter(d) for d in result.dead])
        if futures:
            await asyncio.gather(*futures)

    async def _send_exchange(self, result: BatchResult) -> None:
        """Sends the batch's counter exchange records once its outputs, state and changelog are durable: a
        record announces the frontier its sender answered up to, which a partition's next owner relies on
        (the image it restores holds those answers), and the `P` record of the changelog keeps the sealed
        buckets in case this send never happens (processor.adopt sends them again)."""
        if result.exchange:
            assert self.producer is not None
            records = [exchange_message(r.partition, r.sealed_to, r.idle, r.buckets, r.watermark, r.frontier)
                       for r in result.exchange]
            await asyncio.gather(*await send_keyed(self.producer, self.settings.topic("counters"), records,
                                                         [self._writer_header]))

    async def _write_changelog(self, result: BatchResult) -> None:
        """Writes a committed batch's changelog records and waits for them (before the offsets go to Kafka's
        group); notes the last offset written per partition, so a restore knows what it wrote itself."""
        if not result.changelog:
            return
        assert self.producer is not None
        sent: list[tuple[int, asyncio.Future[Any], int]] = []
        for partition, messages in result.changelog.items():
            sent.extend((partition, future, n) for future, n in await send_to(self.producer, self.changelog_topic,
                                                                                      partition, messages))
        metas = await asyncio.gather(*(future for _, future, _ in sent))
        offsets = self.processor.offsets
        for (partition, _, n), meta in zip(sent, metas, strict=True):
            key = (self.changelog_topic, partition)
            offsets[key] = max(offsets.get(key, -1), meta.offset + n - 1)
        self.counters["changelog_records"] += sum(n for _, _, n in sent)

    async def _dead_letter(self, dead: DeadLetter) -> asyncio.Future[Any]:
        assert self.producer is not None
        rec = dead.record
        headers = [
            ("x-reason", dead.reason.encode()),
            ("x-detail", dead.detail.encode()[:1000]),
            ("x-source-topic", rec.topic.encode()),
            ("x-source-partition", str(rec.partition).encode()),
            ("x-source-offset", str(rec.offset).encode()),
        ]
        value = rec.value if rec.value is not None else b""
        if len(value) > 1024 * 1024:  # keep the DLQ sendable; the headers still say what it was
            value = value[: 1024 * 1024]
        return await self.producer.send(self.settings.topic("events.dlq"), value=value, key=rec.key,
                                        headers=headers)

    async def _commit_kafka(self) -> None:
        assert self.consumer is not None
        offsets = {
            TopicPartition(topic, part): off + 1
            for (topic, part), off in self.processor.offsets.items()
            if topic == self.topic and TopicPartition(topic, part) in self.consumer.assignment()
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: positions come from RocksDB; Kafka's commit only tells a new owner where we were.
            log.warning("offset commit to Kafka failed (%s); state is durable in RocksDB", exc)

    def _progress_counters(self) -> dict[str, float]:
        c = self.counters
        return {k: float(c[k]) for k in ("records", "samples", "dead_letters", "batches")} | {
            "batch_seconds": self.batch_seconds}

    def _progress_line(self, counters: Mapping[str, float], rates: Mapping[str, float]) -> str:
        """The steady progress line: records and samples with their rates, dead letters, lag, batch latency."""
        batch_ms = 1000 * rates["batch_seconds"] / rates["batches"] if rates["batches"] else 0.0
        return (f"worker {self.settings.worker_id}: {int(counters['records']):,} records ({rates['records']:,.0f}/s), "
                f"{int(counters['samples']):,} samples ({rates['samples']:,.0f}/s), "
                f"{int(counters['dead_letters']):,} dead letters, lag {sum(self.lag.values()):,}, "
                f"mean batch {batch_ms:.0f} ms")

    def _count(self, result: BatchResult, n: int, batch: bool = True) -> None:
        c = self.counters
        c["records"] += n
        c["processed"] += result.processed
        c["duplicates"] += result.duplicates
        c["replayed"] += result.replayed
        c["dead_letters"] += len(result.dead)
        self.dead_by_reason.update(d.reason for d in result.dead)
        c["batches"] += batch
        c.update(result.counters)
        self.last_batch_at = time.time()
