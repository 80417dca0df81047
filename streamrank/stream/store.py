"""The worker's durable state in RocksDB (rocksdict), written one atomic batch at a time.

Each commit writes the changed users, aggregates and catalog entries together with the offsets of the
records they fold in, in one WriteBatch: after a kill -9 the state and the offsets agree, so restarting
from the stored offsets neither loses nor double-counts an event.

Keys are a one-byte kind prefix followed by the id: u user, p user with open impressions, c co-occurrence
of an item, g scenario totals, n (scenario, item) totals, b recent buckets, k (scenario, item)
counters below the frontier and per effective-time bucket (packed integers), h / H a folded bucket of the
counters' history (rows / keys), j / J a partition's open counter buckets, x the exchange records of a
partition's last seal, q (user, request) closed
while an impression waits for its counters, i catalog item, o offset,
w partition watermark, m metadata. The other values are pickles (internal format, written and read only by
the worker; readers outside it use the compacted topics), read by an unpickler that resolves only the state
classes (stream/statecodec.py), so bytes on disk cannot run code. The format is versioned: state written by an
older layout is refused with a one-line error, not misread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Options, Rdict, WriteBatch

from streamrank.stream.aggregates import CoocCounts, ScenarioStats
from streamrank.stream.counters import SealedCounters
from streamrank.stream.statecodec import (
    dump_state,
    load_state,
    pack_ints,
    pack_keys,
    pair_key,
    split_pair_key,
    unpack_ints,
    unpack_keys,
)
from streamrank.stream.userstate import PendingRequest, UserState
from streamrank.v1 import events_pb2

SEP = b"\x00"
# The layout of the values; 2: impressions carry a counter cut and may wait for it (stream/counters.py);
# 3: counter contributions are kept per source partition until sealed (j/J), with each partition's floor;
# 4: j also keeps another worker's partition's watermark (the frontier when every partition is idle), and
# the counters keep a history of folded buckets (h/H).
STATE_FORMAT = 4


class StateFormatError(ValueError):
    """The stored state was written in another layout than this code reads."""


_LOAD = load_state


class StateStore:
    """Typed access to the worker's RocksDB database."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        opts = Options(raw_mode=True)
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"no worker state at {self.path}")
            # A read-only handle works beside a running worker (it sees the state as of opening).
            self.db = Rdict(str(self.path), opts, access_type=AccessType.read_only())
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            opts.create_if_missing(True)
            self.db = Rdict(str(self.path), opts)
        self._check_format(read_only)
        self.catalog_cache: dict[str, events_pb2.Item] = {}
        for key, raw in self._scan(b"i"):
            item = events_pb2.Item()
            item.ParseFromString(raw)
            self.catalog_cache[key.decode()] = item

    def _check_format(self, read_only: bool) -> None:
        """Refuses state of another layout; stamps a new database with this one."""
        raw = self.db.get(b"mformat")
        if raw is None:
            has_state = any(True for _ in self._scan(b"o"))
            if has_state:
                raise StateFormatError(
                    f"worker state at {self.path} was written by an older streamrank (format 1, this one reads "
                    f"{STATE_FORMAT}); move it aside and start the worker again to rebuild it from the events topic")
            if not read_only:
                self.db.put(b"mformat", str(STATE_FORMAT).encode())
        elif int(raw) != STATE_FORMAT:
            raise StateFormatError(f"worker state at {self.path} has format {int(raw)}, this streamrank reads "
                                   f"{STATE_FORMAT}; move it aside and start the worker again to rebuild it")

    def close(self) -> None:
        """Flushes and closes the database."""
        self.db.close()

    # -- reads --------------------------------------------------------------------------------------
    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            yield key[len(prefix):], it.value()
            it.next()

    def load_user(self, user_id: str) -> UserState | None:
        """A user's state, or None for a user never seen."""
        raw = self.db.get(b"u" + user_id.encode())
        return None if raw is None else _LOAD(raw)

    def load_pending_users(self) -> list[UserState]:
        """Every user with impressions still waiting for their attribution window to close."""
        users = []
        for key, _ in self._scan(b"p"):
            user = self.load_user(key.decode())
            if user is not None and user.pending:
                users.append(user)
        return users

    def load_closed_requests(self) -> list[tuple[tuple[str, str], PendingRequest]]:
        """Requests whose window closed while an impression waited for its item counters."""
        out = []
        for key, raw in self._scan(b"q"):
            user_id, request_id = key.split(SEP, 1)
            out.append(((user_id.decode(), request_id.decode()), _LOAD(raw)))
        return out

    def iter_users(self) -> Iterator[UserState]:
        """Every stored user (for inspection and tests)."""
        for _, raw in self._scan(b"u"):
            yield _LOAD(raw)

    def load_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> last offset folded into the state."""
        out = {}
        for key, raw in self._scan(b"o"):
            topic, part = key.rsplit(SEP, 1)
            out[(topic.decode(), int(part))] = int(raw)
        return out

    def load_watermarks(self) -> dict[int, int]:
        """Events partition -> newest event time seen in it."""
        return {int(k): int(v) for k, v in self._scan(b"w")}

    def load_batch_seq(self) -> int:
        """The sequence number of the last committed batch."""
        raw = self.db.get(b"mbatch")
        return 0 if raw is None else int(raw)

    def load_aggregates(self, cooc: CoocCounts, stats: ScenarioStats, counters: SealedCounters | None = None
                        ) -> None:
        """Fills the in-memory aggregates from disk (at start-up)."""
        for key, raw in self._scan(b"c"):
            cooc.counts[key.decode()] = _LOAD(raw)
        for key, raw in self._scan(b"g"):
            stats.scenario[key.decode()] = _LOAD(raw)
        for key, raw in self._scan(b"n"):
            stats.item[split_pair_key(key)] = _LOAD(raw)
        for key, raw in self._scan(b"b"):
            stats.buckets[split_pair_key(key)] = _LOAD(raw)
        raw = self.db.get(b"mstats")
        if raw is not None:
            stats.watermark, stats.low_watermark, stats.late = _LOAD(raw)
        if counters is not None:
            raw = self.db.get(b"mcounters")
            counters.restore(0 if raw is None else int(raw),
                             ((split_pair_key(key), unpack_ints(value)) for key, value in self._scan(b"k")))
            for key, value in self._scan(b"j"):
                counters.restore_open(int(key), unpack_ints(value), unpack_keys(self.db.get(b"J" + key) or b""))
            for key, value in self._scan(b"h"):
                counters.restore_history(int(key), unpack_keys(self.db.get(b"H" + key) or b""), unpack_ints(value))

    # -- the atomic commit --------------------------------------------------------------------------
    def commit(
        self,
        users: dict[str, UserState],
        cooc: CoocCounts,
        cooc_dirty: set[str],
        stats: ScenarioStats,
        counters: SealedCounters,
        closed: dict[tuple[str, str], PendingRequest | None],
        offsets: dict[tuple[str, int], int],
        watermarks: dict[int, int],
        batch_seq: int,
        sealed: dict[int, bytes] | None = None,
    ) -> dict[bytes, bytes]:
        """Writes one batch's changes and the offsets they cover, atomically. Returns the user and closed-request
        rows written (key -> value, b"" for a deleted one), for the changelog (stream/changelog.py)."""
        wb = WriteBatch(raw_mode=True)
        put = wb.put
        written: dict[bytes, bytes] = {}
        for user_id, user in users.items():
            uid = user_id.encode()
            value = written[b"u" + uid] = dump_state(user)
            put(b"u" + uid, value)
            if user.pending:
                put(b"p" + uid, b"")
            else:
                wb.delete(b"p" + uid)
        counts = cooc.counts
        for item_id in cooc_dirty:
            put(b"c" + item_id.encode(), dump_state(counts[item_id]))
        for scenario, item_id in stats.dirty:
            skey = pair_key(scenario, item_id)
            if item_id:
                put(b"n" + skey, dump_state(stats.item[(scenario, item_id)]))
            else:
                put(b"g" + scenario.encode(), dump_state(stats.scenario[scenario]))
            series = stats.buckets.get((scenario, item_id))
            if series:
                put(b"b" + skey, dump_state(series))
            else:
                wb.delete(b"b" + skey)
        stats.dirty = set()
        for key in counters.dirty:
            put(b"k" + pair_key(*key), pack_ints(counters.packed(key)))
        counters.dirty = set()
        for part in counters.open_dirty:
            pkey = str(part).encode()
            put(b"j" + pkey, pack_ints(counters.packed_open(part)))
            put(b"J" + pkey, pack_keys(counters.open_keys(part)))
        counters.open_dirty = set()
        for start in counters.history_dirty:
            keys, ints = counters.packed_history(start)
            hkey = str(start).encode()
            put(b"h" + hkey, pack_ints(ints))
            put(b"H" + hkey, pack_keys(keys))
        for start in counters.history_dropped:
            hkey = str(start).encode()
            wb.delete(b"h" + hkey)
            wb.delete(b"H" + hkey)
        counters.history_dirty = set()
        counters.history_dropped = set()
        for (user_id, request_id), req in closed.items():
            key = b"q" + user_id.encode() + SEP + request_id.encode()
            if req is None:
                wb.delete(key)
                written[key] = b""
            else:
                value = written[key] = dump_state(req)
                put(key, value)
        put(b"mcounters", str(counters.frontier).encode())
        put(b"mstats", dump_state((stats.watermark, stats.low_watermark, stats.late)))
        for (topic, part), offset in offsets.items():
            put(b"o" + topic.encode() + SEP + str(part).encode(), str(offset).encode())
        for part, mark in watermarks.items():
            put(b"w" + str(part).encode(), str(mark).encode())
        put(b"mbatch", str(batch_seq).encode())
        for part, records in (sealed or {}).items():
            put(b"x" + str(part).encode(), records)
        self.db.write(wb)
        return written

    def load_sealed_records(self) -> list[bytes]:
        """The exchange records (JSON lines) of the last batch that sealed each partition's counter buckets: they
        go out after the commit, so a restart sends them again (applying them twice changes nothing)."""
        return [raw for _, raw in self._scan(b"x")]

    def adopt_partition(self, users: dict[str, bytes], closed: dict[tuple[str, str], bytes], pending: set[str],
                        open_row: tuple[int, list[int], list[tuple[str, str]]],
                        offsets: dict[tuple[str, int], int], watermark: tuple[int, int]) -> None:
        """Writes a partition's image restored from the changelog (users as stored values, closed requests with
        b"" for deleted ones, its open counter buckets and offsets), atomically."""
        wb = WriteBatch(raw_mode=True)
        for user_id, value in users.items():
            uid = user_id.encode()
            wb.put(b"u" + uid, value)
            if user_id in pending:
                wb.put(b"p" + uid, b"")
            else:
                wb.delete(b"p" + uid)
        for (user_id, request_id), value in closed.items():
            key = b"q" + user_id.encode() + SEP + request_id.encode()
            if value:
                wb.put(key, value)
            else:
                wb.delete(key)
        part, ints, keys = open_row
        wb.put(b"j" + str(part).encode(), pack_ints(ints))
        wb.put(b"J" + str(part).encode(), pack_keys(keys))
        for (topic, p), offset in offsets.items():
            wb.put(b"o" + topic.encode() + SEP + str(p).encode(), str(offset).encode())
        wb.put(b"w" + str(watermark[0]).encode(), str(watermark[1]).encode())
        self.db.write(wb)

    def put_items(self, items: dict[str, events_pb2.Item]) -> None:
        """Upserts catalog entries (idempotent, so a redelivered item needs no offset bookkeeping)."""
        wb = WriteBatch(raw_mode=True)
        for item_id, item in items.items():
            wb.put(b"i" + item_id.encode(), item.SerializeToString())
            self.catalog_cache[item_id] = item
        self.db.write(wb)

    def snapshot_state(self) -> dict[str, Any]:
        """A plain-Python copy of the whole state (for tests and `streamrank state`)."""
        cooc = CoocCounts.__new__(CoocCounts)
        cooc.counts = {}
        stats = ScenarioStats.__new__(ScenarioStats)
        stats.scenario, stats.item, stats.buckets = {}, {}, {}
        stats.watermark = stats.low_watermark = stats.late = 0
        self.load_aggregates(cooc, stats)
        return {
            "users": {u.user_id: u for u in self.iter_users()},
            "cooc": cooc.counts,
            "scenario": stats.scenario,
            "scenario_item": stats.item,
            "buckets": stats.buckets,
            "offsets": self.load_offsets(),
            "catalog": dict(self.catalog_cache),
            "closed_requests": dict(self.load_closed_requests()),
            "counter_frontier": int(self.db.get(b"mcounters") or 0),
        }
