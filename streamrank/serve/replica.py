"""The scorer's local replica of what the stream worker publishes: user features, the catalog, item stats.

A background thread reads the compacted `user-features`, `items` and `item-stats` topics (all partitions,
no consumer group: every scorer replica needs everything) into RocksDB, and stores the next offset of each
partition in the same WriteBatch as the records. A restarted scorer therefore opens its replica, serves at
once from what it had, and resumes reading where it stopped. A null value (a compaction tombstone) deletes.

Reads go to RocksDB directly (microseconds each); decoded catalog entries are cached in a bounded dict
that the reader thread invalidates when an item changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from streamrank import kafka_security
from streamrank.config import Settings
from streamrank.features.raw import Behaviors, ItemAttrs
from streamrank.v1 import events_pb2, features_pb2

log = logging.getLogger(__name__)

# Key prefixes inside the one RocksDB instance.
_USER, _ITEM, _STAT, _OFFSET = b"u\x00", b"i\x00", b"s\x00", b"o\x00"
REPLICATED = {"user-features": _USER, "items": _ITEM, "item-stats": _STAT}
_ITEM_CACHE_MAX = 200_000


@dataclass
class UserView:
    """What the scorer knows about a user: the behaviour sequence and the click counters."""

    behaviors: Behaviors
    item_clicks: dict[str, int]
    category_clicks: dict[str, int]
    updated_ms: int


@dataclass
class ReplicaStatus:
    """Progress of the replica: per-topic lag in records, and whether it ever caught up."""

    lag_records: dict[str, int]
    caught_up: bool
    records_applied: int
    newest_update_ms: int


def _stats_key(scenario: str, item_id: str) -> bytes:
    return f"{scenario}\x1f{item_id}".encode()


def _offset_key(topic: str, partition: int) -> bytes:
    return _OFFSET + f"{topic}:{partition}".encode()


class FeatureReplica:
    """A RocksDB replica of the user-features, items and item-stats topics, kept current by a thread."""

    def __init__(self, settings: Settings, path: str | Path) -> None:
        self.settings = settings
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(self.path), Options(raw_mode=True))
        self.topics = {settings.topic(name): prefix for name, prefix in REPLICATED.items()}
        self._items: dict[str, ItemAttrs] = {}
        self._stats: dict[tuple[str, str], tuple[int, int, int]] = {}
        # Decoded-value caches are invalidated by the writer: it bumps the generation before writing (so a
        # read racing the write is not cached) and drops the changed keys after.
        self._cache_lock = threading.Lock()
        self._generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lag: dict[str, int] = {}
        self._caught_up = threading.Event()
        self.records_applied = 0
        self.newest_update_ms = 0
        self.error: BaseException | None = None

    # ------------------------------------------------------------------------------------- reading
    def user(self, user_id: str) -> UserView | None:
        """The user's stored features, or None for a user the worker has not seen (cold start)."""
        raw = self.db.get(_USER + user_id.encode())
        if raw is None:
            return None
        msg = features_pb2.UserFeatures.FromString(raw)
        return UserView(Behaviors.from_proto(msg.behaviors), dict(msg.item_clicks), dict(msg.category_clicks),
                        msg.updated_ms)

    def item(self, item_id: str) -> ItemAttrs | None:
        """The catalog's attributes of an item, or None when the catalog does not have it."""
        cached = self._items.get(item_id)
        if cached is not None:
            return cached
        generation = self._generation
        raw = self.db.get(_ITEM + item_id.encode())
        if raw is None:
            return None
        msg = events_pb2.Item.FromString(raw)
        attrs = ItemAttrs(category=msg.category, brand=msg.brand,
                          price=msg.price if msg.HasField("price") else None, tags=list(msg.tags))
        self._remember(self._items, item_id, attrs, generation)
        return attrs

    def item_counts(self, scenario: str, item_id: str) -> tuple[int, int, int]:
        """(impressions, clicks, purchases) of an item in a scenario below the workers' newest frontier."""
        key = (scenario, item_id)
        cached = self._stats.get(key)
        if cached is not None:
            return cached
        generation = self._generation
        raw = self.db.get(_STAT + _stats_key(scenario, item_id))
        counts = (0, 0, 0)
        if raw is not None:
            msg = features_pb2.ItemStats.FromString(raw)
            counts = (msg.impressions, msg.clicks, msg.purchases)
        self._remember(self._stats, key, counts, generation)
        return counts

    def _remember(self, cache: dict, key: object, value: object, generation: int) -> None:
        """Caches a decoded value unless a write began since it was read (it could be stale then)."""
        with self._cache_lock:
            if self._generation != generation:
                return
            if len(cache) >= _ITEM_CACHE_MAX:
                cache.clear()
            cache[key] = value

    def catalog(self) -> Iterable[tuple[str, events_pb2.Item]]:
        """Every catalog entry (item id, message), for building a retrieval index."""
        for key, value in self.db.items(from_key=_ITEM):
            if not key.startswith(_ITEM):
                break
            yield key[len(_ITEM):].decode(), events_pb2.Item.FromString(value)

    def status(self) -> ReplicaStatus:
        """Lag and progress (for metrics and health)."""
        return ReplicaStatus(dict(self._lag), self._caught_up.is_set(), self.records_applied,
                             self.newest_update_ms)

    # ------------------------------------------------------------------------------------- writing
    def _offsets(self) -> dict[tuple[str, int], int]:
        out = {}
        for key, value in self.db.items(from_key=_OFFSET):
            if not key.startswith(_OFFSET):
                break
            topic, part = key[len(_OFFSET):].decode().rsplit(":", 1)
            out[(topic, int(part))] = int(value)
        return out

    def apply(self, records: Iterable[tuple[str, int, int, bytes | None, bytes | None]]) -> int:
        """Writes (topic, partition, offset, key, value) records and their offsets atomically; returns count."""
        batch = WriteBatch(raw_mode=True)
        offsets: dict[tuple[str, int], int] = {}
        changed_items: list[str] = []
        changed_stats: list[tuple[str, str]] = []
        newest_stats: dict[bytes, int] = {}  # updated_ms of the stats written in this batch
        applied = 0
        for topic, partition, offset, key, value in records:
            offsets[(topic, partition)] = offset + 1
            prefix = self.topics.get(topic)
            if prefix is None or not key:
                continue
            if prefix is _ITEM:
                changed_items.append(key.decode(errors="replace"))
            elif prefix is _STAT:
                stat = self._newer_stats(key, value, newest_stats)
                if stat is None:
                    continue
                key, value = stat
                scenario, _, item_id = key.decode(errors="replace").partition("\x1f")
                changed_stats.append((scenario, item_id))
            if value is None:
                batch.delete(prefix + key)
            else:
                batch.put(prefix + key, value)
                if prefix is _USER:
                    self.newest_update_ms = max(self.newest_update_ms,
                                                features_pb2.UserFeatures.FromString(value).updated_ms)
            applied += 1
        for (topic, partition), nxt in offsets.items():
            batch.put(_offset_key(topic, partition), str(nxt).encode())
        with self._cache_lock:
            self._generation += 1
        self.db.write(batch)
        with self._cache_lock:
            for item_id in changed_items:
                self._items.pop(item_id, None)
            for stat_key in changed_stats:
                self._stats.pop(stat_key, None)
            self._generation += 1
        self.records_applied += applied
        return applied

    def _newer_stats(self, key: bytes, value: bytes | None,
                     newest: dict[bytes, int]) -> tuple[bytes, bytes | None] | None:
        """The (scenario, item) key and value to write for an item-stats record, or None to skip it: a
        worker that owned the key before a rebalance may send counts as of an older frontier after its new
        owner did, so the record with the newest `updated_ms` wins. A tombstone deletes."""
        if value is None:
            return b"\x1f".join(key.split(b"\x1f")[:2]), None
        msg = features_pb2.ItemStats.FromString(value)
        stats_key = _stats_key(msg.scenario, msg.item_id)
        have = newest.get(stats_key)
        if have is None:
            stored = self.db.get(_STAT + stats_key)
            have = -1 if stored is None else features_pb2.ItemStats.FromString(stored).updated_ms
        if msg.updated_ms < have:
            return None
        newest[stats_key] = msg.updated_ms
        return stats_key, value

    def start(self) -> None:
        """Starts the background reader (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="feature-replica", daemon=True)
            self._thread.start()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Blocks until the reader has reached the end of every partition once (or the timeout)."""
        return self._caught_up.wait(timeout_s)

    def _run(self) -> None:
        try:
            self._consume()
        except Exception as exc:  # keep serving from what we have; health reports the failure
            self.error = exc
            log.exception("feature replica stopped")

    def _consume(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False,
                                 **kafka_security.kafka_python(self.settings),
                                 group_id=None, fetch_max_wait_ms=100, max_poll_records=5_000)
        try:
            tps = []
            for topic in self.topics:
                parts = None
                deadline = time.monotonic() + 30
                while not parts and time.monotonic() < deadline and not self._stop.is_set():
                    parts = consumer.partitions_for_topic(topic)
                    if not parts:
                        time.sleep(0.2)
                tps += [TopicPartition(topic, p) for p in sorted(parts or ())]
            consumer.assign(tps)
            stored = self._offsets()
            for tp in tps:
                if (tp.topic, tp.partition) in stored:
                    consumer.seek(tp, stored[(tp.topic, tp.partition)])
                else:
                    consumer.seek_to_beginning(tp)
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=200)
                records = [(r.topic, r.partition, r.offset, r.key, r.value)
                           for batch in polled.values() for r in batch]
                if records:
                    self.apply(records)
                self._update_lag(consumer, tps)
        finally:
            consumer.close()

    def _update_lag(self, consumer: object, tps: list) -> None:
        lag: dict[str, int] = dict.fromkeys(self.topics, 0)
        known = True
        for tp in tps:
            high = consumer.highwater(tp)  # type: ignore[attr-defined]
            if high is None:
                known = False
                continue
            lag[tp.topic] += max(0, high - consumer.position(tp))  # type: ignore[attr-defined]
        self._lag = lag
        if known and not any(lag.values()):
            self._caught_up.set()

    def close(self) -> None:
        """Stops the reader and closes the database."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.db.close()
