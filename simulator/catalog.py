"""The synthetic catalog: items with a category, a brand, a price, a quality and a latent vector.

Generated from a seed, so one seed is one world. Categories have Zipf-like sizes; every brand belongs to
one category; prices are log-normal around a per-category median; an item's latent vector is its
category's centroid plus noise (unit length), so users who like a category like most of its items, and a
per-item quality term makes some items better for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamrank.v1 import events_pb2


@dataclass(frozen=True)
class CatalogParams:
    """Shape of the synthetic catalog (see docs/simulator.md for what each one changes)."""

    n_items: int = 2_000
    n_categories: int = 20
    n_brands: int = 100
    dim: int = 8
    # Zipf exponent of category sizes (0 = equal sizes).
    category_skew: float = 1.0
    # Spread of an item's vector around its category centroid (before normalising).
    item_noise: float = 0.6
    # Standard deviation of the per-item quality (added to every user's click logit).
    quality_sd: float = 0.5
    # log-normal price: per-category median between these bounds, sigma within a category.
    price_median_range: tuple[float, float] = (5.0, 300.0)
    price_sigma: float = 0.6

    def validate(self) -> None:
        """ValueError naming the first parameter that is out of range."""
        for name in ("n_items", "n_categories", "n_brands", "dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.n_brands < self.n_categories:
            raise ValueError("n_brands must be >= n_categories (every category has a brand)")
        if self.n_items < self.n_categories:
            raise ValueError("n_items must be >= n_categories (every category has an item)")


@dataclass(frozen=True, eq=False)
class Catalog:
    """Aligned arrays over items 0..n-1 (ids ``item-<n>``), plus the category centroids."""

    item_ids: tuple[str, ...]
    category: np.ndarray  # int, category index of each item
    brand: np.ndarray  # int, brand index of each item
    price: np.ndarray  # float
    log_price_rel: np.ndarray  # log(price / median price of the item's category)
    quality: np.ndarray  # float
    vectors: np.ndarray  # (n_items, dim), unit rows
    centroids: np.ndarray  # (n_categories, dim), unit rows
    brand_category: np.ndarray  # category of each brand

    def __len__(self) -> int:
        return len(self.item_ids)

    @staticmethod
    def category_name(index: int) -> str:
        """The category's name on the wire (``cat-<n>``)."""
        return f"cat-{index}"

    @staticmethod
    def brand_name(index: int) -> str:
        """The brand's name on the wire (``brand-<n>``)."""
        return f"brand-{index}"

    def attributes(self, index: int) -> events_pb2.ItemAttributes:
        """The item's attributes as events and Rank candidates carry them."""
        return events_pb2.ItemAttributes(category=self.category_name(int(self.category[index])),
                                         brand=self.brand_name(int(self.brand[index])),
                                         price=round(float(self.price[index]), 2))

    def items(self, updated_ms: int = 0) -> list[events_pb2.Item]:
        """Catalog entries for the items topic."""
        out = []
        for index, item_id in enumerate(self.item_ids):
            attrs = self.attributes(index)
            out.append(events_pb2.Item(item_id=item_id, title=f"{attrs.brand} {attrs.category} #{index}",
                                       category=attrs.category, brand=attrs.brand, price=attrs.price,
                                       updated_ms=updated_ms))
        return out

    def by_category(self) -> list[np.ndarray]:
        """Item indices of each category."""
        return [np.flatnonzero(self.category == c) for c in range(len(self.centroids))]


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def make_catalog(params: CatalogParams, rng: np.random.Generator) -> Catalog:
    """Draws a catalog from `rng` (deterministic for a seeded generator)."""
    params.validate()
    n, n_cat = params.n_items, params.n_categories
    centroids = _unit(rng.normal(size=(n_cat, params.dim)))
    sizes = 1.0 / np.arange(1, n_cat + 1) ** params.category_skew
    # Every category gets at least one item, the rest in proportion to the Zipf sizes.
    category = np.concatenate([np.arange(n_cat), rng.choice(n_cat, size=n - n_cat, p=sizes / sizes.sum())])
    rng.shuffle(category)
    brand_category = np.concatenate([np.arange(n_cat), rng.integers(0, n_cat, size=params.n_brands - n_cat)])
    brands_of = [np.flatnonzero(brand_category == c) for c in range(n_cat)]
    brand = np.array([rng.choice(brands_of[c]) for c in category], dtype=np.int64)
    low, high = np.log(params.price_median_range[0]), np.log(params.price_median_range[1])
    medians = np.exp(rng.uniform(low, high, size=n_cat))
    log_rel = rng.normal(0.0, params.price_sigma, size=n)
    price = np.round(medians[category] * np.exp(log_rel), 2).clip(0.01)
    vectors = _unit(centroids[category] + params.item_noise * rng.normal(size=(n, params.dim)))
    quality = rng.normal(0.0, params.quality_sd, size=n)
    return Catalog(item_ids=tuple(f"item-{i}" for i in range(n)), category=category.astype(np.int64), brand=brand,
                   price=price, log_price_rel=np.log(price / medians[category]), quality=quality, vectors=vectors,
                   centroids=centroids, brand_category=brand_category)
