"""Columnar inputs of the tensoriser: one list per field over a batch, and how TrainingSamples become them.

`Tensorizer` turns columns into tensors in one place; each input form only lays its values out as columns.
`sample_columns` reads TrainingSample messages without building `RawExample`s (the online trainer's hot
path), and encodes each distinct behaviour sequence of a batch once: the impressions of one request carry
the same sequence, found by its serialised bytes (exact, and cheap next to turning a sequence's ids into
Python strings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamrank.features.raw import CLICK

if TYPE_CHECKING:
    from streamrank.features.spec import FeatureSpec
    from streamrank.v1.features_pb2 import TrainingSample


@dataclass
class UserColumns:
    """The user side of n rows. `items`/`categories`/`types` hold sequences already cut to the spec's
    max_seq_len; when `history_of` is set they are the batch's distinct sequences and row i has sequence
    history_of[i], otherwise one sequence per row."""

    user_ids: list[str]
    queries: list[str]
    scenarios: list[str]
    user_fields: list[list[str]]  # one column per spec.user_fields entry
    items: list[Sequence[str]]
    categories: list[Sequence[str]]
    types: list[Sequence[int]]
    history_of: list[int] | None = None


@dataclass
class ItemColumns:
    """The candidate side of n rows: ids and attributes, counters (5 per row, ContextCounts order), price
    (NaN when unknown) and the full behaviour count of each row's user."""

    item_ids: list[str]
    categories: list[str]
    brands: list[str]
    shops: list[str]
    item_fields: list[list[str]]  # one column per spec.item_fields entry
    tags: list[list[str]] | None
    counts: list[tuple[int, int, int, int, int]]
    prices: list[float]
    history_lens: list[int]


def sample_columns(samples: Sequence[TrainingSample], spec: FeatureSpec,
                   group_users: bool = False) -> tuple[UserColumns, ItemColumns, list[int]]:
    """Columns of TrainingSample messages, with the values `RawExample.from_sample` would give (absent
    columns of a sequence get CLICK / no category; the protobuf has no user, item-field or tag values), and
    each sample's user row. Without `group_users` there is one user row per sample; with it, samples with
    the same user side (user, query, scenario, behaviour sequence: a request's impressions) share one row,
    so the model's per-user work is done once for them (the layout the scorer uses for a request)."""
    t_max = spec.max_seq_len
    seen: dict[bytes, int] = {}
    rows: dict[tuple[str, str, str, int], int] = {}
    history_of: list[int] = []
    owner: list[int] = []
    user_rows: list[TrainingSample] = []
    items: list[Sequence[str]] = []
    cats: list[Sequence[str]] = []
    types: list[Sequence[int]] = []
    history_lens: list[int] = []
    for s in samples:
        seq = s.behaviors
        n = len(seq.item_ids)
        history_lens.append(n)
        key = seq.SerializeToString()
        idx = seen.get(key)
        if idx is None:
            idx = seen[key] = len(items)
            start = max(n - t_max, 0)
            items.append(seq.item_ids[start:])
            cats.append(seq.categories[start:] if len(seq.categories) == n else [""] * (n - start))
            types.append(seq.types[start:] if len(seq.types) == n else [CLICK] * (n - start))
        if group_users:
            row = rows.setdefault((s.user_id, s.query, s.scenario, idx), len(user_rows))
            if row == len(user_rows):
                user_rows.append(s)
                history_of.append(idx)
            owner.append(row)
        else:
            owner.append(len(user_rows))
            user_rows.append(s)
            history_of.append(idx)
    n_rows = len(samples)
    empty = [""] * len(user_rows)
    users = UserColumns(
        user_ids=[s.user_id for s in user_rows], queries=[s.query for s in user_rows],
        scenarios=[s.scenario for s in user_rows], user_fields=[empty for _ in spec.user_fields],
        items=items, categories=cats, types=types, history_of=history_of)
    its = [s.item for s in samples]
    cs = [s.counts for s in samples]
    item_cols = ItemColumns(
        item_ids=[s.item_id for s in samples], categories=[i.category for i in its],
        brands=[i.brand for i in its], shops=[i.shop for i in its],
        item_fields=[[""] * n_rows for _ in spec.item_fields], tags=None,
        counts=[(c.item_impressions, c.item_clicks, c.item_purchases, c.user_item_clicks, c.user_category_clicks)
                for c in cs],
        prices=[i.price if i.HasField("price") else math.nan for i in its],
        history_lens=history_lens)
    return users, item_cols, owner
