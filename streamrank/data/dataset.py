"""The dataset layer: any interaction log as chronological columns, a catalog and user profiles.

An `InteractionLog` is what every offline protocol (chronological split, leave-last-out, RecBole's
random split), the request-stream builder (`streamrank.data.requests`), the served retrieval model and
the replay simulator read. Its instances come from two loaders:

- `streamrank.data.movielens.load_movielens` (ML-100K, ML-1M): a rating is an interaction whose
  strength is its stars; >= 4 stars counts as a purchase (`purchase_min`), there is no add-to-cart.
- `streamrank.data.eventlog_dataset.load_event_log` (a JSON-lines/CSV log in the documented format): a
  click, add-to-cart or purchase event is an interaction whose strength is the event type's wire number
  (click 2, add-to-cart 3, purchase 4), so `cart_min=3`, `purchase_min=4`; scenario and session come from
  the events. A log with impressions also keeps its events, which are then used as they are.

`load_dataset` picks the loader from the name: ``ml-100k``/``ml-1m`` (or ``movielens:...``) or a path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from streamrank.v1 import events_pb2


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One catalog entry. `genres` are its tags in the catalog's order; `category` is its main category,
    given explicitly by a catalog file or, for MovieLens, the first genre (`main_category`)."""

    item_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]
    category: str = ""
    brand: str = ""
    price: float | None = None

    @property
    def main_category(self) -> str:
        """The category events and features carry: the explicit one, else the first tag."""
        return self.category or (self.genres[0] if self.genres else "")


@dataclass(frozen=True, slots=True)
class UserProfile:
    """A user's profile fields (MovieLens has them; an event log has none, so its users are absent).
    ML-1M `age` is the data set's age bucket (1, 18, 25, 35, 45, 50, 56)."""

    user_id: str
    age: int | None
    gender: str
    occupation: str
    zip_code: str


class Rating(NamedTuple):
    """One interaction as a small record (see `Ratings` for the columnar form)."""

    user_id: str
    item_id: str
    rating: float
    ts_s: int


@dataclass(frozen=True, eq=False)
class Ratings:
    """All interactions as aligned read-only numpy columns, in chronological order (stable tie-break).

    `user_code` / `item_code` index `user_vocab` / `item_vocab` (ids in order of first appearance in
    the file), which is what vectorised code (negative sampling, embedding tables) wants. `rating` is the
    interaction's strength (stars, or an event type's wire number). `ts_ms` is the event time in ms
    (MovieLens: seconds x 1000); `scenario` and `session` are per-interaction text columns of event logs
    (None for MovieLens, whose scenario is a user field and whose sessions are cut by a time gap).
    """

    user_id: np.ndarray  # object array of str
    item_id: np.ndarray  # object array of str
    rating: np.ndarray  # float32
    ts_s: np.ndarray  # int64, seconds since the Unix epoch
    user_code: np.ndarray  # int32
    item_code: np.ndarray  # int32
    user_vocab: tuple[str, ...]
    item_vocab: tuple[str, ...]
    ts_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    scenario: np.ndarray | None = None  # object array of str
    session: np.ndarray | None = None  # object array of str ("" = not given)

    def __len__(self) -> int:
        return int(self.ts_s.shape[0])

    def __getitem__(self, index: int) -> Rating:
        return Rating(str(self.user_id[index]), str(self.item_id[index]),
                      float(self.rating[index]), int(self.ts_s[index]))

    def __iter__(self) -> Iterator[Rating]:
        for u, i, r, t in zip(self.user_id.tolist(), self.item_id.tolist(),
                              self.rating.tolist(), self.ts_s.tolist(), strict=True):
            yield Rating(u, i, r, t)


