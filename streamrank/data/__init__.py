"""Data sources: MovieLens from installed packages, the generic event-log format, request streams."""

from streamrank.data.eventlog import EventLogError, read_events, read_items, write_events, write_items
from streamrank.data.movielens import (
    MovieItem,
    MovieLens,
    MovieLensError,
    MovieUser,
    Rating,
    Ratings,
    build_ratings,
    load_movielens,
)
from streamrank.data.requests import movielens_events, movielens_items

__all__ = [
    "EventLogError",
    "MovieItem",
    "MovieLens",
    "MovieLensError",
    "MovieUser",
    "Rating",
    "Ratings",
    "build_ratings",
    "load_movielens",
    "movielens_events",
    "movielens_items",
    "read_events",
    "read_items",
    "write_events",
    "write_items",
]
