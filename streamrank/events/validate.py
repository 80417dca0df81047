"""Decoding and validation of events and catalog items from the wire.

Every rejection carries a short machine-readable reason (the dead-letter header and the metric label)
and a human-readable detail, so an operator can tell at a glance why a message was refused.
"""

from __future__ import annotations

import math
import time
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from streamrank.config import Settings
from streamrank.events.types import NAME_BY_TYPE
from streamrank.v1 import events_pb2

# Reasons, as they appear in the `x-reason` header of dead-letter records and in worker counters.
OVERSIZED = "oversized"
MALFORMED = "malformed_protobuf"
MISSING_FIELD = "missing_field"
ID_TOO_LONG = "id_too_long"
UNKNOWN_TYPE = "unknown_event_type"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
BAD_POSITION = "bad_position"
BAD_PRICE = "bad_price"
PROCESSING_ERROR = "processing_error"

M = TypeVar("M", bound=Message)


class InvalidEvent(ValueError):
    """A message that cannot be processed; `reason` is one of the constants of this module."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _check_price(price: float) -> None:
    if not math.isfinite(price) or price < 0:
        raise InvalidEvent(BAD_PRICE, f"price must be a finite number >= 0, got {price!r}")


def check_event(event: events_pb2.Event, settings: Settings, now_ms: int | None = None) -> None:
    """Raises InvalidEvent when a decoded event breaks a rule of the schema; returns None when it is good."""
    for name in ("event_id", "user_id", "item_id"):
        value = getattr(event, name)
        if not value:
            raise InvalidEvent(MISSING_FIELD, f"{name} is empty")
        if len(value) > settings.max_id_length:
            raise InvalidEvent(ID_TOO_LONG, f"{name} has {len(value)} chars (limit {settings.max_id_length})")
    for name in ("session_id", "request_id", "scenario"):
        if len(getattr(event, name)) > settings.max_id_length:
            raise InvalidEvent(ID_TOO_LONG, f"{name} is longer than {settings.max_id_length} chars")
    if event.type not in NAME_BY_TYPE:
        raise InvalidEvent(UNKNOWN_TYPE, f"event type {event.type} is not one of {sorted(NAME_BY_TYPE)}")
    if event.ts_ms <= 0:
        raise InvalidEvent(BAD_TIMESTAMP, f"ts_ms must be > 0, got {event.ts_ms}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if event.ts_ms > now + settings.max_future_skew_ms:
        raise InvalidEvent(
            FUTURE_TIMESTAMP,
            f"ts_ms {event.ts_ms} is more than {settings.max_future_skew_ms} ms ahead of now ({now})",
        )
    if event.position < 0:
        raise InvalidEvent(BAD_POSITION, f"position must be >= 0, got {event.position}")
    if event.HasField("item") and event.item.HasField("price"):
        _check_price(event.item.price)


def _parse(raw: bytes | None, message: M, settings: Settings) -> M:
    """Size-checks and parses raw bytes into `message`; InvalidEvent when they are not one."""
    if raw is None:
        raise InvalidEvent(MALFORMED, "empty message value (tombstone)")
    if len(raw) > settings.max_event_bytes:
        raise InvalidEvent(OVERSIZED, f"{len(raw)} bytes (limit {settings.max_event_bytes})")
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise InvalidEvent(MALFORMED, f"not a {message.DESCRIPTOR.full_name}: {exc}") from exc
    return message


def decode_event(raw: bytes | None, settings: Settings, now_ms: int | None = None) -> events_pb2.Event:
    """Parses and validates one events-topic value; raises InvalidEvent with the reason when it is bad."""
    event = _parse(raw, events_pb2.Event(), settings)
    check_event(event, settings, now_ms)
    return event


def decode_item(raw: bytes | None, settings: Settings) -> events_pb2.Item:
    """Parses and validates one items-topic value; raises InvalidEvent with the reason when it is bad."""
    item = _parse(raw, events_pb2.Item(), settings)
    if not item.item_id:
        raise InvalidEvent(MISSING_FIELD, "item_id is empty")
    if len(item.item_id) > settings.max_id_length:
        raise InvalidEvent(ID_TOO_LONG, f"item_id is longer than {settings.max_id_length} chars")
    if item.HasField("price"):
        _check_price(item.price)
    return item
