"""A shuffle pool between the samples topic and the optimizer: samples are predicted on arrival, learned later
in random order.

A stream arrives user by user (ML-1M's log is dominated by users who rate dozens of films in one session), so
a micro-batch cut from it holds one or two users, and consecutive steps pull the model towards each user in
turn. Shuffling the stream decorrelates the steps (docs/benchmarks/online-decomposition-ml-1m-din.md: +0.034
AUC when blocks of 20,000 samples are shuffled), but a shuffled stream would predict samples after later ones
were learned (look-ahead). The pool keeps the prequential protocol honest: each arriving sample is predicted
by the current model first, then waits here; while more than `capacity` samples wait, a micro-batch drawn
uniformly from them is learned. Learning is delayed by about `capacity` samples, predictions are not.

The pool holds the decoded samples with their dedup keys, not tensors: they are tensorised when learned, so
vocabulary expiry, growth and a restore of older vocabularies never meet rows encoded against other
vocabularies. It is not checkpointed: the trainer learns everything it holds (`drain`) before each checkpoint,
so a checkpoint's offsets cover only learned samples and a published version has learned every sample its
offsets name. Draws come from a seeded generator (reproducible runs).
"""

from __future__ import annotations

import numpy as np

from streamrank.v1 import features_pb2


class ShufflePool:
    """Up to `capacity` samples waiting to be learned (more, transiently, until `take` brings it back down)."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"shuffle pool capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._samples: list[features_pb2.TrainingSample] = []
        self._keys: list[str] = []
        self._rng = np.random.default_rng(seed)
        self.added = 0
        self.taken = 0

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, samples: list[features_pb2.TrainingSample], keys: list[str]) -> None:
        """Puts arriving samples (already predicted and deduplicated) in the pool."""
        if len(samples) != len(keys):
            raise ValueError(f"{len(samples)} samples but {len(keys)} keys")
        self._samples.extend(samples)
        self._keys.extend(keys)
        self.added += len(samples)

    def overfull(self) -> bool:
        """Whether more than `capacity` samples wait (a micro-batch should be learned)."""
        return len(self._samples) > self.capacity

    def take(self, n: int) -> tuple[list[features_pb2.TrainingSample], list[str]]:
        """Removes min(n, len) samples drawn uniformly without replacement and returns them with their keys,
        in the order drawn."""
        n = min(n, len(self._samples))
        if n <= 0:
            return [], []
        picked = self._rng.choice(len(self._samples), size=n, replace=False)
        out = [self._samples[i] for i in picked], [self._keys[i] for i in picked]
        keep = np.ones(len(self._samples), dtype=bool)
        keep[picked] = False
        self._samples = [s for s, k in zip(self._samples, keep, strict=True) if k]
        self._keys = [s for s, k in zip(self._keys, keep, strict=True) if k]
        self.taken += n
        return out
