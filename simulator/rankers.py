"""The built-in rankers: random, popularity and oracle orders of a candidate list (no scorer needed)."""

from __future__ import annotations

import numpy as np


def random_order(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of 0..n-1."""
    return rng.permutation(n)


def score_order(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of `scores`, highest first; ties broken at random (so equal scores do not favour list order)."""
    tiebreak = rng.random(len(scores))
    return np.lexsort((tiebreak, -np.asarray(scores, dtype=float)))


def builtin_order(name: str, rng: np.random.Generator, popularity: np.ndarray,
                  oracle: np.ndarray | None = None) -> np.ndarray:
    """The order of the candidates under a built-in ranker.

    `popularity` holds each candidate's observed click count (same length as the candidates); `oracle`
    its true click probability, which only the synthetic environment can supply.
    """
    if name == "random":
        return random_order(len(popularity), rng)
    if name == "popularity":
        return score_order(popularity, rng)
    if name == "oracle":
        if oracle is None:
            raise ValueError("the oracle ranker needs the synthetic environment's true scores")
        return score_order(oracle, rng)
    raise ValueError(f"unknown built-in ranker {name!r}")
