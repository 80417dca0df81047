"""A user's own event log (docs/event-log-format.md) as an `InteractionLog` (docs/your-own-data.md).

What it does with the file, in order:

1. Reads every event strictly (`read_events`), at most `max_events` of them (a clear error beyond: the
   loader holds the log in memory to check and sort it).
2. **Time order.** The pipeline learns in event time (attribution windows close on the stream's
   watermark), so a log grouped by user instead of by time gives wrong labels. An event is *out of
   order* when it is more than `tolerance_ms` earlier than an event before it in the file. With
   ``order="sort"`` (the default) such a log is sorted by event time (stable: ties keep the file's order)
   and a warning says how many events were out of order; with ``order="refuse"`` it raises
   `EventOrderError` with that count. Never silently.
3. **Interactions.** Every click, add-to-cart and purchase is an interaction of strength = its type's wire
   number (2, 3, 4). A user's next event on the same item within `merge_window_ms` of the first one (the
   click, then the add-to-cart, then the purchase of one visit) joins that interaction, which keeps the
   strongest type: one visit is one request, not three. Events that name different requests are never
   merged.
4. **Catalog.** Items come from the catalog file when given (title, category, brand, price, tags as
   written); items that appear only in events get their category from the latest event that names one.
5. **Impressions.** A log that has impression events is a complete request stream already: its (sorted)
   events are kept and published as they are; no negatives are synthesised.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from streamrank.data.dataset import CatalogItem, InteractionLog, build_ratings, dataset_label
from streamrank.data.eventlog import read_events, read_items
from streamrank.v1 import events_pb2

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
MAX_EVENTS = 5_000_000
ORDERS = ("sort", "refuse")


class EventOrderError(ValueError):
    """An event log is not in time order and the caller asked to refuse such logs."""


def out_of_order(ts_ms: np.ndarray, tolerance_ms: int = 1000) -> int:
    """How many events are more than `tolerance_ms` earlier than some event before them in the sequence."""
    if ts_ms.size == 0:
        return 0
    running_max = np.maximum.accumulate(ts_ms)
    return int(np.count_nonzero(ts_ms < running_max - tolerance_ms))


def time_ordered(events: list[events_pb2.Event], source: str, order: str = "sort",
                 tolerance_ms: int = 1000) -> list[events_pb2.Event]:
    """The events in time order: unchanged when already so, else sorted (``sort``) or refused (``refuse``),
    with the count of out-of-order events in the warning or the error."""
    if order not in ORDERS:
        raise ValueError(f"unknown order policy {order!r}; expected one of {', '.join(ORDERS)}")
    ts = np.fromiter((e.ts_ms for e in events), dtype=np.int64, count=len(events))
    late = out_of_order(ts, tolerance_ms)
    if not late:
        return events
    what = (f"{source}: {late:,} of {len(events):,} events are more than {tolerance_ms / 1000:g} s earlier than an "
            "event before them (is the log grouped by user?)")
    if order == "refuse":
        raise EventOrderError(f"{what}; the pipeline needs event-time order: sort the file by time or use "
                              "--order sort")
    log.warning("%s; sorted by event time (stable)", what)
    return [events[i] for i in np.argsort(ts, kind="stable").tolist()]


def _interactions(events: list[events_pb2.Event], merge_window_ms: int) -> dict[str, list]:
    """Columns of the interactions (non-impression events, one visit per user and item merged)."""
    cols: dict[str, list] = {"user": [], "item": [], "strength": [], "ts_ms": [], "scenario": [], "session": []}
    last: dict[str, int] = {}  # user -> row of their latest interaction
    request: list[str] = []  # per row, the request id of its first event
    for event in events:
        if event.type == events_pb2.IMPRESSION:
            continue
        row = last.get(event.user_id)
        if (row is not None and cols["item"][row] == event.item_id
                and event.ts_ms - cols["ts_ms"][row] <= merge_window_ms
                and (not event.request_id or not request[row] or event.request_id == request[row])):
            cols["strength"][row] = max(cols["strength"][row], float(event.type))
            continue
        last[event.user_id] = len(cols["user"])
        request.append(event.request_id)
        for key, value in (("user", event.user_id), ("item", event.item_id), ("strength", float(event.type)),
                           ("ts_ms", event.ts_ms), ("scenario", event.scenario), ("session", event.session_id)):
            cols[key].append(value)
    return cols


def _catalog(events: list[events_pb2.Event], items_path: str | None) -> dict[str, CatalogItem]:
    """The catalog file's items, plus every item seen only in events (category from its latest event)."""
    items: dict[str, CatalogItem] = {}
    if items_path is not None:
        for it in read_items(items_path):
            items[it.item_id] = CatalogItem(it.item_id, it.title or it.item_id, None, tuple(it.tags), it.category,
                                            it.brand, it.price if it.HasField("price") else None)
    seen: dict[str, str] = {}
    for event in events:
        if event.item_id not in items:
            category = event.item.category if event.HasField("item") else ""
            if category or event.item_id not in seen:
                seen[event.item_id] = category
    for item_id, category in seen.items():
        items[item_id] = CatalogItem(item_id, item_id, None, (), category)
    return items


def load_event_log(path: str, items_path: str | None = None, fmt: str | None = None, order: str = "sort",
                   tolerance_ms: int = 1000, merge_window_ms: int = HOUR_MS,
                   max_events: int = MAX_EVENTS, progress: bool = False) -> InteractionLog:
    """An event log (and optional catalog file) as an `InteractionLog`; see the module docstring."""
    if items_path is not None and not Path(items_path).is_file():
        raise FileNotFoundError(f"no such catalog file: {items_path}")
    events: list[events_pb2.Event] = []
    for event in read_events(path, fmt):
        if len(events) >= max_events:
            raise ValueError(f"{path}: more than {max_events:,} events; the loader holds the log in memory to "
                             "check its order: split it, or publish it with `streamrank produce` as it is")
        events.append(event)
        if progress and len(events) % 500_000 == 0:
            log.info("%s: read %d events", path, len(events))
    if not events:
        raise ValueError(f"{path}: the log has no events")
    events = time_ordered(events, path, order, tolerance_ms)
    cols = _interactions(events, merge_window_ms)
    if not cols["user"]:
        raise ValueError(f"{path}: no click, add-to-cart or purchase events, so nothing to learn from")
    ratings = build_ratings(cols["user"], cols["item"], cols["strength"], ts_ms=cols["ts_ms"],
                            scenario=cols["scenario"], session=cols["session"])
    has_impressions = any(e.type == events_pb2.IMPRESSION for e in events)
    return InteractionLog(name=dataset_label(path), ratings=ratings, items=_catalog(events, items_path), users={},
                          purchase_min=float(events_pb2.PURCHASE), cart_min=float(events_pb2.ADD_TO_CART),
                          source="eventlog",
                          events=tuple(events) if has_impressions else None)
