"""Logged interactions to replay: from MovieLens (through the loaders) or the generic event-log format.

A `LoggedInteraction` is one thing a real user did that the replay turns into one request: the user, the
item they interacted with, when, the strongest type (click < add-to-cart < purchase), the scenario and
the session. Sources:

- ``movielens:ml-100k`` / ``movielens:ml-1m``: every rating in chronological order (stable tie-break);
  a rating >= 4 is a PURCHASE, otherwise a CLICK (as in docs/interaction-only-logs.md); scenario is
  ``age:<bucket>`` (or another user field); sessions split after 30 minutes of silence.
- a JSON-lines/CSV event log (docs/event-log-format.md), through the dataset layer
  (`streamrank.data.eventlog_dataset`): its CLICK / ADD_TO_CART / PURCHASE events in time order (sorted
  with a warning, or refused, when the file is not); impressions are skipped (the replay makes its own),
  and a user's click, add-to-cart and purchase of one item within an hour are one interaction of the
  strongest type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from streamrank.data.dataset import InteractionLog
from streamrank.data.requests import SizedIterator
from streamrank.v1 import events_pb2

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


def log_interactions(log: InteractionLog, skip: int = 0, limit: int | None = None,
                     scenario_field: str | None = "auto",
                     session_gap_ms: int = 30 * 60_000) -> SizedIterator[LoggedInteraction]:
    """The interactions of a log in time order, from the `skip`-th, at most `limit` of them.

    The kind is the strongest step of the interaction's funnel (a MovieLens rating >= 4 is a purchase);
    scenario and session are those the request stream gives the same interaction
    (`streamrank.data.requests.interaction_contexts`), counted over the whole log, so a replay that skips
    the warm-up sees the same sessions as one that does not.
    """
    from streamrank.data.requests import interaction_contexts, resolve_scenario_field

    if skip < 0 or (limit is not None and limit < 0):
        raise ValueError(f"skip and limit must be >= 0, got {skip} and {limit}")
    r = log.ratings
    stop = len(r) if limit is None else min(len(r), skip + limit)
    resolve_scenario_field(log, scenario_field)  # a bad field is an error now, not at the first next()
    contexts = interaction_contexts(log, scenario_field, session_gap_ms)

    def generate() -> Iterator[LoggedInteraction]:
        users, items, strength, millis = r.user_id.tolist(), r.item_id.tolist(), r.rating.tolist(), r.ts_ms.tolist()
        for n, (scenario, session) in zip(range(stop), contexts, strict=False):
            if n >= skip:
                yield LoggedInteraction(users[n], items[n], millis[n], log.kind(strength[n]), scenario, session)

    return SizedIterator(generate(), max(0, stop - skip))


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


def open_log(spec: str, limit: int | None = None, scenario_field: str | None = "auto",
             fmt: str | None = None, skip: int = 0, items: str | None = None,
             order: str = "sort") -> SizedIterator[LoggedInteraction]:
    """Interactions from ``movielens:<name>`` (or ``ml-100k``/``ml-1m``) or an event-log path, through the
    dataset layer (time order checked, sorted or refused by `order`); `skip` and `limit` count interactions."""
    from streamrank.data.dataset import is_path, load_dataset

    path_items = items if is_path(spec) else None
    return log_interactions(load_dataset(spec, path_items, fmt, order=order), skip, limit, scenario_field)
