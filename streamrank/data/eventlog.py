"""The generic event-log format: JSON-lines or CSV files of events and of catalog items.

The format is documented, with examples, in docs/event-log-format.md. In short: one event per JSON
object (a line) or per CSV row, with the fields of `streamrank.v1.Event`; item attributes are flat
keys/columns (category, brand, shop, price) or, in JSON, a nested "item" object. Timestamps are
`ts_ms` (integer milliseconds) or `ts` (ISO-8601 text, or seconds as a number).

Reading is strict on purpose: a wrong type, a missing required field or an unknown field (a typo such
as "user" for "user_id") raises `EventLogError` naming the file, the line and the field, instead of
silently producing events with empty fields. Semantic rules (future timestamps, id length, negative
prices...) are left to `streamrank.events.validate.check_event`, which the producer applies.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

from streamrank.events.types import NAME_BY_TYPE, parse_type
from streamrank.v1 import events_pb2

Format = Literal["jsonl", "csv"]
PathLike = str | os.PathLike[str]
ErrorHandler = Callable[["EventLogError"], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ID_FIELDS = ("event_id", "user_id", "item_id")
_STR_FIELDS = ("session_id", "request_id", "scenario", "query")
_ATTR_STR_FIELDS = ("category", "brand", "shop")
EVENT_FIELDS: frozenset[str] = frozenset(
    {*_ID_FIELDS, "type", "ts_ms", "ts", *_STR_FIELDS, "position", *_ATTR_STR_FIELDS, "price", "item"}
)
ITEM_ATTRIBUTE_FIELDS: frozenset[str] = frozenset({*_ATTR_STR_FIELDS, "price"})
ITEM_FIELDS: frozenset[str] = frozenset(
    {"item_id", "title", "category", "brand", "price", "tags", "updated_ms"}
)


class EventLogError(ValueError):
    """A row of an event or item log that cannot be read; says where (file:line) and which field."""

    def __init__(self, path: PathLike, line: int, field: str, message: str) -> None:
        super().__init__(f"{path}:{line}: {field}: {message}")
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message


class _FieldError(ValueError):
    """Raised by the converters; turned into an EventLogError once the line is known."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# --- format detection and file opening ------------------------------------------------------------


def detect_format(path: PathLike, fmt: str | None = None) -> Format:
    """The format of a log: `fmt` when given ("jsonl"/"json"/"csv"), else from the file extension.

    Recognised extensions: .jsonl, .ndjson, .json (JSON-lines) and .csv, each optionally with .gz.
    """
    if fmt is not None:
        key = fmt.lower()
        if key in {"jsonl", "json", "ndjson"}:
            return "jsonl"
        if key == "csv":
            return "csv"
        raise ValueError(f"unknown event-log format {fmt!r}; expected jsonl or csv")
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    ext = suffixes[-1] if suffixes else ""
    if ext in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if ext == ".csv":
        return "csv"
    raise ValueError(f"cannot tell the format of {path} from its extension; pass fmt='jsonl' or 'csv'")


def _open_text(path: PathLike, mode: str) -> IO[str]:
    # utf-8-sig drops the byte-order mark spreadsheet programs put at the start of CSV files.
    encoding = "utf-8-sig" if mode == "r" else "utf-8"
    if str(path).lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding=encoding, newline="")
    return open(path, mode, encoding=encoding, newline="")


