"""Raw, untensorised inputs of the ranking models.

`RawExample` mirrors the `TrainingSample` protobuf message the stream worker emits, plus a few generic
profile fields (user profile, extra item fields, item tags) that offline data sets such as MovieLens have
and the protobuf does not (yet). The online trainer converts samples with `RawExample.from_sample`; the
offline benchmark builds `RawExample`s directly; both then go through the one `Tensorizer`.

A request splits into a user side (`RequestContext`: who, what they did, query, scenario) and candidates
(`Candidate`: the item and its counters). The scorer builds those two directly, so a request is never
expanded into C copies of the user's behaviour sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the generated module is only needed to convert messages
    from streamrank.v1.features_pb2 import BehaviorSequence, TrainingSample

# Values of streamrank.v1.EventType, repeated here so that offline code needs no protobuf import.
IMPRESSION, CLICK, ADD_TO_CART, PURCHASE = 1, 2, 3, 4


@dataclass
class Behaviors:
    """A behaviour sequence in columnar form, oldest first; all lists have the same length."""

    item_ids: list[str] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_proto(cls, seq: BehaviorSequence) -> Behaviors:
        """Convert a `streamrank.v1.BehaviorSequence`; a column whose length differs from item_ids (absent)
        gets defaults: CLICK, time 0, no category."""
        n = len(seq.item_ids)
        return cls(
            list(seq.item_ids),
            [int(t) for t in seq.types] if len(seq.types) == n else [CLICK] * n,
            list(seq.ts_ms) if len(seq.ts_ms) == n else [0] * n,
            list(seq.categories) if len(seq.categories) == n else [""] * n,
        )

    def last(self, n: int) -> Behaviors:
        """The `n` most recent behaviours (all of them when there are fewer)."""
        if n >= len(self.item_ids):
            return self
        if n <= 0:
            return Behaviors()
        return Behaviors(self.item_ids[-n:], self.types[-n:], self.ts_ms[-n:], self.categories[-n:])


@dataclass
class ItemAttrs:
    """Attributes of an item: the protobuf's ItemAttributes plus generic offline extras.

    `tags` is a multi-valued field (MovieLens genres); `fields` holds further single-valued categorical
    fields by name (MovieLens release year). Both are empty for protobuf samples.
    """

    category: str = ""
    brand: str = ""
    shop: str = ""
    price: float | None = None
    tags: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class Counts:
    """Counters of the target item and the user-item pair at impression time (ContextCounts)."""

    item_impressions: int = 0
    item_clicks: int = 0
    item_purchases: int = 0
    user_item_clicks: int = 0
    user_category_clicks: int = 0


@dataclass
class Labels:
    """Labels of one impression."""

    click: bool = False
    add_to_cart: bool = False
    purchase: bool = False


@dataclass
class RequestContext:
    """The user side of a request: shared by every candidate of that request."""

    user_id: str
    behaviors: Behaviors = field(default_factory=Behaviors)
    query: str = ""
    scenario: str = ""
    user_fields: dict[str, str] = field(default_factory=dict)


@dataclass
class Candidate:
    """One candidate item of a request, with the counters of the (user, item) pair."""

    item_id: str
    item: ItemAttrs = field(default_factory=ItemAttrs)
    counts: Counts = field(default_factory=Counts)


@dataclass
class RawExample:
    """One labelled impression with its point-in-time features (mirrors TrainingSample)."""

    user_id: str
    item_id: str
    behaviors: Behaviors = field(default_factory=Behaviors)
    item: ItemAttrs = field(default_factory=ItemAttrs)
    query: str = ""
    scenario: str = ""
    counts: Counts = field(default_factory=Counts)
    labels: Labels = field(default_factory=Labels)
    user_fields: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    ts_ms: int = 0

    def context(self) -> RequestContext:
        """The user side of this example (shares the lists, does not copy them)."""
        return RequestContext(self.user_id, self.behaviors, self.query, self.scenario, self.user_fields)

    def candidate(self) -> Candidate:
        """The item side of this example."""
        return Candidate(self.item_id, self.item, self.counts)

    @classmethod
    def from_sample(cls, sample: TrainingSample) -> RawExample:
        """Convert a `streamrank.v1.TrainingSample` message; absent optional fields get defaults."""
        it = sample.item
        price = it.price if it.HasField("price") else None
        c = sample.counts
        return cls(
            user_id=sample.user_id,
            item_id=sample.item_id,
            behaviors=Behaviors.from_proto(sample.behaviors),
            item=ItemAttrs(category=it.category, brand=it.brand, shop=it.shop, price=price),
            query=sample.query,
            scenario=sample.scenario,
            counts=Counts(c.item_impressions, c.item_clicks, c.item_purchases, c.user_item_clicks,
                          c.user_category_clicks),
            labels=Labels(sample.labels.click, sample.labels.add_to_cart, sample.labels.purchase),
            request_id=sample.request_id,
            ts_ms=sample.impression_ts_ms,
        )
