"""Turns an interaction-only log (MovieLens ratings) into the request stream the pipeline expects.

The protocol (docs/interaction-only-logs.md has the long form):

- Every rating, in chronological order (`Ratings` order: by second, ties in file order), becomes one
  ranked *request* ``{dataset}-{i}`` (``i`` = the rating's chronological index) that showed the rated
  item plus ``negatives`` other items.
- Negatives are drawn from the item popularity distribution, popularity = number of ratings of the
  item over the *whole* log (so items nobody rated are never shown, and a film that becomes popular
  later is already shown more often early on: a deliberate, documented simplification that matches
  the usual offline protocol). A negative is never the rated item and never repeats within a request
  (a colliding draw is redrawn).
- The slate is shuffled, so the rated item's `position` is uniform over 0..negatives.
- Events per request: one IMPRESSION per slate item, then a CLICK on the rated item, then a PURCHASE
  when the rating is >= 4. They share `request_id` and `session_id`; event ids are
  ``{request}-imp-{position}``, ``{request}-clk`` and ``{request}-buy``.
- Event time: a request's impressions are at ``ts_s * 1000 + 3 * r`` ms, its click 1 ms and its purchase
  2 ms later, where ``r`` is the rank of the rating among the *same user's* ratings in that second (up
  to 30 in ML-1M). A user's events are therefore strictly increasing in time and in stream order, and
  impressions always precede their click. Across users, event time may step back by a few ms within
  one second; the stream order is the rating order.
- Sessions: a user's next rating opens a new session when it comes more than `session_gap_ms` (30
  minutes) after their previous one; ids are ``{user}/s{n}``.
- Scenario: ``"{field}:{value}"`` of a user attribute (default the age, e.g. ``"age:25"``), or empty.
- Item attributes on every event: category = the film's first genre.

Everything is a pure function of (data set, negatives, seed, ...): the random draws come from a numpy
Generator seeded with ``(seed, chunk index)``, so a `limit` yields a prefix of the full stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Generic, TypeVar

import numpy as np

from streamrank.data.dataset import CatalogItem, InteractionLog, UserProfile
from streamrank.data.movielens import MovieLens
from streamrank.v1 import events_pb2

T = TypeVar("T")

CHUNK = 4096  # ratings whose negatives are drawn together (part of the stream's definition: keep it)
TIE_STEP_MS = 3  # impressions, click, purchase of one request use ts, ts + 1, ts + 2
SCENARIO_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(UserProfile) if f.name != "user_id")


class SizedIterator(Generic[T]):
    """An iterator that also knows how many items it yields in total (for progress bars)."""

    def __init__(self, iterator: Iterator[T], total: int) -> None:
        self._iterator = iterator
        self._total = total

    def __iter__(self) -> SizedIterator[T]:
        return self

    def __next__(self) -> T:
        return next(self._iterator)

    def __len__(self) -> int:
        return self._total


def item_popularity(ml: MovieLens) -> np.ndarray:
    """Interactions per item over the whole log, indexed by `ml.ratings.item_code` (int64)."""
    return np.bincount(ml.ratings.item_code, minlength=len(ml.ratings.item_vocab)).astype(np.int64)


def sample_negatives(rng: np.random.Generator, positives: np.ndarray, negatives: int,
                     popularity: np.ndarray) -> np.ndarray:
    """(len(positives), negatives) item codes drawn in proportion to `popularity`.

    No row contains its positive or the same item twice: colliding draws are redrawn (vectorised,
    column by column). Items with zero popularity are never drawn.
    """
    n = positives.shape[0]
    out = np.empty((n, negatives), dtype=np.int64)
    if negatives == 0 or n == 0:
        return out
    if int(np.count_nonzero(popularity)) < negatives + 1:
        raise ValueError(f"cannot draw {negatives} distinct negatives: only "
                         f"{int(np.count_nonzero(popularity))} items have any interaction")
    cumulative = np.cumsum(popularity)
    total = int(cumulative[-1])

    def draw(size: int) -> np.ndarray:
        # Exact integer inverse-CDF sampling: zero-popularity items own an empty interval.
        return np.searchsorted(cumulative, rng.integers(0, total, size=size), side="right")

    out[:] = draw(n * negatives).reshape(n, negatives)
    for j in range(negatives):
        while True:
            column = out[:, j]
            bad = column == positives
            if j:
                bad |= (out[:, :j] == column[:, None]).any(axis=1)
            count = int(np.count_nonzero(bad))
            if not count:
                break
            out[bad, j] = draw(count)
    return out


def scenario_of_users(users: dict[str, UserProfile], field: str | None) -> dict[str, str]:
    """User id -> scenario ("<field>:<value>", ages as ML-1M buckets), as the producer writes it on events;
    {} for field None/"none"; ValueError for a field MovieLens users do not have."""
    if field is None or field.lower() in {"", "none"}:
        return {}
    if field not in SCENARIO_FIELDS:
        raise ValueError(f"unknown scenario field {field!r}; "
                         f"expected one of none, {', '.join(SCENARIO_FIELDS)}")
    scenario: dict[str, str] = {}
    for user_id, user in users.items():
        value = getattr(user, field)
        if field == "age" and value is not None:
            value = age_bucket(int(value))
        scenario[user_id] = "" if value is None or value == "" else f"{field}:{value}"
    return scenario


# ML-1M's age buckets (lower bounds: under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+).
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)


def age_bucket(age: int) -> int:
    """The ML-1M age bucket of an age, so ML-100K's raw ages give the same 7 scenarios as ML-1M."""
    bucket = AGE_BUCKETS[0]
    for lower in AGE_BUCKETS:
        if age >= lower:
            bucket = lower
    return bucket