def _rows(path: PathLike, fmt: Format, allowed: frozenset[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, raw mapping) per record; empty CSV cells and JSON nulls are left out."""
    with _open_text(path, "r") as fh:
        if fmt == "jsonl":
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EventLogError(path, lineno, "line", f"not valid JSON: {exc.msg}") from exc
                if not isinstance(record, dict):
                    raise EventLogError(path, lineno, "line", "expected a JSON object")
                yield lineno, {k: v for k, v in record.items() if v is not None}
            return
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        names = [name.strip() for name in header]
        for name in names:
            if name not in allowed:
                raise EventLogError(path, 1, name or "(empty)",
                                    f"unknown column; expected some of {sorted(allowed)}")
            if names.count(name) > 1:
                raise EventLogError(path, 1, name, "column appears twice")
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(names):
                raise EventLogError(path, reader.line_num, "row",
                                    f"expected {len(names)} columns, got {len(row)}")
            yield reader.line_num, {n: v for n, v in zip(names, row, strict=True) if v.strip() != ""}


# --- value converters -------------------------------------------------------------------------------


def _as_str(field: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids written as JSON numbers are fine
    raise _FieldError(field, f"expected a string, got {type(value).__name__}")


def _as_int(field: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _FieldError(field, "expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _FieldError(field, f"expected an integer, got {value!r}")


def _as_float(field: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _FieldError(field, "expected a number, got a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _FieldError(field, f"expected a number, got {value!r}") from None
    else:
        raise _FieldError(field, f"expected a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise _FieldError(field, f"expected a finite number, got {value!r}")
    return number


def _as_type(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    try:
        return parse_type(value)
    except ValueError as exc:
        raise _FieldError("type", str(exc)) from None


def _ts_to_ms(value: Any) -> int:
    """`ts`: seconds since the epoch as a number, or ISO-8601 text (naive times are UTC)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return round(float(text) * 1000)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _FieldError("ts", f"expected ISO-8601 or seconds since the epoch, got {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // timedelta(milliseconds=1)
    return round(_as_float("ts", value) * 1000)


def _required_id(record: dict[str, Any], field: str) -> str:
    if field not in record:
        raise _FieldError(field, "required field is missing")
    value = _as_str(field, record[field])
    if not value:
        raise _FieldError(field, "required field is empty")
    return value


# --- events -----------------------------------------------------------------------------------------


def _attributes(record: dict[str, Any]) -> events_pb2.ItemAttributes | None:
    flat = {k: record[k] for k in ITEM_ATTRIBUTE_FIELDS if k in record}
    nested = record.get("item")
    if nested is None and not flat:
        return None
    merged: dict[str, Any] = dict(flat)
    if nested is not None:
        if not isinstance(nested, dict):
            raise _FieldError("item", "expected an object with category, brand, shop, price")
        for key, value in nested.items():
            if key not in ITEM_ATTRIBUTE_FIELDS:
                raise _FieldError(f"item.{key}",
                                  f"unknown field; expected some of {sorted(ITEM_ATTRIBUTE_FIELDS)}")
            if key in flat:
                raise _FieldError(key, "given both as a top-level field and inside 'item'")
            if value is not None:
                merged[key] = value
    attrs = events_pb2.ItemAttributes()
    for key in _ATTR_STR_FIELDS:
        if key in merged:
            setattr(attrs, key, _as_str(key, merged[key]))
    if "price" in merged:
        attrs.price = _as_float("price", merged["price"])
    return attrs


def event_from_record(record: dict[str, Any]) -> events_pb2.Event:
    """Builds an Event from one decoded JSON object / CSV row; ValueError subclasses name the field."""
    unknown = sorted(set(record) - EVENT_FIELDS)
    if unknown:
        raise _FieldError(unknown[0], f"unknown field; expected some of {sorted(EVENT_FIELDS)}")
    event = events_pb2.Event()
    for field in _ID_FIELDS:
        setattr(event, field, _required_id(record, field))
    if "type" not in record:
        raise _FieldError("type", "required field is missing")
    event.type = _as_type(record["type"])  # type: ignore[assignment]
    if "ts_ms" in record and "ts" in record:
        raise _FieldError("ts", "give either ts_ms or ts, not both")
    if "ts_ms" in record:
        event.ts_ms = _as_int("ts_ms", record["ts_ms"])
    elif "ts" in record:
        event.ts_ms = _ts_to_ms(record["ts"])
    else:
        raise _FieldError("ts_ms", "required field is missing (or give ts)")
    for field in _STR_FIELDS:
        if field in record:
            setattr(event, field, _as_str(field, record[field]))
    if "position" in record:
        event.position = _as_int("position", record["position"])
    attrs = _attributes(record)
    if attrs is not None:
        event.item.CopyFrom(attrs)
    return event


def _read(path: PathLike, fmt: str | None, allowed: frozenset[str], build: Callable[[dict[str, Any]], Any],
          on_error: ErrorHandler | None) -> Iterator[Any]:
    for lineno, record in _rows(path, detect_format(path, fmt), allowed):
        try:
            yield build(record)
        except _FieldError as exc:
            error = EventLogError(path, lineno, exc.field, str(exc))
            if on_error is None:
                raise error from None
            on_error(error)


def read_events(path: PathLike, fmt: str | None = None,
                on_error: ErrorHandler | None = None) -> Iterator[events_pb2.Event]:
    """Streams the events of a JSON-lines or CSV log (format from `fmt` or the extension).

    A bad row raises EventLogError (file:line, field); with `on_error`, bad rows are passed to it and
    skipped instead, so a long log with a few broken lines can still be replayed. Unreadable files
    (invalid JSON, wrong CSV header or column count) always raise.
    """
    return _read(path, fmt, EVENT_FIELDS, event_from_record, on_error)


# --- items ------------------------------------------------------------------------------------------


def item_from_record(record: dict[str, Any], csv_tags: bool = False) -> events_pb2.Item:
    """Builds a catalog Item from one decoded record; tags are a list (JSON) or "a|b|c" text (CSV)."""
    unknown = sorted(set(record) - ITEM_FIELDS)
    if unknown:
        raise _FieldError(unknown[0], f"unknown field; expected some of {sorted(ITEM_FIELDS)}")
    item = events_pb2.Item(item_id=_required_id(record, "item_id"))
    for field in ("title", "category", "brand"):
        if field in record:
            setattr(item, field, _as_str(field, record[field]))
    if "price" in record:
        item.price = _as_float("price", record["price"])
    if "updated_ms" in record:
        item.updated_ms = _as_int("updated_ms", record["updated_ms"])
    if "tags" in record:
        tags = record["tags"]
        if csv_tags and isinstance(tags, str):
            item.tags.extend(t.strip() for t in tags.split("|") if t.strip())
        elif isinstance(tags, list) and all(isinstance(t, str) for t in tags):
            item.tags.extend(tags)
        else:
            raise _FieldError("tags", "expected a list of strings")
    return item


def read_items(path: PathLike, fmt: str | None = None,
               on_error: ErrorHandler | None = None) -> Iterator[events_pb2.Item]:
    """Streams the catalog items of a JSON-lines or CSV file; errors as in `read_events`."""
    csv_tags = detect_format(path, fmt) == "csv"
    return _read(path, fmt, ITEM_FIELDS, lambda r: item_from_record(r, csv_tags), on_error)


# --- writing ----------------------------------------------------------------------------------------


def event_to_record(event: events_pb2.Event) -> dict[str, Any]:
    """The JSON-lines form of an Event: the type by name, empty optional fields left out."""
    record: dict[str, Any] = {
        "event_id": event.event_id, "user_id": event.user_id, "item_id": event.item_id,
        "type": NAME_BY_TYPE.get(event.type, int(event.type)), "ts_ms": event.ts_ms,
    }
    for field in _STR_FIELDS:
        value = getattr(event, field)
        if value:
            record[field] = value
    if event.position or event.type == events_pb2.IMPRESSION:
        record["position"] = event.position
    if event.HasField("item"):
        attrs: dict[str, Any] = {k: v for k in _ATTR_STR_FIELDS if (v := getattr(event.item, k))}
        if event.item.HasField("price"):
            attrs["price"] = event.item.price
        record["item"] = attrs
    return record


def item_to_record(item: events_pb2.Item) -> dict[str, Any]:
    """The JSON-lines form of a catalog Item, empty optional fields left out."""
    record: dict[str, Any] = {"item_id": item.item_id}
    for field in ("title", "category", "brand"):
        if getattr(item, field):
            record[field] = getattr(item, field)
    if item.HasField("price"):
        record["price"] = item.price
    if item.tags:
        record["tags"] = list(item.tags)
    if item.updated_ms:
        record["updated_ms"] = item.updated_ms
    return record


def _write(path: PathLike, records: Iterable[dict[str, Any]]) -> int:
    if any(s.lower() == ".csv" for s in Path(path).suffixes):
        raise ValueError(f"{path}: only JSON-lines is written; name the file .jsonl (or .jsonl.gz)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with _open_text(path, "w") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")
            count += 1
    return count


def write_events(path: PathLike, events: Iterable[events_pb2.Event]) -> int:
    """Writes events as JSON-lines (gzip when the name ends in .gz); returns how many were written.

    `read_events` gives back equal messages, so logs can be exported, edited and replayed.
    """
    return _write(path, (event_to_record(e) for e in events))


def write_items(path: PathLike, items: Iterable[events_pb2.Item]) -> int:
    """Writes catalog items as JSON-lines (gzip when the name ends in .gz); returns the count."""
    return _write(path, (item_to_record(i) for i in items))
