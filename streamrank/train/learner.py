"""Test-then-train on micro-batches of training samples, with growing vocabularies and a non-finite guard.

No Kafka here: the online trainer feeds decoded samples in, and checkpoints `state()`. Everything a
restart needs (weights, optimizer, vocabularies, window, counters) is in that state.
"""

from __future__ import annotations

import copy
import logging
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamrank.config import Settings
from streamrank.features.raw import RawExample
from streamrank.features.spec import FeatureSpec
from streamrank.features.tensorize import Tensorizer
from streamrank.features.vocab import advance_clock, expire_all, vocab_stats
from streamrank.models.factory import Ranker, build_model, is_scenario_preset, model_from_config, same_architecture
from streamrank.train.offline import pick_device, train_step
from streamrank.train.prequential import PrequentialWindow
from streamrank.v1 import features_pb2

log = logging.getLogger(__name__)
# Sample ids remembered to drop duplicates (a worker replaying a batch after a crash re-sends its samples).
RECENT_IDS = 200_000


@dataclass
class StepReport:
    """What one micro-batch did."""

    learned: int
    duplicates: int
    skipped_non_finite: bool
    restored: bool
    loss: float
    # The predictions made before learning: sample ids, impression times, labels, probabilities.
    predictions: tuple[list[str], list[int], np.ndarray, np.ndarray] | None = None


def _crc(sample_id: str) -> int:
    return zlib.crc32(sample_id.encode())


