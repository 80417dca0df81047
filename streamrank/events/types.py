"""Event type names and their wire values, in one place."""

from __future__ import annotations

from streamrank.v1 import events_pb2

IMPRESSION = events_pb2.IMPRESSION
CLICK = events_pb2.CLICK
ADD_TO_CART = events_pb2.ADD_TO_CART
PURCHASE = events_pb2.PURCHASE

TYPE_BY_NAME: dict[str, int] = {
    "impression": IMPRESSION,
    "click": CLICK,
    "add_to_cart": ADD_TO_CART,
    "purchase": PURCHASE,
}
NAME_BY_TYPE: dict[int, str] = {v: k for k, v in TYPE_BY_NAME.items()}
# Position of each type in per-type counters ([impressions, clicks, add-to-carts, purchases]).
TYPE_INDEX: dict[int, int] = {IMPRESSION: 0, CLICK: 1, ADD_TO_CART: 2, PURCHASE: 3}
# Types that go into behaviour sequences and co-occurrence (everything but impressions).
INTERACTIONS: frozenset[int] = frozenset({CLICK, ADD_TO_CART, PURCHASE})


def parse_type(value: object) -> int:
    """Wire value of an event type given as a name ("click", "ADD_TO_CART") or a number; ValueError if unknown."""
    if isinstance(value, bool):
        raise ValueError(f"unknown event type {value!r}")
    if isinstance(value, int):
        if value in NAME_BY_TYPE:
            return value
        raise ValueError(f"unknown event type {value!r}")
    key = str(value).strip().lower()
    if key in TYPE_BY_NAME:
        return TYPE_BY_NAME[key]
    raise ValueError(f"unknown event type {value!r}; expected one of {', '.join(TYPE_BY_NAME)}")
