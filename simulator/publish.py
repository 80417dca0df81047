"""Turning simulated requests into `Event`s and sending them to Kafka (or keeping them in memory).

Events of one request share its `request_id` and `session_id`; ids are deterministic:
``<request>-imp-<position>`` for impressions, ``-clk-``, ``-atc-``, ``-buy-`` for a click, add-to-cart and
purchase of the item at that position. Events go to ``settings.topic("events")`` keyed by user id, the
catalog to the compacted ``settings.topic("items")`` keyed by item id (protobuf, as every producer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from streamrank.config import Settings
from streamrank.v1 import events_pb2

log = logging.getLogger(__name__)

Event = events_pb2.Event


def impression_events(request_id: str, user_id: str, session_id: str, scenario: str, query: str, ts_ms: int,
                      shown: Sequence[str], attributes: Sequence[events_pb2.ItemAttributes | None] | None = None,
                      first_position: int = 0) -> list[Event]:
    """One IMPRESSION per shown item, positions from `first_position`, all at `ts_ms`."""
    out = []
    for n, item_id in enumerate(shown):
        position = first_position + n
        event = Event(event_id=f"{request_id}-imp-{position}", user_id=user_id, item_id=item_id,
                      type=events_pb2.IMPRESSION, ts_ms=ts_ms, session_id=session_id, request_id=request_id,
                      position=position, scenario=scenario, query=query)
        if attributes is not None and attributes[n] is not None:
            event.item.CopyFrom(attributes[n])
        out.append(event)
    return out


_SUFFIX = {events_pb2.CLICK: "clk", events_pb2.ADD_TO_CART: "atc", events_pb2.PURCHASE: "buy"}


def interaction_event(kind: int, request_id: str, user_id: str, session_id: str, scenario: str, query: str,
                      ts_ms: int, item_id: str, position: int,
                      attributes: events_pb2.ItemAttributes | None = None) -> Event:
    """A CLICK / ADD_TO_CART / PURCHASE of the item shown at `position` of `request_id`."""
    event = Event(event_id=f"{request_id}-{_SUFFIX[kind]}-{position}", user_id=user_id, item_id=item_id, type=kind,
                  ts_ms=ts_ms, session_id=session_id, request_id=request_id, position=position, scenario=scenario,
                  query=query)
    if attributes is not None:
        event.item.CopyFrom(attributes)
    return event


class EventSink(Protocol):
    """Where simulated events go: Kafka (KafkaSink) or a list (MemorySink)."""

    def send(self, events: Iterable[Event]) -> None:
        """Queues events for delivery (in order per user)."""

    def publish_items(self, items: Iterable[events_pb2.Item]) -> None:
        """Publishes catalog entries."""

    def close(self) -> None:
        """Delivers what is queued; raises if some messages were refused."""


class MemorySink:
    """Keeps events and items in lists (tests, dry runs)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.items: list[events_pb2.Item] = []

    def send(self, events: Iterable[Event]) -> None:
        """Appends the events."""
        self.events.extend(events)

    def publish_items(self, items: Iterable[events_pb2.Item]) -> None:
        """Appends the items."""
        self.items.extend(items)

    def close(self) -> None:
        """Nothing to flush."""


class KafkaSink:
    """Sends events and items with kafka-python (the project's producer settings); counts what was sent.

    Creates the flow's topics first (with `settings.partitions`), as the embedded broker would otherwise
    auto-create them with one partition. `close()` flushes and raises RuntimeError if the broker refused
    any message.
    """

    def __init__(self, settings: Settings, create_topics: bool = True) -> None:
        from streamrank.events.producer import make_producer

        if create_topics:
            from streamrank.topics import ensure_topics

            ensure_topics(settings)
        self.settings = settings
        self.events_topic = settings.topic("events")
        self.items_topic = settings.topic("items")
        self._producer: Any = make_producer(settings, client_id="streamrank-simulator")
        self.sent = 0
        self.failures: list[BaseException] = []

    def _on_error(self, exc: BaseException) -> None:
        self.failures.append(exc)

    def send(self, events: Iterable[Event]) -> None:
        """Queues the events keyed by user id."""
        for event in events:
            self._producer.send(self.events_topic, key=event.user_id.encode(),
                                value=event.SerializeToString()).add_errback(self._on_error)
            self.sent += 1

    def publish_items(self, items: Iterable[events_pb2.Item]) -> None:
        """Queues catalog entries keyed by item id."""
        for item in items:
            self._producer.send(self.items_topic, key=item.item_id.encode(),
                                value=item.SerializeToString()).add_errback(self._on_error)

    def flush(self) -> None:
        """Waits until every queued message is acknowledged."""
        self._producer.flush()

    def close(self) -> None:
        """Flushes, closes the producer, and raises RuntimeError if any message was not delivered."""
        try:
            self._producer.flush()
        finally:
            self._producer.close()
        if self.failures:
            raise RuntimeError(f"{len(self.failures)} of {self.sent} simulator messages were not delivered; "
                               f"first error: {self.failures[0]!r}")
        log.info("simulator sent %d events to %s", self.sent, self.events_topic)