def _category(item: CatalogItem | None) -> str:
    return item.main_category if item is not None else ""


SCENARIO_COLUMN = "scenario"  # an event log's own per-event scenario
SAMPLINGS = ("popularity", "uniform")
POOLS = ("log", "catalog", "past")


def resolve_scenario_field(ml: InteractionLog, field: str | None) -> str | None:
    """`auto` -> the log's natural scenario: the events' own `scenario` for an event log, a MovieLens
    user's age otherwise; other values are checked (a user field, `scenario`, or none)."""
    if field == "auto":
        return SCENARIO_COLUMN if ml.ratings.scenario is not None else "age"
    if field == SCENARIO_COLUMN and ml.ratings.scenario is None:
        raise ValueError("scenario field 'scenario' needs an event log (MovieLens has no per-event scenario)")
    if field != SCENARIO_COLUMN:
        scenario_of_users({}, field)  # validates the name
    return field


def user_scenarios(ml: InteractionLog, field: str | None) -> dict[str, str]:
    """User id -> one scenario: the user field's value (MovieLens), or for an event log's own `scenario`
    column the user's most frequent one (ties: the earliest), which the per-user offline splits need."""
    field = resolve_scenario_field(ml, field)
    if field != SCENARIO_COLUMN:
        return scenario_of_users(ml.users, field)
    counts: dict[str, dict[str, int]] = {}
    for user, scenario in zip(ml.ratings.user_id.tolist(), ml.ratings.scenario.tolist(), strict=True):
        if scenario:
            per = counts.setdefault(user, {})
            per[scenario] = per.get(scenario, 0) + 1
    return {u: max(per, key=per.__getitem__) for u, per in counts.items()}


def interaction_contexts(ml: InteractionLog, scenario_field: str | None,
                         session_gap_ms: int) -> Iterator[tuple[str, str]]:
    """(scenario, session) of each interaction, in log order: the event log's own when it has them, else the
    user field's scenario and a session that a silence longer than `session_gap_ms` ends (``{user}/s{n}``).
    The one definition the request stream and the replay simulator share."""
    r = ml.ratings
    field = resolve_scenario_field(ml, scenario_field)
    by_user = {} if field == SCENARIO_COLUMN else scenario_of_users(ml.users, field)
    own_scenario = r.scenario.tolist() if field == SCENARIO_COLUMN else None
    own_session = r.session.tolist() if r.session is not None else None
    last: dict[str, int] = {}
    number: dict[str, int] = {}
    for n, (user, ts) in enumerate(zip(r.user_id.tolist(), r.ts_ms.tolist(), strict=True)):
        previous = last.get(user)
        if previous is None or ts - previous > session_gap_ms:
            number[user] = number.get(user, 0) + 1
        last[user] = ts
        scenario = own_scenario[n] if own_scenario is not None else by_user.get(user, "")
        yield scenario, (own_session[n] if own_session is not None else "") or f"{user}/s{number[user]}"


