"""Logged interactions to replay: from MovieLens (through the loaders) or the generic event-log format.

A `LoggedInteraction` is one thing a real user did that the replay turns into one request: the user, the
item they interacted with, when, the strongest type (click < add-to-cart < purchase), the scenario and
the session. Sources:

- ``movielens:ml-100k`` / ``movielens:ml-1m``: every rating in chronological order (stable tie-break);
  a rating >= 4 is a PURCHASE, otherwise a CLICK (as in docs/interaction-only-logs.md); scenario is
  ``age:<bucket>`` (or another user field); sessions split after 30 minutes of silence.
- a JSON-lines/CSV event log (docs/event-log-format.md): its CLICK / ADD_TO_CART / PURCHASE events in file
  order; impressions are skipped (the replay makes its own), and consecutive events of one user on one
  item (a click, then its purchase) are merged into one interaction of the strongest type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from streamrank.v1 import events_pb2

MOVIELENS_PREFIX = "movielens:"
_STRENGTH = {events_pb2.CLICK: 1, events_pb2.ADD_TO_CART: 2, events_pb2.PURCHASE: 3}


@dataclass(frozen=True)
class LoggedInteraction:
    """One logged interaction (the replay's unit of traffic)."""

    user_id: str
    item_id: str
    ts_ms: int
    kind: int  # events_pb2.CLICK / ADD_TO_CART / PURCHASE
    scenario: str = ""
    session_id: str = ""
    query: str = ""


def movielens_interactions(name: str, limit: int | None = None, scenario_field: str | None = "age",
                           session_gap_ms: int = 30 * 60_000) -> Iterator[LoggedInteraction]:
    """The ratings of a MovieLens data set as interactions (>= 4 stars: purchase, else click)."""
    from streamrank.data.movielens import load_movielens
    from streamrank.data.requests import PURCHASE_MIN_RATING, scenario_of_users

    ml = load_movielens(name)  # type: ignore[arg-type]
    scenario = scenario_of_users(ml.users, scenario_field)
    last: dict[str, int] = {}
    session: dict[str, int] = {}
    for n, rating in enumerate(ml.ratings):
        if limit is not None and n >= limit:
            return
        ts = rating.ts_s * 1000
        if rating.user_id not in last or ts - last[rating.user_id] > session_gap_ms:
            session[rating.user_id] = session.get(rating.user_id, 0) + 1
        last[rating.user_id] = ts
        kind = events_pb2.PURCHASE if rating.rating >= PURCHASE_MIN_RATING else events_pb2.CLICK
        yield LoggedInteraction(rating.user_id, rating.item_id, ts, kind, scenario.get(rating.user_id, ""),
                                f"{rating.user_id}/s{session[rating.user_id]}")


def events_to_interactions(events: Iterable[events_pb2.Event]) -> Iterator[LoggedInteraction]:
    """Interactions of an event stream: non-impression events, consecutive same user+item merged."""
    pending: LoggedInteraction | None = None
    for event in events:
        if event.type not in _STRENGTH:
            continue
        if pending is not None and pending.user_id == event.user_id and pending.item_id == event.item_id:
            if _STRENGTH[event.type] > _STRENGTH[pending.kind]:
                pending = LoggedInteraction(pending.user_id, pending.item_id, pending.ts_ms, event.type,
                                            pending.scenario, pending.session_id, pending.query)
            continue
        if pending is not None:
            yield pending
        pending = LoggedInteraction(event.user_id, event.item_id, event.ts_ms, event.type, event.scenario,
                                    event.session_id, event.query)
    if pending is not None:
        yield pending


def open_log(spec: str, limit: int | None = None, scenario_field: str | None = "age",
             fmt: str | None = None) -> Iterator[LoggedInteraction]:
    """Interactions from ``movielens:<name>`` or an event-log path; `limit` caps the interactions."""
    if spec.startswith(MOVIELENS_PREFIX):
        return movielens_interactions(spec[len(MOVIELENS_PREFIX):], limit, scenario_field)
    from streamrank.data.eventlog import read_events

    interactions = events_to_interactions(read_events(spec, fmt))
    if limit is None:
        return interactions
    return (x for n, x in zip(range(limit), interactions, strict=False) if n < limit)
