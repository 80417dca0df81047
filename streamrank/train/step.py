"""What the online learner's micro-batch stages hand each other: a prepared batch, a step's report."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from streamrank.features.batch import Batch
from streamrank.train.label_policy import FAKE_NEGATIVE, Scored
from streamrank.v1 import features_pb2


@dataclass
class StepReport:
    """What one micro-batch did."""

    learned: int
    duplicates: int
    skipped_non_finite: bool
    restored: bool
    loss: float
    # The predictions made before learning: sample ids, impression times, labels, probabilities.
    predictions: Scored | None = None


@dataclass
class PreparedBatch:
    """A micro-batch after `prepare`: the fresh samples and their tensors, ready for `apply`."""

    received: int  # samples handed in (duplicates included)
    fresh: list[features_pb2.TrainingSample]
    keys: list[str]  # what each fresh sample is deduplicated and counted by (sample id, "+label" for positives)
    stamps: list[int]  # impression times of the fresh samples
    now: int  # newest impression time of the batch
    batch: Batch | None
    recycled: dict[str, list[int]]  # per vocabulary, rows this batch's encoding handed to new ids
    generation: int  # the learner's vocabulary generation it was encoded against (a restore starts a new one)
    replay_batch: Batch | None = None  # drawn from the replay buffer (samples learned before this batch)
    # a batch holding fake_negative samples: which fresh rows are (None: none are) and each row's emission
    # (what decides whether its prediction is scored now or waits for its final label), and the
    # window-closed emissions that bring final labels (not learned from)
    fn_rows: np.ndarray | None = None
    emissions: np.ndarray | None = None
    finals: list[features_pb2.TrainingSample] | None = None


def key_crc(sample_id: str) -> int:
    """A sample key's CRC-32: the learner sums them into `learned_hash`, the order-free digest of what it learned."""
    return zlib.crc32(sample_id.encode())


def policy_rows(fresh: list[features_pb2.TrainingSample]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Which samples are fake_negative emissions, and each one's emission (None, None: no fake_negative)."""
    fn_rows = np.array([s.label_policy == FAKE_NEGATIVE for s in fresh])
    if not fn_rows.any():
        return None, None
    return fn_rows, np.array([s.emission for s in fresh])
