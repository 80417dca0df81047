"""The shuffle pool's mechanics: draws without replacement, the learner predicting on arrival and learning each
sample once later in another order, the pool's bound, and its drain before a checkpoint (not its AUC, which
docs/online-training.md reports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamrank.config import Settings
from streamrank.train.learner import OnlineLearner
from streamrank.train.shuffle_pool import ShufflePool
from tests.synthetic_samples import make_samples

torch.set_num_threads(1)


def test_the_pool_hands_out_each_sample_once_at_random() -> None:
    samples = make_samples(50, seed=1)
    pool = ShufflePool(20, seed=0)
    pool.add(samples, [s.sample_id for s in samples])
    assert len(pool) == 50 and pool.overfull()
    taken, keys = pool.take(30)
    assert [s.sample_id for s in taken] == keys and len(set(keys)) == 30
    assert len(pool) == 20 and not pool.overfull()
    rest, rest_keys = pool.take(100)  # more than it holds: what it holds
    assert len(rest) == 20 and not set(rest_keys) & set(keys)
    assert sorted(keys + rest_keys) == sorted(s.sample_id for s in samples)
    assert keys + rest_keys != [s.sample_id for s in samples], "drawn in another order"
    assert pool.take(5) == ([], []) and pool.taken == 50 == pool.added
    again = ShufflePool(20, seed=0)
    again.add(samples, [s.sample_id for s in samples])
    assert again.take(30)[1] == keys, "seeded: the same draws"
    with pytest.raises(ValueError):
        ShufflePool(-1)
    with pytest.raises(ValueError):
        pool.add(samples[:2], ["one key"])


class Spy:
    """Records the sample keys of every batch the learner learns (its `apply` stage)."""

    def __init__(self, learner: OnlineLearner) -> None:
        self.learned: list[str] = []
        self._apply = learner.apply
        learner.apply = self  # type: ignore[method-assign]

    def __call__(self, prepared: object, score: bool = True) -> object:
        self.learned.extend(prepared.keys)  # type: ignore[attr-defined]
        return self._apply(prepared, score=score)  # type: ignore[arg-type]


def test_the_learner_predicts_on_arrival_and_learns_every_sample_once_later(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), train_batch_size=32, train_shuffle_pool=100, train_replay_buffer=0)
    learner = OnlineLearner(settings, "dnn", seed=0)
    spy = Spy(learner)
    stream = make_samples(400, seed=3)
    predicted: list[str] = []
    learned_before = 0
    for start in range(0, len(stream), 32):
        report = learner.learn(stream[start:start + 32])
        assert report.predictions is not None
        ids = report.predictions[0]
        assert not set(ids) & set(spy.learned[:learned_before]), "predicted before it is learned: no look-ahead"
        predicted.extend(ids)
        assert report.learned == len(spy.learned) - learned_before
        learned_before = len(spy.learned)
        assert len(learner.pool) <= 100 and len(predicted) - len(spy.learned) == len(learner.pool)
    assert predicted == [s.sample_id for s in stream], "predicted in stream order, each once"
    assert learner.learned == len(stream) - len(learner.pool)
    with pytest.raises(RuntimeError, match="drain"):
        learner.state()
    waiting = len(learner.pool)
    assert waiting > 0 and learner.drain() == waiting
    assert len(learner.pool) == 0 and learner.learned == len(stream)
    assert sorted(spy.learned) == sorted(predicted) and len(set(spy.learned)) == len(stream), "each learned once"
    assert spy.learned != predicted, "learned in another order"
    plain = OnlineLearner(settings.with_overrides(train_shuffle_pool=0), "dnn", seed=0)
    for start in range(0, len(stream), 32):
        plain.learn(stream[start:start + 32])
    assert learner.learned_hash == plain.learned_hash, "the same samples learned"
    assert plain.window.seen == learner.window.seen == len(stream), "every prediction scored once"
    assert learner.state()["counters"]["learned"] == len(stream)


def test_duplicates_are_dropped_on_arrival_and_a_lone_batch_waits(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), train_batch_size=64, train_shuffle_pool=500)
    learner = OnlineLearner(settings, "dnn", seed=0)
    stream = make_samples(200, seed=4)
    first = learner.learn(stream)
    assert first.learned == 0 and len(learner.pool) == 200, "under the pool's capacity nothing is learned yet"
    again = learner.learn(stream[:50])  # a worker re-sending after a crash
    assert again.duplicates == 50 and again.predictions is None, "nothing new to predict"
    assert len(learner.pool) == 200
    assert learner.drain() == 200 and learner.learned == 200
    probs = first.predictions[3] if first.predictions else np.zeros(0)
    assert len(probs) == 200 and np.isfinite(probs).all()


def test_a_restore_in_the_pool_path_drops_the_failed_batch_only(tmp_path: Path) -> None:
    """Non-finite weights while learning from the pool: the failed micro-batch is skipped, the last good state
    comes back, and the samples still waiting are learned by the restored model (they are decoded samples,
    not rows of the discarded vocabularies)."""
    settings = Settings(data_dir=str(tmp_path), train_batch_size=100, train_shuffle_pool=200, train_replay_buffer=0)
    learner = OnlineLearner(settings, "din", seed=0)
    samples = make_samples(1000, seed=5)
    learner.learn(samples[:400])
    learner.drain()
    learner.mark_good()
    with torch.no_grad():
        for p in learner.model.parameters():
            p.fill_(float("nan"))
    report = learner.learn(samples[400:800])  # 400 waiting > 200: two micro-batches, the first restores
    assert report.restored and learner.restores == 1 and learner.weights_finite()
    assert report.learned == 100 and len(learner.pool) == 200, "the batch after the restore is learned"
    assert learner.drain() == 200 and learner.learned == 400 + 100 + 200
