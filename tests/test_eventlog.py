"""The generic event-log format: round trips, both encodings, the documented examples, every error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamrank.data.eventlog import (
    EventLogError,
    detect_format,
    read_events,
    read_items,
    write_events,
    write_items,
)
from streamrank.v1 import events_pb2

DOC = Path(__file__).resolve().parents[1] / "docs" / "event-log-format.md"


def _events() -> list[events_pb2.Event]:
    full = events_pb2.Event(
        event_id="r1-imp-0", user_id="u1", item_id="i9", type=events_pb2.IMPRESSION, ts_ms=1_714_564_800_000,
        session_id="s1", request_id="r1", position=0, scenario="country:de", query="red shoes",
        item=events_pb2.ItemAttributes(category="shoes", brand="acme", shop="s", price=0.0),
    )
    bare = events_pb2.Event(event_id="e2", user_id="u1", item_id="i9", type=events_pb2.PURCHASE, ts_ms=5)
    empty_attrs = events_pb2.Event(event_id="e3", user_id="ü", item_id="i", type=events_pb2.CLICK, ts_ms=7,
                                   position=3, item=events_pb2.ItemAttributes())
    return [full, bare, empty_attrs]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    events = _events()
    assert write_events(tmp_path / name, events) == 3
    back = list(read_events(tmp_path / name))
    assert back == events
    assert back[0].item.HasField("price") and not back[1].HasField("item") and back[2].HasField("item")


def test_items_round_trip(tmp_path: Path) -> None:
    items = [events_pb2.Item(item_id="a", title="T", category="c", brand="b", price=1.5, tags=["x", "y"],
                             updated_ms=9), events_pb2.Item(item_id="b")]
    write_items(tmp_path / "items.jsonl", items)
    assert list(read_items(tmp_path / "items.jsonl")) == items


def test_csv_events(tmp_path: Path) -> None:
    path = _write(tmp_path, "e.csv", "\ufeffevent_id,user_id,item_id,type,ts,position,category,price,query\n"
                  "a,u,i,impression,2024-05-01T12:00:00Z,2,books,9.5,\"x, y\"\n"
                  "b,u,i,2,1714564800.25,,,,\n")
    first, second = read_events(path)
    assert first.ts_ms == 1_714_564_800_000 and first.position == 2 and first.query == "x, y"
    assert first.item.category == "books" and first.item.price == 9.5
    assert second.type == events_pb2.CLICK and second.ts_ms == 1_714_564_800_250
    assert not second.HasField("item")


def test_csv_items(tmp_path: Path) -> None:
    path = _write(tmp_path, "items.csv", "item_id,title,tags,price\n1,Toy Story,Animation| Comedy,\n2,,,3\n")
    one, two = read_items(path)
    assert list(one.tags) == ["Animation", "Comedy"] and not one.HasField("price")
    assert two.price == 3.0 and not two.tags


def test_timestamps(tmp_path: Path) -> None:
    base = '{"event_id":"e","user_id":"u","item_id":"i","type":"CLICK",'
    path = _write(tmp_path, "t.jsonl", "\n".join([
        base + '"ts":"2024-05-01T14:00:00+02:00"}', base + '"ts":"2024-05-01 12:00:00"}',
        base + '"ts":1714564800}', base + '"ts_ms":1714564800000.0}', "",
    ]))
    assert {e.ts_ms for e in read_events(path)} == {1_714_564_800_000}


def test_nested_item_and_numeric_ids(tmp_path: Path) -> None:
    path = _write(tmp_path, "n.jsonl", '{"event_id":1,"user_id":2,"item_id":3,"type":4,"ts_ms":5,'
                  '"item":{"brand":"b","price":2},"scenario":null}\n')
    (event,) = read_events(path)
    assert (event.event_id, event.user_id, event.item.brand, event.item.price) == ("1", "2", "b", 2.0)


def test_documented_examples_parse(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```(json|csv)\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 4
    events_json, events_csv, item_json, item_csv = (b for _, b in blocks)
    from_json = list(read_events(_write(tmp_path, "doc.jsonl", events_json)))
    from_csv = list(read_events(_write(tmp_path, "doc.csv", events_csv)))
    assert len(from_json) == len(from_csv) == 3
    assert [e.ts_ms for e in from_json] == [e.ts_ms for e in from_csv]
    assert from_json[0].item == from_csv[0].item
    assert list(read_items(_write(tmp_path, "i.jsonl", item_json))) == list(
        read_items(_write(tmp_path, "i.csv", item_csv)))


GOOD = '{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts_ms":5}'
JSON_ERRORS = [
    ('{"event_id":"e","usr_id":"u","item_id":"i","type":"click","ts_ms":5}', "usr_id", "unknown field"),
    ('{"event_id":"e","item_id":"i","type":"click","ts_ms":5}', "user_id", "missing"),
    ('{"event_id":"","user_id":"u","item_id":"i","type":"click","ts_ms":5}', "event_id", "empty"),
    ('{"event_id":"e","user_id":"u","item_id":"i","ts_ms":5}', "type", "missing"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts_ms":5}', "type", "unknown event type"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":9,"ts_ms":5}', "type", "unknown event type"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click"}', "ts_ms", "missing"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts_ms":"soon"}', "ts_ms", "integer"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts_ms":1.5}', "ts_ms", "integer"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts":"yesterday"}', "ts", "ISO-8601"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts":1,"ts_ms":1}', "ts", "not both"),
    ('{"event_id":"e","user_id":["u"],"item_id":"i","type":"click","ts_ms":5}', "user_id", "string"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts_ms":5,"position":true}', "position",
     "boolean"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts_ms":5,"price":"cheap"}', "price",
     "number"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts_ms":5,"price":NaN}', "price", "finite"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts_ms":5,"item":{"colour":"red"}}',
     "item.colour", "unknown field"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts_ms":5,"item":"red"}', "item", "object"),
    ('{"event_id":"e","user_id":"u","item_id":"i","type":"click","ts_ms":5,"brand":"a","item":{"brand":"b"}}',
     "brand", "both"),
    ('{"event_id":"e", oops}', "line", "not valid JSON"),
    ('["e","u"]', "line", "JSON object"),
]


@pytest.mark.parametrize(("line", "field", "message"), JSON_ERRORS)
def test_json_errors_name_line_and_field(tmp_path: Path, line: str, field: str, message: str) -> None:
    path = _write(tmp_path, "bad.jsonl", f"{GOOD}\n\n{line}\n{GOOD}\n")
    with pytest.raises(EventLogError) as caught:
        list(read_events(path))
    error = caught.value
    assert (error.line, error.field) == (3, field)
    assert message in error.message
    assert str(error).startswith(f"{path}:3: {field}: ")


CSV_ERRORS = [
    ("event_id,user_id,item_id,type,ts_ms,colour\n", "e,u,i,click,5,red\n", 1, "colour", "unknown column"),
    ("event_id,user_id,item_id,type,ts_ms,ts_ms\n", "e,u,i,click,5,5\n", 1, "ts_ms", "twice"),
    ("event_id,user_id,item_id,type,ts_ms\n", "e,u,i,click\n", 3, "row", "expected 5 columns"),
    ("event_id,user_id,item_id,type,ts_ms\n", "e,,i,click,5\n", 3, "user_id", "missing"),
    ("event_id,user_id,item_id,type,ts_ms,position\n", "e,u,i,click,5,first\n", 3, "position", "integer"),
]


@pytest.mark.parametrize(("header", "row", "line", "field", "message"), CSV_ERRORS)
def test_csv_errors_name_line_and_field(tmp_path: Path, header: str, row: str, line: int, field: str,
                                        message: str) -> None:
    columns = header.strip().split(",")
    good = ",".join({"event_id": "g", "user_id": "u", "item_id": "i", "type": "click"}.get(c, "5")
                    for c in columns)
    path = _write(tmp_path, "bad.csv", f"{header}{good}\n{row}")
    with pytest.raises(EventLogError) as caught:
        list(read_events(path))
    assert (caught.value.line, caught.value.field) == (line, field)
    assert message in caught.value.message


def test_item_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "items.jsonl", '{"item_id":"a"}\n{"item_id":"b","tags":"x|y"}\n')
    with pytest.raises(EventLogError, match=r"items.jsonl:2: tags: expected a list"):
        list(read_items(path))
    path = _write(tmp_path, "items2.jsonl", '{"item_id":"a","shop":"s"}\n')
    with pytest.raises(EventLogError, match=r":1: shop: unknown field"):
        list(read_items(path))


def test_on_error_skips_bad_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "mixed.jsonl", f"{GOOD}\n{JSON_ERRORS[0][0]}\n{GOOD}\n{JSON_ERRORS[1][0]}\n")
    errors: list[EventLogError] = []
    assert len(list(read_events(path, on_error=errors.append))) == 2
    assert [(e.line, e.field) for e in errors] == [(2, "usr_id"), (4, "user_id")]


def test_format_detection(tmp_path: Path) -> None:
    assert detect_format("a.ndjson") == "jsonl" and detect_format("a.CSV.gz") == "csv"
    assert detect_format("a.txt", "csv") == "csv"
    with pytest.raises(ValueError, match="extension"):
        detect_format("events.txt")
    with pytest.raises(ValueError, match="unknown event-log format"):
        detect_format("a.csv", "parquet")
    with pytest.raises(ValueError, match="only JSON-lines"):
        write_events(tmp_path / "out.csv", [])
    path = _write(tmp_path, "events.log", "event_id,user_id,item_id,type,ts_ms\ne,u,i,click,5\n")
    assert len(list(read_events(path, fmt="csv"))) == 1
