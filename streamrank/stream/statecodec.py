"""How the worker's state values are written as bytes, and read back without running code.

The values are pickles: a user's state is written for every user a batch touches, and pickle of these slotted
dataclasses is several times faster than any schema codec tried here. Reading a pickle can call any importable
function, though, and the bytes come from disk (RocksDB) and from the changelog topic, which other processes
write. So they are read by an unpickler that resolves only the three state classes (the Python documentation's
"restricting globals"): plain containers, numbers and strings are opcodes, not globals; anything else stops
the read with `UnsafeStateError`.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

PROTOCOL = pickle.HIGHEST_PROTOCOL
_MODULE = "streamrank.stream.userstate"
_ALLOWED = {"UserState", "PendingRequest", "PendingImpression"}


class UnsafeStateError(pickle.UnpicklingError):
    """A state value named a class outside the worker's state types (corrupt or forged bytes)."""


class _StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == _MODULE and name in _ALLOWED:
            from streamrank.stream import userstate

            return getattr(userstate, name)
        raise UnsafeStateError(f"state value refers to {module}.{name}, which is not a worker state type")


def dump_state(value: Any) -> bytes:
    """A state value as bytes (users, waiting requests, aggregate rows)."""
    return pickle.dumps(value, PROTOCOL)


def load_state(raw: bytes) -> Any:
    """Reads bytes written by `dump_state`; refuses any global but the worker's state classes."""
    return _StateUnpickler(io.BytesIO(raw)).load()


def pair_key(scenario: str, item_id: str) -> bytes:
    """(scenario, item) as bytes: the scenario length-prefixed, so any characters round-trip."""
    raw = scenario.encode()
    return len(raw).to_bytes(4, "big") + raw + item_id.encode()


def split_pair_key(key: bytes) -> tuple[str, str]:
    """The (scenario, item) of a `pair_key`."""
    n = int.from_bytes(key[:4], "big")
    return key[4:4 + n].decode(), key[4 + n:].decode()


def pack_ints(values: list[int]) -> bytes:
    """Signed 64-bit big-endian integers (the counter rows: no pickle for the most written values)."""
    return struct.pack(f">{len(values)}q", *values)


def unpack_ints(raw: bytes) -> list[int]:
    """The integers of `pack_ints`."""
    return list(struct.unpack(f">{len(raw) // 8}q", raw))


def pack_keys(keys: list[tuple[str, str]]) -> bytes:
    """(scenario, item) keys as one value: each pair key length-prefixed."""
    out = bytearray()
    for key in keys:
        raw = pair_key(*key)
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def unpack_keys(raw: bytes) -> list[tuple[str, str]]:
    """The keys of `pack_keys`."""
    keys, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i:i + 4], "big")
        keys.append(split_pair_key(raw[i + 4:i + 4 + n]))
        i += 4 + n
    return keys