def count_events(ml: MovieLens, negatives: int = 1, limit: int | None = None) -> int:
    """How many events `movielens_events` yields for these arguments (without generating them)."""
    m = len(ml.ratings) if limit is None else min(max(limit, 0), len(ml.ratings))
    strength = ml.ratings.rating[:m]
    second = strength >= ml.purchase_min
    if ml.cart_min is not None:
        second |= strength >= ml.cart_min
    return m * (negatives + 1) + m + int(np.count_nonzero(second))


def _negative_pool(ml: InteractionLog, sampling: str, pool: str) -> tuple[list[str], np.ndarray]:
    """Item ids the stream may show (the log's items first, in code order) and their draw weights; for the
    `past` pool the weights are recomputed per chunk."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown negative sampling {sampling!r}; expected one of {', '.join(SAMPLINGS)}")
    if pool not in POOLS:
        raise ValueError(f"unknown negative pool {pool!r}; expected one of {', '.join(POOLS)}")
    vocab = list(ml.ratings.item_vocab)
    popularity = item_popularity(ml)
    if pool == "catalog":
        known = set(vocab)
        vocab += [i for i in ml.items if i not in known]
        popularity = np.concatenate([popularity, np.zeros(len(vocab) - len(popularity), dtype=np.int64)]) + 1
    if sampling == "uniform":
        popularity = (popularity > 0).astype(np.int64)
    return vocab, popularity


def _generate(ml: InteractionLog, negatives: int, seed: int, contexts: Iterator[tuple[str, str]], limit: int,
              sampling: str, vocab: list[str], popularity: np.ndarray, pool: str) -> Iterator[events_pb2.Event]:
    ratings = ml.ratings
    n = len(ratings)
    category = [_category(ml.items.get(item_id)) for item_id in vocab]
    last_ts: dict[str, int] = {}
    tie_rank: dict[str, int] = {}
    Event, IMP = events_pb2.Event, events_pb2.IMPRESSION
    suffix = {events_pb2.CLICK: "clk", events_pb2.ADD_TO_CART: "cart", events_pb2.PURCHASE: "buy"}
    seen_so_far = np.zeros(len(vocab), dtype=np.int64)
    prefix = ml.name
    for chunk, start in enumerate(range(0, n, CHUNK)):
        if start >= limit:
            return
        stop = min(n, start + CHUNK)
        rng = np.random.default_rng([seed, chunk])
        positives = ratings.item_code[start:stop].astype(np.int64)
        weights = popularity
        if pool == "past":  # the log up to the end of this chunk: no look-ahead beyond CHUNK interactions
            np.add.at(seen_so_far, positives, 1)
            weights = seen_so_far if sampling == "popularity" else (seen_so_far > 0).astype(np.int64)
        slate = np.concatenate([positives[:, None], sample_negatives(rng, positives, negatives, weights)], axis=1)
        order = np.argsort(rng.random(slate.shape), axis=1)
        shown = np.take_along_axis(slate, order, axis=1).tolist()
        positive_at = np.argmin(order, axis=1).tolist()  # where column 0 (the rated item) landed
        users = ratings.user_id[start:stop].tolist()
        millis = ratings.ts_ms[start:stop].tolist()
        stars = ratings.rating[start:stop].tolist()
        for row in range(min(stop, limit) - start):
            index = start + row
            user = users[row]
            ts_ms = millis[row]
            scenario, session = next(contexts)
            tie_rank[user] = tie_rank[user] + 1 if last_ts.get(user) == ts_ms else 0
            last_ts[user] = ts_ms
            base = ts_ms + TIE_STEP_MS * tie_rank[user]
            request = f"{prefix}-{index}"
            common = {"user_id": user, "session_id": session, "request_id": request, "scenario": scenario}
            for position, code in enumerate(shown[row]):
                cat = category[code]
                yield Event(event_id=f"{request}-imp-{position}", item_id=vocab[code], type=IMP, ts_ms=base,
                            position=position, item={"category": cat} if cat else None, **common)
            code = shown[row][positive_at[row]]
            cat = category[code]
            attrs = {"category": cat} if cat else None
            for step, kind in enumerate(ml.funnel(stars[row]), start=1):
                yield Event(event_id=f"{request}-{suffix[kind]}", item_id=vocab[code], type=kind, ts_ms=base + step,
                            position=positive_at[row], item=attrs, **common)


def movielens_events(ml: InteractionLog, negatives: int = 1, seed: int = 0, scenario_field: str | None = "auto",
                     session_gap_ms: int = 30 * 60_000, limit: int | None = None, sampling: str = "popularity",
                     pool: str = "log") -> SizedIterator[events_pb2.Event]:
    """The request stream of an interaction-only log: impressions (the item interacted with + sampled
    negatives), then the click and, by the interaction's strength, the add-to-cart or purchase.

    See the module docstring for the exact protocol. `limit` caps the number of interactions (requests)
    used and yields a prefix of the unlimited stream. The iterator has a `len()` (the event count).
    `sampling` (popularity/uniform) and `pool` (log: every item interacted with in the whole log; catalog:
    every catalog item, popularity + 1; past: items interacted with so far) choose the negatives; the
    defaults are the MovieLens protocol. `scenario_field` `auto` is a MovieLens user's age or an event log's
    own scenario.
    """
    if negatives < 0:
        raise ValueError(f"negatives must be >= 0, got {negatives}")
    if session_gap_ms <= 0:
        raise ValueError(f"session_gap_ms must be > 0, got {session_gap_ms}")
    resolve_scenario_field(ml, scenario_field)  # validate the field name now, not at the first next()
    vocab, popularity = _negative_pool(ml, sampling, pool)
    cap = len(ml.ratings) if limit is None else min(max(limit, 0), len(ml.ratings))
    total = count_events(ml, negatives, cap)
    contexts = interaction_contexts(ml, scenario_field, session_gap_ms)
    return SizedIterator(_generate(ml, negatives, seed, contexts, cap, sampling, vocab, popularity, pool), total)


request_events = movielens_events  # the generic name; `movielens_events` predates the dataset layer


def display_title(item: CatalogItem) -> str:
    """`Title (Year)`, the usual MovieLens display form (just the title when the year is unknown)."""
    return f"{item.title} ({item.year})" if item.year is not None else item.title


def movielens_items(ml: InteractionLog) -> SizedIterator[events_pb2.Item]:
    """The catalog of a log as Items: title ("Title (Year)" for films), category (explicit, else the first
    genre), tags, brand and price as the catalog has them."""
    def generate() -> Iterator[events_pb2.Item]:
        for item in ml.items.values():
            yield events_pb2.Item(item_id=item.item_id, title=display_title(item), category=item.main_category,
                                  tags=list(item.genres), brand=item.brand, price=item.price)
    return SizedIterator(generate(), len(ml.items))


catalog_items = movielens_items  # the generic name


def log_events(ml: InteractionLog, limit: int | None = None, **stream: object) -> SizedIterator[events_pb2.Event]:
    """What to publish for a log: its own events when it has impressions (with `limit`, the events before
    the request of interaction number `limit` began), else the synthesised request stream of its first `limit`
    interactions."""
    if ml.events is not None:
        events: tuple[events_pb2.Event, ...] | list[events_pb2.Event] = ml.events
        if limit is not None and limit < len(ml.ratings):
            first = max(limit, 0)
            cut = _request_start(ml.events, str(ml.ratings.user_id[first]), int(ml.ratings.ts_ms[first]))
            events = [e for e in ml.events if e.ts_ms < cut]
        return SizedIterator(iter(events), len(events))
    return movielens_events(ml, limit=limit, **stream)  # type: ignore[arg-type]


def _request_start(events: tuple[events_pb2.Event, ...], user: str, ts_ms: int) -> int:
    """When the request of the user's interaction at `ts_ms` began (its first impression), so that a cut
    there leaves no impression without its click; `ts_ms` when the interaction names no request."""
    request = next((e.request_id for e in events if e.ts_ms == ts_ms and e.user_id == user
                    and e.type != events_pb2.IMPRESSION), "")
    if not request:
        return ts_ms
    return min([ts_ms, *(e.ts_ms for e in events if e.request_id == request)])
