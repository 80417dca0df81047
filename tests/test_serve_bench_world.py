"""The serve benchmark's 1M catalog is built from a trained item tower's vectors: each synthetic item stays
near the real item it was drawn from, at the stated relative spread, and the catalog is deterministic."""

from __future__ import annotations

import numpy as np

from streamrank.bench.serve_setup import SPREAD, scaled_catalog


def test_synthetic_items_are_real_item_vectors_plus_relative_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 64)).astype(np.float32) * rng.uniform(0.5, 3.0, size=(50, 1)).astype(np.float32)
    out = scaled_catalog(base, 70_000)  # more than one generation chunk
    assert out.shape == (70_000, 64) and out.dtype == np.float32
    assert np.array_equal(out, scaled_catalog(base, 70_000))
    assert not np.array_equal(out, scaled_catalog(base, 70_000, seed=4))
    # each vector's nearest real item (relative distance) is at about SPREAD times that item's norm
    dist = np.linalg.norm(out[:2000, None, :] - base[None], axis=2) / np.linalg.norm(base, axis=1)[None]
    nearest = dist.min(axis=1)
    assert abs(float(np.median(nearest)) - SPREAD) < 0.05
    # and the norms of the catalog follow the real items' (not one norm for all)
    norms = np.linalg.norm(out, axis=1)
    assert norms.max() / norms.min() > 3