def build_ratings(user_ids: list[str], item_ids: list[str], rating: np.ndarray | list[float],
                  ts_s: np.ndarray | list[int] | None = None, *, ts_ms: np.ndarray | list[int] | None = None,
                  scenario: list[str] | None = None, session: list[str] | None = None) -> Ratings:
    """Columnar, chronological, read-only `Ratings` from aligned columns in file order.

    Give the time as `ts_s` (seconds) or `ts_ms` (milliseconds). The sort is stable (ties keep the given
    order). Also handy to build small synthetic logs in tests.
    """
    n = len(user_ids)
    if (ts_s is None) == (ts_ms is None):
        raise ValueError("give exactly one of ts_s and ts_ms")
    millis = np.asarray(ts_ms if ts_ms is not None else np.asarray(ts_s, dtype=np.int64) * 1000, dtype=np.int64)
    extra = {"scenario": scenario, "session": session}
    if not len(item_ids) == len(rating) == len(millis) == n or any(v is not None and len(v) != n
                                                                    for v in extra.values()):
        raise ValueError("user_ids, item_ids, rating, the time and the optional columns must have the same length")
    user_vocab: dict[str, int] = {}
    item_vocab: dict[str, int] = {}
    user_code = np.fromiter((user_vocab.setdefault(u, len(user_vocab)) for u in user_ids),
                            dtype=np.int32, count=n)
    item_code = np.fromiter((item_vocab.setdefault(i, len(item_vocab)) for i in item_ids),
                            dtype=np.int32, count=n)
    stars = np.asarray(rating, dtype=np.float32)
    order = np.argsort(millis, kind="stable")  # ties keep the file's order
    users = np.array(list(user_vocab), dtype=object)
    items = np.array(list(item_vocab), dtype=object)
    user_code, item_code = user_code[order], item_code[order]
    arrays: dict[str, np.ndarray] = {
        "user_id": users[user_code] if n else np.empty(0, dtype=object),
        "item_id": items[item_code] if n else np.empty(0, dtype=object),
        "rating": stars[order], "ts_s": millis[order] // 1000, "user_code": user_code, "item_code": item_code,
        "ts_ms": millis[order],
    }
    for name, values in extra.items():
        if values is not None:
            column = np.empty(n, dtype=object)
            column[:] = values
            arrays[name] = column[order]
    for array in arrays.values():
        array.setflags(write=False)  # results are cached and shared: nobody may edit them in place
    return Ratings(**arrays, user_vocab=tuple(user_vocab), item_vocab=tuple(item_vocab))


@dataclass(frozen=True, eq=False)
class InteractionLog:
    """A loaded log: chronological interactions, the item catalog and the users' profiles.

    `items` may hold items nobody interacted with (ML-1M's unrated films, a catalog file's slow sellers).
    An interaction's funnel: strength >= `purchase_min` is a purchase, >= `cart_min` (when set) an
    add-to-cart, anything else a click. `events` holds the whole time-ordered event stream when the log
    came with impressions (it is then published as it is); None for interaction-only logs.
    """

    name: str
    ratings: Ratings
    items: dict[str, CatalogItem]
    users: dict[str, UserProfile]
    purchase_min: float = 4.0
    cart_min: float | None = None
    source: str = "movielens"  # or "eventlog": star ratings or event types
    events: tuple[events_pb2.Event, ...] | None = field(default=None, repr=False)

    @property
    def has_impressions(self) -> bool:
        """Whether the log came with its own impressions (then no request stream is synthesised)."""
        return self.events is not None

    def funnel(self, strength: float) -> tuple[int, ...]:
        """The event types after the impression that an interaction of this strength stands for."""
        if strength >= self.purchase_min:
            return (events_pb2.CLICK, events_pb2.PURCHASE)
        if self.cart_min is not None and strength >= self.cart_min:
            return (events_pb2.CLICK, events_pb2.ADD_TO_CART)
        return (events_pb2.CLICK,)

    def kind(self, strength: float) -> int:
        """The strongest event type of an interaction (what the replay simulator logs)."""
        return self.funnel(strength)[-1]


MOVIELENS_PREFIX = "movielens:"


def is_path(name: str) -> bool:
    """Whether a dataset name is a file path rather than a MovieLens name."""
    from streamrank.data.movielens import DATASETS

    return name.removeprefix(MOVIELENS_PREFIX) not in DATASETS


def load_dataset(name: str, items: str | None = None, fmt: str | None = None, order: str = "sort",
                 progress: bool = False) -> InteractionLog:
    """A log by name: ``ml-100k``/``ml-1m`` (optionally ``movielens:``-prefixed) or an event-log path.

    `items` (a catalog file), `fmt` (jsonl/csv) and `order` (``sort`` or ``refuse`` out-of-time-order
    events) apply to event logs; a MovieLens name with them is refused rather than silently ignoring them.
    """
    if not is_path(name):
        if items or fmt:
            raise ValueError(f"--items and --format apply to event-log files, not to {name}")
        from streamrank.data.movielens import load_movielens

        return load_movielens(name.removeprefix(MOVIELENS_PREFIX))  # type: ignore[arg-type]
    from streamrank.data.eventlog_dataset import load_event_log

    if not Path(name).is_file():
        raise FileNotFoundError(f"no such event log: {name} (or use ml-100k / ml-1m)")
    return load_event_log(name, items, fmt=fmt, order=order, progress=progress)


def dataset_label(name: str) -> str:
    """A short name for reports and file names: the MovieLens name, or the log file's stem."""
    if not is_path(name):
        return name.removeprefix(MOVIELENS_PREFIX)
    base = Path(name).name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".csv"):
        base = base.removesuffix(suffix)
    return base or "log"
