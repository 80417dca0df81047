"""Decoding and validation of events and catalog items from the wire, and the value rules they share with
the scorer's request validation (`streamrank.serve.requests`): ids, prices, timestamps. One set of rules, so
that whatever the worker learns from (a user id, an item id, a category) the scorer can also rank.

Every rejection carries a short machine-readable reason (the dead-letter header and the metric label)
and a human-readable detail, so an operator can tell at a glance why a message was refused.
"""

from __future__ import annotations

import math
import re
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
BAD_ID = "bad_id"
PROCESSING_ERROR = "processing_error"

M = TypeVar("M", bound=Message)

MAX_PRICE = 1e9  # prices above this are refused: far beyond any catalog, and they overflow float32 features
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(value: str) -> bool:
    """Whether a value holds a control character (what terminals and logs interpret)."""
    return _CONTROL.search(value) is not None


def id_problem(name: str, value: str, limit: int, required: bool = False) -> tuple[str, str] | None:
    """(reason, detail) when an id or attribute value breaks the shared rules (present when required, at most
    `limit` characters, no control characters); None when it is good."""
    if not value:
        return (MISSING_FIELD, f"{name} is empty") if required else None
    if len(value) > limit:
        return ID_TOO_LONG, f"{name} has {len(value)} characters (limit {limit})"
    if has_control_chars(value):
        return BAD_ID, f"{name} contains control characters"
    return None


def price_problem(name: str, price: float) -> tuple[str, str] | None:
    """(reason, detail) unless the price is finite and in [0, MAX_PRICE]."""
    if not math.isfinite(price) or not 0 <= price <= MAX_PRICE:
        return BAD_PRICE, f"{name} must be a finite number in [0, {MAX_PRICE:g}], got {price!r}"
    return None


def timestamp_problem(name: str, ts_ms: int, max_future_skew_ms: int,
                      now_ms: int | None = None) -> tuple[str, str] | None:
    """(reason, detail) unless the timestamp is after the epoch and at most `max_future_skew_ms` ahead of now."""
    if ts_ms <= 0:
        return BAD_TIMESTAMP, f"{name} must be > 0, got {ts_ms}"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if ts_ms > now + max_future_skew_ms:
        return FUTURE_TIMESTAMP, f"{name} {ts_ms} is more than {max_future_skew_ms} ms ahead of now ({now})"
    return None


class InvalidEvent(ValueError):
    """A message that cannot be processed; `reason` is one of the constants of this module."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _raise(problem: tuple[str, str] | None) -> None:
    if problem is not None:
        raise InvalidEvent(*problem)


def check_event(event: events_pb2.Event, settings: Settings, now_ms: int | None = None) -> None:
    """Raises InvalidEvent when a decoded event breaks a rule of the schema; returns None when it is good."""
    limit = settings.max_id_length
    has_item = event.HasField("item")
    values = [event.event_id, event.user_id, event.item_id, event.session_id, event.request_id, event.scenario]
    if has_item:
        item = event.item
        values += (item.category, item.brand, item.shop)
    # Fast path (this runs per event): every id present where required, short enough, and no control
    # character anywhere, checked in one pass; only a bad event goes field by field for its reason.
    if not (values[0] and values[1] and values[2] and max(map(len, values)) <= limit
            and _CONTROL.search("".join(values)) is None):
        for name in ("event_id", "user_id", "item_id"):
            _raise(id_problem(name, getattr(event, name), limit, required=True))
        for name in ("session_id", "request_id", "scenario"):
            _raise(id_problem(name, getattr(event, name), limit))
        if has_item:
            for name in ("category", "brand", "shop"):
                _raise(id_problem(f"item.{name}", getattr(event.item, name), limit))
    if event.type not in NAME_BY_TYPE:
        raise InvalidEvent(UNKNOWN_TYPE, f"event type {event.type} is not one of {sorted(NAME_BY_TYPE)}")
    _raise(timestamp_problem("ts_ms", event.ts_ms, settings.max_future_skew_ms, now_ms))
    if event.position < 0:
        raise InvalidEvent(BAD_POSITION, f"position must be >= 0, got {event.position}")
    if has_item and event.item.HasField("price"):
        _raise(price_problem("item.price", event.item.price))


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
    _raise(id_problem("item_id", item.item_id, settings.max_id_length, required=True))
    for name in ("category", "brand"):
        _raise(id_problem(name, getattr(item, name), settings.max_id_length))
    if item.HasField("price"):
        _raise(price_problem("price", item.price))
    return item
