"""A clustered synthetic embedding generator, for index tests and the index benchmark.

Real item embeddings are not uniform noise: items form groups (genres, brands) of very different sizes. The
generator is a Gaussian mixture on the unit sphere: `n_centres` centres drawn uniformly on the sphere (seeded
by `centre_seed`, shared by items and queries), mixture weights log-normal (sigma 1, so a few groups are much
larger than most), and each point is its centre plus isotropic Gaussian noise of expected norm `spread`
(relative to the unit centre), L2-normalised again. Items and queries use the same mixture with different
`seed`s, so queries are new points, never copies of items.
"""

from __future__ import annotations

import numpy as np

CHUNK = 65_536  # rows generated at a time (bounds temporary float32 memory)


def mixture_centres(n_centres: int, dim: int, centre_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm centres (n_centres, dim) and their mixture weights (summing to 1), both from `centre_seed`."""
    rng = np.random.default_rng(centre_seed)
    centres = rng.standard_normal((n_centres, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(mean=0.0, sigma=1.0, size=n_centres)
    return centres, weights / weights.sum()


def clustered_embeddings(n: int, dim: int = 64, n_centres: int = 4096, spread: float = 0.75, seed: int = 1,
                         centre_seed: int = 0) -> np.ndarray:
    """`n` L2-normalised float32 points (n, dim) from the mixture described in the module docstring.

    Deterministic for (n, dim, n_centres, spread, seed, centre_seed); memory is the output plus one chunk.
    """
    centres, weights = mixture_centres(n_centres, dim, centre_seed)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    scale = np.float32(spread / np.sqrt(dim))
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        picks = rng.choice(n_centres, size=stop - start, p=weights)
        block = centres[picks] + scale * rng.standard_normal((stop - start, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out
