"""Test-then-train on micro-batches of training samples, with growing vocabularies and a non-finite guard.

No Kafka here: the online trainer feeds decoded samples in, and checkpoints `state()`. Everything a
restart needs (weights, optimizer, vocabularies, window, counters) is in that state.

A micro-batch goes through two stages: `prepare` (dedupe, vocabulary expiry and growth, tensorisation of
the TrainingSamples: Python feature code, which owns the vocabularies) and `apply` (embedding-table sync,
the prediction and the training step: tensor work, which owns the weights). `learn` runs both in turn;
`learn_stream` overlaps the prepare of the next batch with the apply of the current one in a background
thread. A prepared batch carries what its stage changed in the vocabularies (rows handed out again), so the
weights follow the vocabularies batch by batch even while the next batch is being prepared.

With a shuffle pool (`train_shuffle_pool`, streamrank/train/shuffle_pool.py) `learn` predicts the arriving
samples at once and learns micro-batches drawn at random from the pool instead (prepare + apply without
scoring); `drain` learns out what the pool holds, which the trainer does before every checkpoint.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from streamrank.config import Settings
from streamrank.features.batch import Batch
from streamrank.features.spec import FeatureSpec
from streamrank.features.tensorize import Tensorizer
from streamrank.features.vocab import advance_clock, expire_all, vocab_stats
from streamrank.models.factory import Ranker, build_model, is_scenario_preset, model_from_config, same_architecture
from streamrank.models.layers import drain_recycled
from streamrank.train.dedupe import RecentKeys
from streamrank.train.label_policy import PendingScores, Scored, route, score_finals, score_predictions
from streamrank.train.offline import pick_device, train_step_with_output
from streamrank.train.optim import ModelOptimizer
from streamrank.train.prequential import PrequentialWindow
from streamrank.train.replay import ReplayBuffer, concat_batches
from streamrank.train.shuffle_pool import ShufflePool
from streamrank.train.step import PreparedBatch, StepReport, key_crc, policy_rows
from streamrank.v1 import features_pb2

log = logging.getLogger(__name__)
# Sample ids remembered to drop duplicates (a worker replaying a batch after a crash re-sends its samples).
RECENT_IDS = 200_000


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
        self.generation = 0
        self.replay = ReplayBuffer(settings.train_replay_buffer, seed)
        self.replayed = 0  # samples learned again from the replay buffer (not in `learned`)
        # `train_shuffle_pool` > 0: samples are predicted on arrival and learned later, in random order
        self.pool = ShufflePool(settings.train_shuffle_pool, seed)
        # Set by the trainer while it is behind the stream: fresh batches are learned without replay steps
        # (replay spends spare capacity only; `train_replay_max_lag`), counted in `replay_paused_batches`.
        self.replay_paused = False
        self.replay_paused_batches = 0
        self.window = PrequentialWindow(settings.prequential_window)
        # fake_negative: predictions made on provisional negatives, scored when their final labels arrive
        self.pending = PendingScores(settings.prequential_pending)
        self.fake_negative_learned = 0  # samples of fake_negative streams learned (FNC calibrates their scores)
        self.not_learned = 0  # emissions this learner does not learn from (another policy's, another label's)
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
        self._recent = RecentKeys(RECENT_IDS)
        self._good: dict[str, Any] | None = None
        self.mark_good()

    # -- optimizer and the last good state ----------------------------------------------------------
    def _new_optimizer(self) -> ModelOptimizer:
        """Row-wise optimizer for the tables, AdamW for the dense layers: built once per model object
        (tables grow under it without a rebuild)."""
        s = self.settings
        return ModelOptimizer(self.model, s.train_lr, s.train_weight_decay, s.train_row_optimizer,  # type: ignore[arg-type]
                              s.train_row_lr or None)

    def mark_good(self) -> None:
        """Remembers vocabularies, weights and optimizer as the state to return to after a failure."""
        self._good = {"spec": self.model.spec.to_dict(), "model": copy.deepcopy(self.model.state_dict()),
                      "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def weights_finite(self) -> bool:
        """True when every weight is a finite number (one device sync for all parameters)."""
        return bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all())

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
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict(self._good["optimizer"])
        self.generation += 1  # batches prepared against the discarded vocabularies must be encoded again
        self.replay.clear()  # its rows may reference indices the restored vocabularies do not have
        self.restores += 1

    # -- learning -----------------------------------------------------------------------------------
    def _dedupe(self, samples: list[features_pb2.TrainingSample], keys: list[str]
                ) -> tuple[list[features_pb2.TrainingSample], list[str]]:
        fresh, fresh_keys = self._recent.fresh(samples, keys)
        self.duplicates += len(samples) - len(fresh)
        return fresh, fresh_keys

    def learn(self, samples: list[features_pb2.TrainingSample]) -> StepReport:
        """Scores the batch with the current model (prequential), then learns from it; with a shuffle pool,
        learns instead micro-batches drawn from the pool while it holds more than its capacity."""
        if self.pool.capacity:
            return self._learn_pooled(samples)
        return self.apply(self.prepare(samples))

    def _learn_pooled(self, samples: list[features_pb2.TrainingSample]) -> StepReport:
        """The shuffle-pool path: route and dedupe, predict the fresh samples now (no-grad forward, ids not
        seen yet at OOV), put them in the pool, then learn random micro-batches from it down to its capacity.
        The report's predictions are the arrival ones; its counts are what this call learned."""
        routed, keys, finals, skipped = route(samples, self.settings.train_fake_negative, self.model.spec.label)
        self.not_learned += skipped
        fresh, keys = self._dedupe(routed, keys)
        duplicates = len(routed) - len(fresh)
        if fresh:  # scored as the fresh step scores (finals after this batch's waiting predictions)
            predictions = self._predict_arrivals(fresh, keys, finals)
            self.pool.add(fresh, keys)
        else:
            predictions = self._score_finals(finals, None)
        learned, losses, failed, restored = 0, [], False, False
        while self.pool.overfull():
            report = self._learn_held(self.settings.train_batch_size)
            learned += report.learned
            failed |= report.skipped_non_finite
            restored |= report.restored
            if report.learned:
                losses.append(report.loss)
        loss = float(np.mean(losses)) if losses else float("nan")
        return StepReport(learned, duplicates, failed, restored, loss, predictions)

    def _predict_arrivals(self, fresh: list[features_pb2.TrainingSample], keys: list[str],
                          finals: list[features_pb2.TrainingSample] | None) -> Scored | None:
        """Predictions of arriving samples by the current model, through the same prequential bookkeeping as
        the fresh step's (`_score`)."""
        batch = self.tensorizer.encode_samples(fresh, grow=False,
                                               group_users=getattr(self.model, "groups_user_rows", False))
        self.model.eval()
        with torch.no_grad(), self._autocast():
            probs = torch.sigmoid(self.model(batch.to(self.device)).logits).float().cpu().numpy()
        assert batch.labels is not None
        fn_rows, emissions = policy_rows(fresh)
        stamps = [s.impression_ts_ms for s in fresh]
        arrived = PreparedBatch(len(fresh), fresh, keys, stamps, max(stamps), None, {}, self.generation,
                                fn_rows=fn_rows, emissions=emissions, finals=finals)
        return self._score(arrived, batch.labels.numpy(), probs)

    def _learn_held(self, n: int) -> StepReport:
        """Learns up to n samples drawn from the shuffle pool (already predicted, so not scored again)."""
        held, keys = self.pool.take(n)
        if not held:
            return StepReport(0, 0, False, False, float("nan"))
        stamps = [s.impression_ts_ms for s in held]
        return self.apply(self._encode(len(held), held, keys, stamps, max(stamps)), score=False)

    def drain(self) -> int:
        """Learns every sample the shuffle pool holds, in random micro-batches; returns how many were learned.
        The trainer calls it before each checkpoint (the pool is not checkpointed)."""
        learned = 0
        while len(self.pool):
            learned += self._learn_held(self.settings.train_batch_size).learned
        return learned

    def learn_stream(self, batches: Iterable[list[features_pb2.TrainingSample]]) -> Iterator[StepReport]:
        """`learn` over consecutive micro-batches, preparing batch k+1 in a background thread while batch k
        trains; yields one report per batch, in order. On 2 cores it is no faster than `learn` in turn (both
        stages need the GIL: docs/online-training.md, "Trainer speed"), so the trainer does not use it; the
        throughput benchmark measures it.

        While the generator is suspended the next batch may be being prepared: call nothing that reads
        the vocabularies (`state`, `mark_good`) until it is exhausted or closed.
        """
        if self.pool.capacity:  # learning lags arrival already: the pooled path in turn
            yield from (self.learn(samples) for samples in batches)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as pool:
            pending: Future[PreparedBatch] | None = None
            for samples in batches:
                ahead = pool.submit(self.prepare, samples)
                if pending is not None:
                    yield self.apply(pending.result())  # trains while `ahead` is prepared
                pending = ahead
            if pending is not None:
                yield self.apply(pending.result())

    def prepare(self, samples: list[features_pb2.TrainingSample]) -> PreparedBatch:
        """Stage 1: route by label policy, drop duplicates, expire and grow the vocabularies, tensorise. Calls
        must not overlap each other (they own the vocabularies); they may overlap `apply` of the previous batch."""
        routed, keys, finals, skipped = route(samples, self.settings.train_fake_negative, self.model.spec.label)
        self.not_learned += skipped
        fresh, keys = self._dedupe(routed, keys)
        duplicates = len(routed) - len(fresh)
        if not fresh:
            return PreparedBatch(duplicates, [], [], [], 0, None, {}, self.generation, finals=finals)
        stamps = [s.impression_ts_ms for s in fresh]
        return self._encode(len(fresh) + duplicates, fresh, keys, stamps, max(stamps), finals)

    def _encode(self, received: int, fresh: list[features_pb2.TrainingSample], keys: list[str], stamps: list[int],
                now: int, finals: list[features_pb2.TrainingSample] | None = None) -> PreparedBatch:
        generation = self.generation  # read before the tensorizer: a restore replaces it, then counts
        tensorizer = self.tensorizer
        spec = tensorizer.spec
        self._maybe_expire(now, spec)
        advance_clock(spec, now)
        group = getattr(self.model, "groups_user_rows", False)
        batch = tensorizer.encode_samples(fresh, grow=True, group_users=group)
        fn_rows, emissions = policy_rows(fresh)
        if fn_rows is not None:
            self.fake_negative_learned += int(fn_rows.sum())
            if self.settings.train_fake_negative == "fnw":
                batch.fnw_rows = torch.from_numpy(fn_rows)
        # Replay draws from samples learned before this batch (their tensors), then the batch joins the buffer
        # stamped with the clock its ids were stamped with (what lets expiry drop exactly the stale rows).
        replay_batch = None
        if self.replay_paused:
            self.replay_paused_batches += 1
        else:
            replay_batch = self.replay.draw(round(self.settings.train_replay_ratio * len(fresh)))
        self.replay.add(batch, min(v.clock for v in spec.vocabs.values() if v.clock is not None))
        return PreparedBatch(received, fresh, keys, stamps, now, batch, drain_recycled(spec), generation, replay_batch,
                             fn_rows, emissions, finals)

    def apply(self, prepared: PreparedBatch, score: bool = True) -> StepReport:
        """Stage 2: bring the tables in line, predict (test), then learn (train) from a prepared batch
        (`score=False`: learn only, for samples predicted on arrival)."""
        p = prepared
        if p.batch is None:
            return StepReport(0, p.received, False, False, float("nan"), self._score_finals(p.finals, None))
        if p.generation != self.generation:  # encoded against vocabularies a restore discarded
            # its prepare (in learn_stream's thread) may have added rows of those vocabularies after the
            # restore emptied the buffer: empty it again, then encode against the restored ones
            self.replay.clear()
            p = self._encode(p.received, p.fresh, p.keys, p.stamps, p.now, p.finals)
        assert p.batch is not None
        self.model.sync_vocab(self.optimizer, p.recycled)
        batch = p.batch.to(self.device)
        fused = self.model.train_eval_identical
        if score and not fused:  # the model predicts differently in eval mode: a separate no-grad forward
            self.model.eval()
            with torch.no_grad(), self._autocast():
                probs = torch.sigmoid(self.model(batch).logits).float().cpu().numpy()
        replay_step, step_batch = p.replay_batch, batch  # replayed rows: a step of their own, or in this one
        if p.replay_batch is not None and self.settings.train_replay_mixed:
            step_batch = concat_batches(batch, p.replay_batch.to(self.device))
            replay_step = None
        with self._autocast():
            logs, logits = train_step_with_output(self.model, step_batch, self.optimizer)
        if fused:  # the fresh candidates come first in a mixed step
            probs = torch.sigmoid(logits[:len(batch.items)]).float().cpu().numpy()
        skipped = bool(logs.get("skipped_non_finite"))
        if not skipped:
            self._extra_steps(batch, replay_step)
            if p.replay_batch is not None:
                self.replayed += len(p.replay_batch.items)
        predictions = None
        if score:
            assert batch.labels is not None
            predictions = self._score(p, batch.labels.float().cpu().numpy(), probs)
        duplicates = p.received - len(p.fresh)
        if skipped:
            self.non_finite_batches += 1
            log.warning("non-finite loss or gradients: batch of %d samples skipped", len(p.fresh))
        if skipped or not self.weights_finite():
            # The batch never reached the weights; if they are bad anyway, go back to the last good state.
            restored = False
            if not self.weights_finite():
                self.restore_good()
                restored = True
            return StepReport(0, duplicates, True, restored, float("nan"), predictions)
        self.steps += 1
        self.learned += len(p.fresh)
        self.learned_hash = (self.learned_hash + sum(key_crc(k) for k in p.keys)) % (1 << 64)
        self.trained_through_ms = max(self.trained_through_ms, p.now)
        return StepReport(len(p.fresh), duplicates, False, False, logs["loss_rank"], predictions)

    def _score(self, p: PreparedBatch, labels: np.ndarray, probs: np.ndarray) -> Scored:
        """Prequential bookkeeping of a batch's predictions (made before it learned), then of the waiting
        predictions its window-closed emissions bring final labels for (`label_policy`)."""
        scored = score_predictions(self.window, self.pending, self.settings.train_fake_negative, p.keys, p.stamps,
                                   p.fresh, p.fn_rows, p.emissions, labels, probs)
        return self._score_finals(p.finals, scored)

    def _score_finals(self, finals: list[features_pb2.TrainingSample] | None, scored: Scored | None
                      ) -> Scored | None:
        return score_finals(self.window, self.pending, self.model.spec.label, finals, scored)

    def _extra_steps(self, batch: Batch, replay_batch: Batch | None) -> None:
        """The remedies after the fresh step: more passes over the batch, then one step on replayed samples.
        An extra step with a non-finite loss is skipped (counted) like a fresh one; the fresh step stands."""
        steps = [batch] * (self.settings.train_passes - 1)
        if replay_batch is not None:
            steps.append(replay_batch.to(self.device))
        for extra in steps:
            with self._autocast():
                extra_logs, _ = train_step_with_output(self.model, extra, self.optimizer)
            if extra_logs.get("skipped_non_finite"):
                self.non_finite_batches += 1
                log.warning("non-finite loss or gradients in a replay/extra pass: step skipped")

    def _autocast(self) -> torch.autocast:
        """bf16 mixed precision on CUDA (no loss scaling needed); a disabled no-op on CPU."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=self.device.type == "cuda")

    def _maybe_expire(self, now: int, spec: FeatureSpec) -> None:
        s = self.settings
        if not self.last_expiry_ms:
            self.last_expiry_ms = now
            return
        if now - self.last_expiry_ms < s.vocab_expire_every_ms:
            return
        self.last_expiry_ms = now
        freed = expire_all(spec, now - s.vocab_ttl_ms)
        self.expired_ids += sum(len(v) for v in freed.values())
        self.replay.expire(now - s.vocab_ttl_ms)

    # -- checkpoint state ---------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Window metrics plus counters and vocabulary sizes (what a published version carries)."""
        vocab = {f"vocab_{name}_rows": float(v["rows"]) for name, v in vocab_stats(self.model.spec).items()}
        return {**{f"prequential_{k}": v for k, v in self.window.metrics().items()}, **vocab,
                "samples_learned": float(self.learned), "steps": float(self.steps),
                "duplicates": float(self.duplicates), "non_finite_batches": float(self.non_finite_batches),
                "restores": float(self.restores), "expired_ids": float(self.expired_ids),
                "replayed": float(self.replayed), "replay_paused_batches": float(self.replay_paused_batches),
                "not_learned": float(self.not_learned), "pending_scores": float(len(self.pending)),
                "pending_dropped": float(self.pending.dropped),
                "shuffle_pool_held": float(len(self.pool))}

    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly here (after `drain`: the shuffle pool is not part of it)."""
        if len(self.pool):
            raise RuntimeError(f"the shuffle pool holds {len(self.pool)} samples not learned yet: drain() first")
        return {
            "preset": self.preset,
            "config": self.model.cfg.to_dict(),
            "spec": self.model.spec.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "window": self.window.state(),
            "pending": self.pending.state(),
            "counters": {"steps": self.steps, "learned": self.learned, "learned_hash": self.learned_hash,
                         "duplicates": self.duplicates, "non_finite_batches": self.non_finite_batches,
                         "restores": self.restores, "trained_through_ms": self.trained_through_ms,
                         "last_expiry_ms": self.last_expiry_ms, "expired_ids": self.expired_ids,
                         "replayed": self.replayed, "replay_paused_batches": self.replay_paused_batches,
                         "not_learned": self.not_learned, "fake_negative_learned": self.fake_negative_learned},
        }

    @classmethod
    def from_state(cls, settings: Settings, state: dict[str, Any], device: torch.device | None = None
                   ) -> OnlineLearner:
        """Rebuilds a learner from `state()` output."""
        spec = FeatureSpec.from_dict(state["spec"])
        model = model_from_config(spec, state["config"])
        model.load_state_dict(state["model"])
        learner = cls(settings, state["preset"], model=model, device=device)
        try:
            learner.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError) as exc:  # an older trainer's checkpoint, or another row optimizer set
            log.warning("the checkpoint's optimizer state does not fit this optimizer (%s): it restarts; "
                        "weights, vocabularies and offsets are resumed", exc)
        learner.window = PrequentialWindow.from_state(state["window"])
        if "pending" in state:  # checkpoints before the fake_negative policy have none
            learner.pending = PendingScores.from_state(settings.prequential_pending, state["pending"])
        for key, value in state["counters"].items():
            setattr(learner, key, value)
        learner.mark_good()
        return learner
