"""What a trainer learns from each emission of a label policy, and the predictions waiting for final labels.

Under the worker's `fake_negative` policy an impression is emitted three times (streamrank.stream.encode):
at impression time with every label false (a provisional negative), again when a label turns true (a
positive), and at its window's close with the final labels. The trainer learns from the first two, with
the correction `train_fake_negative` names (FNW weights in the loss, or FNC's calibration of scores), and
scores its prediction on the provisional negative against the final labels when the third arrives: the
prequential metrics and the guardrail see final labels, never provisional ones (docs/delayed-feedback.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from streamrank.train.losses import fnc_probability
from streamrank.train.prequential import PrequentialWindow
from streamrank.v1 import features_pb2

# Predictions that reached the prequential window: sample ids (dedupe keys), impression times, labels, scores.
Scored = tuple[list[str], list[int], np.ndarray, np.ndarray]

FAKE_NEGATIVE = features_pb2.LABEL_POLICY_FAKE_NEGATIVE
IMPRESSION = features_pb2.EMISSION_IMPRESSION
POSITIVE = features_pb2.EMISSION_POSITIVE
WINDOW_CLOSED = features_pb2.EMISSION_WINDOW_CLOSED


def route(samples: Sequence[features_pb2.TrainingSample], mode: str, label: str
          ) -> tuple[list[features_pb2.TrainingSample], list[str], list[features_pb2.TrainingSample], int]:
    """Splits a micro-batch by label policy and emission: (samples to learn from, their dedupe keys,
    window-closed emissions of a fake_negative stream (final labels, for evaluation only), how many
    emissions are not for this learner). A window-policy sample is learned as it comes.

    On a fake_negative stream: a provisional negative is learned at once; a positive emission is learned
    when the model's `label` is set in it, once (its key is the sample id + the label, so a later emission
    of the same impression for another label is a duplicate here); with `mode == "window"` only the
    window-closed emissions are learned, as if the worker ran the window policy.
    """
    learn: list[features_pb2.TrainingSample] = []
    keys: list[str] = []
    finals: list[features_pb2.TrainingSample] = []
    skipped = 0
    for s in samples:
        emission = s.emission
        if s.label_policy != FAKE_NEGATIVE or (mode == "window" and emission == WINDOW_CLOSED):
            learn.append(s)
            keys.append(s.sample_id)
        elif mode == "window":
            skipped += 1
        elif emission == WINDOW_CLOSED:
            finals.append(s)
        elif emission == IMPRESSION:
            learn.append(s)
            keys.append(s.sample_id)
        elif getattr(s.labels, label):
            learn.append(s)
            keys.append(f"{s.sample_id}\x1f+{label}")
        else:
            skipped += 1
    return learn, keys, finals, skipped


class PendingScores:
    """Predictions made on provisional negatives, by sample id, until their final labels arrive.

    Bounded: past `capacity` the oldest are dropped unscored (`dropped`), so a stream whose window-closed
    emissions never come (a worker on another policy, a lost partition) cannot grow the trainer without end.
    Checkpointed with the learner, so a restart still scores what it predicted before.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"the pending-score capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self._probs: dict[str, float] = {}  # insertion order = prediction order
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._probs)

    def put(self, ids: Sequence[str], probs: np.ndarray) -> None:
        """Remembers each id's prediction (the first one, should an id come twice)."""
        held = self._probs
        for sample_id, prob in zip(ids, probs.tolist(), strict=True):
            held.setdefault(sample_id, prob)
        excess = len(held) - self.capacity
        if excess > 0:
            for old in list(held)[:excess]:
                del held[old]
            self.dropped += excess

    def pop(self, ids: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """The predictions of the ids held (removed), and the positions in `ids` they belong to."""
        held = self._probs
        probs: list[float] = []
        found: list[int] = []
        for i, sample_id in enumerate(ids):
            prob = held.pop(sample_id, None)
            if prob is not None:
                probs.append(prob)
                found.append(i)
        return np.array(probs, dtype=np.float32), found

    def state(self) -> dict[str, Any]:
        """The held predictions (ids in order, probabilities) and the drop count, for the checkpoint."""
        return {"ids": list(self._probs), "probs": torch.tensor(list(self._probs.values()), dtype=torch.float32),
                "dropped": self.dropped}

    @classmethod
    def from_state(cls, capacity: int, state: dict[str, Any]) -> PendingScores:
        """Inverse of `state` (the newest `capacity` kept, should the setting have shrunk)."""
        pending = cls(capacity)
        pending.put(state["ids"], np.asarray(state["probs"], dtype=np.float32).reshape(-1))
        pending.dropped += int(state["dropped"])
        return pending


def score_predictions(window: PrequentialWindow, pending: PendingScores, mode: str, keys: list[str],
                      stamps: list[int], fresh: list[features_pb2.TrainingSample], fn_rows: np.ndarray | None,
                      emissions: np.ndarray | None, labels: np.ndarray, probs: np.ndarray) -> Scored:
    """Prequential bookkeeping of predictions made before learning: final labels go to the window now;
    provisional negatives wait in `pending` for theirs; positive emissions are not scored again (their
    impression was, as a negative). Under `mode == "fnc"` fake-negative scores are calibrated first
    (the model learned b on those rows: p = b / (1 - b)). Returns what reached the window."""
    if fn_rows is None or emissions is None:  # a window-policy batch: every label is final
        window.add(probs, labels)
        return keys, stamps, labels, probs
    if mode == "fnc":
        probs = np.where(fn_rows, fnc_probability(torch.from_numpy(probs)).numpy(), probs)
    waiting = np.flatnonzero(emissions == IMPRESSION)
    pending.put([fresh[i].sample_id for i in waiting], probs[waiting])
    now = np.flatnonzero((emissions != IMPRESSION) & (emissions != POSITIVE))
    if len(now):
        window.add(probs[now], labels[now])
    return [keys[i] for i in now], [stamps[i] for i in now], labels[now], probs[now]


def score_finals(window: PrequentialWindow, pending: PendingScores, label: str,
                 finals: list[features_pb2.TrainingSample] | None, scored: Scored | None) -> Scored | None:
    """Scores the waiting predictions that window-closed emissions bring final labels (`label`) for, after
    `scored` (what the batch scored already)."""
    if not finals:
        return scored
    probs, found = pending.pop([s.sample_id for s in finals])
    rows = [finals[i] for i in found]
    final_labels = np.array([float(getattr(s.labels, label)) for s in rows], dtype=np.float32)
    if len(rows):
        window.add(probs, final_labels)
    ids, stamps, ys, ps = scored or ([], [], np.zeros(0, np.float32), np.zeros(0, np.float32))
    return ([*ids, *(s.sample_id for s in rows)], [*stamps, *(s.impression_ts_ms for s in rows)],
            np.concatenate([ys, final_labels]), np.concatenate([ps, probs]))
