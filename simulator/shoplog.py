"""A small synthetic shop: an orders log and its catalog, as a retailer would export them (CSV).

This is the log docs/your-own-data.md walks through and the tests run the whole pipeline on: no
impressions, only what a shop records (orders, optionally the clicks before them), in the documented
event-log format (docs/event-log-format.md). Users have one or two favourite categories and buy mostly
there, items within a category follow a Zipf popularity, so the models have something to learn.

    python -m simulator shoplog --out var/shop --orders 3000        # var/shop/orders.csv, var/shop/items.csv
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DAY_MS = 86_400_000
START_MS = 1_717_200_000_000  # 2024-06-01


@dataclass(frozen=True)
class ShopParams:
    """The shop's size and habits; everything is drawn from `seed`."""

    users: int = 300
    items: int = 240
    categories: int = 8
    orders: int = 3_000
    days: int = 30
    click_rate: float = 0.0  # share of orders preceded by a click on another item of the category that was
    # not bought (browsing); 0: an orders-only export
    favourite_share: float = 0.8  # share of a user's orders in their favourite categories
    seed: int = 0


def _catalog(p: ShopParams, rng: np.random.Generator) -> list[dict[str, object]]:
    brands = [f"brand{b}" for b in range(12)]
    rows = []
    for i in range(p.items):
        category = i % p.categories
        rows.append({"item_id": f"sku-{i:04d}", "title": f"Product {i} of category {category}",
                     "category": f"cat{category}", "brand": brands[int(rng.integers(len(brands)))],
                     "price": round(float(rng.uniform(3, 120)), 2), "tags": f"cat{category}|tag{i % 5}"})
    return rows


def shop_events(p: ShopParams) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(catalog rows, event rows in time order) of the shop; event rows use the CSV column names."""
    rng = np.random.default_rng(p.seed)
    catalog = _catalog(p, rng)
    by_category = [[i for i in range(p.items) if i % p.categories == c] for c in range(p.categories)]
    zipf = [1.0 / np.arange(1, len(items) + 1) ** 1.1 for items in by_category]
    zipf = [w / w.sum() for w in zipf]
    favourites = [rng.choice(p.categories, size=int(rng.integers(1, 3)), replace=False) for _ in range(p.users)]
    channel = ["app" if rng.random() < 0.6 else "web" for _ in range(p.users)]
    activity = rng.gamma(1.5, 1.0, size=p.users)
    buyers = rng.choice(p.users, size=p.orders, p=activity / activity.sum())
    times = np.sort(rng.integers(START_MS, START_MS + p.days * DAY_MS, size=p.orders))
    events: list[dict[str, object]] = []
    for n, (user, ts) in enumerate(zip(buyers.tolist(), times.tolist(), strict=True)):
        fav = favourites[user]
        category = int(rng.choice(fav)) if rng.random() < p.favourite_share else int(rng.integers(p.categories))
        item = by_category[category][int(rng.choice(len(by_category[category]), p=zipf[category]))]
        common = {"user_id": f"u{user:04d}", "item_id": catalog[item]["item_id"], "session_id": f"u{user:04d}-{n}",
                  "scenario": f"channel:{channel[user]}", "category": catalog[item]["category"]}
        if rng.random() < p.click_rate:
            other = by_category[category][int(rng.choice(len(by_category[category]), p=zipf[category]))]
            if other != item:
                events.append({"event_id": f"c{n}", "type": "click", "ts_ms": ts - 60_000,
                               **common, "item_id": catalog[other]["item_id"]})
        events.append({"event_id": f"o{n}", "type": "purchase", "ts_ms": ts, **common})
    events.sort(key=lambda e: int(e["ts_ms"]))  # type: ignore[arg-type]
    return catalog, events


def write_shop_log(out: str | Path, params: ShopParams | None = None,
                   grouped_by_user: bool = False) -> tuple[Path, Path]:
    """Writes `orders.csv` (time order, or grouped by user as some exports are) and `items.csv` under
    `out`; returns their paths."""
    p = params or ShopParams()
    catalog, events = shop_events(p)
    if grouped_by_user:
        events.sort(key=lambda e: str(e["user_id"]))  # stable: each user's events stay in time order
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "orders.csv", folder / "items.csv"
    for path, rows in zip(paths, (events, catalog), strict=True):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return paths