class OnlineLearner:
    """One model learning from a stream of TrainingSamples."""

    def __init__(self, settings: Settings, preset: str, model: Ranker | None = None,
                 device: torch.device | None = None, seed: int = 0) -> None:
        self.settings = settings
        self.preset = preset
        self.device = device or pick_device()
        torch.manual_seed(seed)
        if model is None:
            scenarios = settings.scenario_list if is_scenario_preset(preset) else ()
            model = build_model(preset, FeatureSpec(scenarios=scenarios))
        self.model = model.to(self.device)
        self.tensorizer = Tensorizer(self.model.spec)
        self.optimizer = self._new_optimizer()
        self.window = PrequentialWindow(settings.prequential_window)
        self.steps = 0
        self.learned = 0
        # Sum of crc32(sample_id) over every sample learned, mod 2^64: order-independent, checkpointed,
        # so a test can prove that no sample was skipped or learned twice across restarts.
        self.learned_hash = 0
        self.duplicates = 0
        self.non_finite_batches = 0
        self.restores = 0
        self.trained_through_ms = 0
        self.last_expiry_ms = 0
        self.expired_ids = 0
        self._recent: deque[str] = deque(maxlen=RECENT_IDS)
        self._recent_set: set[str] = set()
        self._good: dict[str, Any] | None = None
        self.mark_good()

    # -- optimizer and the last good state ----------------------------------------------------------
    def _adamw(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.settings.train_lr,
                                 weight_decay=self.settings.train_weight_decay)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        opt = self._adamw()
        old = getattr(self, "optimizer", None)
        if old is not None:
            # Keep the moments of parameters whose shape did not change (grown tables restart theirs).
            old_state = {id(p): st for p, st in old.state.items()}
            for param in self.model.parameters():
                st = old_state.get(id(param))
                if st is not None and all(v.shape == param.shape for k, v in st.items() if k != "step"):
                    opt.state[param] = st
        return opt

    def mark_good(self) -> None:
        """Remembers vocabularies, weights and optimizer as the state to return to after a failure."""
        self._good = {"spec": self.model.spec.to_dict(), "model": copy.deepcopy(self.model.state_dict()),
                      "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def weights_finite(self) -> bool:
        """True when every weight is a finite number."""
        return all(torch.isfinite(p).all() for p in self.model.parameters())

    def restore_good(self) -> None:
        """Returns to the last good vocabularies, weights and optimizer state (after non-finite weights).

        The vocabularies come back too: rows grown or recycled since would otherwise map new ids to the
        restored weights of other ids, or not fit the restored tables.
        """
        assert self._good is not None
        spec = FeatureSpec.from_dict(self._good["spec"])
        model = same_architecture(self.model, spec).to(self.device)
        model.load_state_dict(self._good["model"])
        self.model = model
        self.tensorizer = Tensorizer(spec)
        self.optimizer = self._adamw()
        self.optimizer.load_state_dict(self._good["optimizer"])
        self.restores += 1

    # -- learning -----------------------------------------------------------------------------------
    def _dedupe(self, samples: list[features_pb2.TrainingSample]) -> list[features_pb2.TrainingSample]:
        fresh = []
        recent, recent_set = self._recent, self._recent_set
        for s in samples:
            if s.sample_id in recent_set:
                self.duplicates += 1
                continue
            if len(recent) == recent.maxlen:
                recent_set.discard(recent[0])
            recent.append(s.sample_id)
            recent_set.add(s.sample_id)
            fresh.append(s)
        return fresh

    def learn(self, samples: list[features_pb2.TrainingSample]) -> StepReport:
        """Scores the batch with the current model (prequential), then learns from it."""
        fresh = self._dedupe(samples)
        if not fresh:
            return StepReport(0, len(samples), False, False, float("nan"))
        examples = [RawExample.from_sample(s) for s in fresh]
        now = max(e.ts_ms for e in examples)
        self._maybe_expire(now)
        advance_clock(self.model.spec, now)
        batch = self.tensorizer.encode(examples, grow=True)
        if self.model.sync_vocab(self.optimizer):
            self.optimizer = self._new_optimizer()
        batch = batch.to(self.device)
        self.model.eval()
        with torch.no_grad(), self._autocast():
            probs = torch.sigmoid(self.model(batch).logits).float().cpu().numpy()
        assert batch.labels is not None
        labels = batch.labels.float().cpu().numpy()
        self.window.add(probs, labels)
        predictions = ([s.sample_id for s in fresh], [e.ts_ms for e in examples], labels, probs)
        with self._autocast():
            logs = train_step(self.model, batch, self.optimizer)
        skipped = bool(logs.get("skipped_non_finite"))
        restored = False
        if skipped:
            self.non_finite_batches += 1
            log.warning("non-finite loss or gradients: batch of %d samples skipped", len(fresh))
        if skipped or not self.weights_finite():
            # The batch never reached the weights; if they are bad anyway, go back to the last good state.
            if not self.weights_finite():
                self.restore_good()
                restored = True
            return StepReport(0, len(samples) - len(fresh), True, restored, float("nan"), predictions)
        self.steps += 1
        self.learned += len(fresh)
        self.learned_hash = (self.learned_hash + sum(_crc(s.sample_id) for s in fresh)) % (1 << 64)
        self.trained_through_ms = max(self.trained_through_ms, now)
        return StepReport(len(fresh), len(samples) - len(fresh), False, False, logs["loss_rank"], predictions)

    def _autocast(self) -> torch.autocast:
        """bf16 mixed precision on CUDA (no loss scaling needed); a disabled no-op on CPU."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=self.device.type == "cuda")

    def _maybe_expire(self, now: int) -> None:
        s = self.settings
        if not self.last_expiry_ms:
            self.last_expiry_ms = now
            return
        if now - self.last_expiry_ms < s.vocab_expire_every_ms:
            return
        self.last_expiry_ms = now
        freed = expire_all(self.model.spec, now - s.vocab_ttl_ms)
        self.expired_ids += sum(len(v) for v in freed.values())

    # -- checkpoint state ---------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Window metrics plus counters and vocabulary sizes (what a published version carries)."""
        vocab = {f"vocab_{name}_rows": float(v["rows"]) for name, v in vocab_stats(self.model.spec).items()}
        return {**{f"prequential_{k}": v for k, v in self.window.metrics().items()}, **vocab,
                "samples_learned": float(self.learned), "steps": float(self.steps),
                "duplicates": float(self.duplicates), "non_finite_batches": float(self.non_finite_batches),
                "restores": float(self.restores), "expired_ids": float(self.expired_ids)}

    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly here."""
        return {
            "preset": self.preset,
            "config": self.model.cfg.to_dict(),
            "spec": self.model.spec.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "window": self.window.state(),
            "counters": {"steps": self.steps, "learned": self.learned, "learned_hash": self.learned_hash,
                         "duplicates": self.duplicates, "non_finite_batches": self.non_finite_batches,
                         "restores": self.restores, "trained_through_ms": self.trained_through_ms,
                         "last_expiry_ms": self.last_expiry_ms, "expired_ids": self.expired_ids},
        }

    @classmethod
    def from_state(cls, settings: Settings, state: dict[str, Any], device: torch.device | None = None
                   ) -> OnlineLearner:
        """Rebuilds a learner from `state()` output."""
        spec = FeatureSpec.from_dict(state["spec"])
        model = model_from_config(spec, state["config"])
        model.load_state_dict(state["model"])
        learner = cls(settings, state["preset"], model=model, device=device)
        learner.optimizer.load_state_dict(state["optimizer"])
        learner.window = PrequentialWindow.from_state(state["window"])
        for key, value in state["counters"].items():
            setattr(learner, key, value)
        learner.mark_good()
        return learner
