"""The changelog of the worker's per-partition state, and the partition image a new owner restores from it.

Each events partition *p* has the same partition of a compacted changelog topic. After a batch is durable in
RocksDB, the worker writes there what the batch changed of *p*: its users (`u` + user id), its requests closed
while an impression waited for counters (`q` + user id + NUL + request id; an empty value deletes one), and
one `P` record last: *p*'s events offset, watermark and open counter buckets (its sealed floor, effective-time
floor and unsealed contributions). A worker that gains *p* reads the partition back and takes that image
instead of replaying the events topic: the events' retention no longer bounds a hand-off, and what the
previous owner answered and held is restored, not re-derived (docs/design.md, "Hand-off").

Every value starts with its writer (a random id per worker process) and the writer's batch number. A batch's
records count only once its `P` record follows: the rows of a batch whose writer died before its `P` are
ignored, so the image is always one the writer had made durable, with the offset that goes with it. A `P`
whose offset is below the image's (a writer that lost the partition and finished a batch late) is ignored with
its rows. Compaction keeps the newest value per key; it could drop an older complete value behind an
incomplete newer one only after the segment holding it rolled, long after the next owner has restored and
rewritten those users.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamrank.stream.statecodec import pack_ints, pack_keys, unpack_ints, unpack_keys

META = b"P"
USER = b"u"
CLOSED = b"q"
SEP = b"\x00"
_TAG = struct.Struct(">qq")  # writer, batch number
# events offset, watermark, lengths of the packed open-bucket integers and of their keys
_META_HEAD = struct.Struct(">qqII")

Key = tuple[str, str]


def new_writer_id() -> int:
    """A random id for this process's changelog records (worker ids may be shared by replicas)."""
    return secrets.randbits(62) + 1


def user_key(user_id: str) -> bytes:
    """The changelog key of a user's state."""
    return USER + user_id.encode()


def closed_key(user_id: str, request_id: str) -> bytes:
    """The changelog key of a request closed while an impression waited for its counters."""
    return CLOSED + user_id.encode() + SEP + request_id.encode()


def tag(writer: int, batch: int) -> bytes:
    """The prefix of every value of one batch of one writer."""
    return _TAG.pack(writer, batch)


def meta_value(offset: int, watermark: int, open_ints: list[int], open_keys: list[Key], exchange: bytes = b"") -> bytes:
    """The payload of a `P` record: the partition's offset, watermark and open counter buckets, and the
    counter exchange record its batch sealed (sent after the changelog: a new owner re-sends it)."""
    packed, keys = pack_ints(open_ints), pack_keys(open_keys)
    return _META_HEAD.pack(offset, watermark, len(packed), len(keys)) + packed + keys + exchange


@dataclass
class PartitionImage:
    """One partition's state as its last owner made it durable, read back from the changelog."""

    partition: int
    users: dict[str, bytes] = field(default_factory=dict)  # user id -> state value (statecodec)
    closed: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (user, request) -> value; b"": deleted
    offset: int = -1  # the last events offset folded in (-1: no complete batch in the changelog)
    watermark: int = 0
    open_ints: list[int] = field(default_factory=list)  # SealedCounters.packed_open of the partition
    open_keys: list[Key] = field(default_factory=list)
    exchange: bytes = b""  # the exchange record of the image's batch (stream/encode.py), b"": none
    records: int = 0  # changelog records read
    ignored: int = 0  # records of batches never completed, or malformed
    newest_meta: int = -1  # the highest offset any `P` record named (taken or not), for diagnostics

    def _apply_rows(self, rows: list[tuple[bytes, bytes]]) -> None:
        for key, payload in rows:
            if key[:1] == USER:
                self.users[key[1:].decode()] = payload
            else:
                user_id, request_id = key[1:].split(SEP, 1)
                self.closed[(user_id.decode(), request_id.decode())] = payload

    def _apply_meta(self, payload: bytes) -> bool:
        offset, watermark, n, k = _META_HEAD.unpack_from(payload)
        self.newest_meta = max(self.newest_meta, offset)
        if offset < self.offset:
            return False
        start = _META_HEAD.size
        self.offset, self.watermark = offset, watermark
        self.open_ints = unpack_ints(payload[start:start + n])
        self.open_keys = unpack_keys(payload[start + n:start + n + k])
        self.exchange = payload[start + n + k:]
        return True


class ImageBuilder:
    """Folds a partition's changelog records, in offset order, into its image: the newest value per key among
    the batches that a `P` record completed, and the newest `P`."""

    def __init__(self, partition: int) -> None:
        self.image = PartitionImage(partition)
        self._pending: dict[bytes, list[tuple[bytes, bytes]]] = {}  # rows of batches not completed yet

    def add(self, key: bytes | None, value: bytes | None) -> None:
        """Takes the next record of the partition."""
        image = self.image
        image.records += 1
        if not key or value is None or len(value) < _TAG.size or key[:1] not in (META, USER, CLOSED):
            image.ignored += 1
            return
        batch, payload = value[:_TAG.size], value[_TAG.size:]
        if key == META:
            rows = self._pending.pop(batch, [])
            if len(payload) >= _META_HEAD.size and image._apply_meta(payload):
                image._apply_rows(rows)
            else:
                image.ignored += 1 + len(rows)
        elif key[:1] == CLOSED and SEP not in key:
            image.ignored += 1
        else:
            self._pending.setdefault(batch, []).append((key, payload))

    def finish(self) -> PartitionImage:
        """The image; rows of batches never completed are counted as ignored."""
        self.image.ignored += sum(len(rows) for rows in self._pending.values())
        self._pending = {}
        return self.image


def fold(partition: int, records: Iterable[tuple[bytes | None, bytes | None]]) -> PartitionImage:
    """The image of a partition's changelog records (in offset order); see `ImageBuilder`."""
    builder = ImageBuilder(partition)
    for key, value in records:
        builder.add(key, value)
    return builder.finish()
