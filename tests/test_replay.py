"""The online remedies' mechanics: the replay buffer's bounds, order and draws, and how many samples the
learner replays and how many steps it takes (not their effect on AUC, which docs/online-training.md reports)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamrank.config import ConfigError, Settings
from streamrank.train.learner import OnlineLearner
from streamrank.train.replay import ReplayBuffer
from tests.synthetic_samples import make_samples

torch.set_num_threads(1)


def test_the_buffer_keeps_the_newest_items_in_order() -> None:
    buf: ReplayBuffer[int] = ReplayBuffer(5)
    buf.add([1, 2, 3])
    assert buf.oldest_first() == [1, 2, 3]
    buf.add([4, 5, 6, 7])
    assert len(buf) == 5 and buf.oldest_first() == [3, 4, 5, 6, 7]
    buf.add(list(range(10, 22)))  # more than the capacity at once: only the newest 5
    assert buf.oldest_first() == [17, 18, 19, 20, 21]
    assert buf.added == 19


def test_draws_are_distinct_bounded_and_reproducible() -> None:
    a: ReplayBuffer[int] = ReplayBuffer(100, seed=3)
    b: ReplayBuffer[int] = ReplayBuffer(100, seed=3)
    for buf in (a, b):
        buf.add(list(range(250)))
    got = a.draw(40)
    assert got == b.draw(40), "same seed, same draw"
    assert len(set(got)) == 40 and all(150 <= x < 250 for x in got), "distinct, from the newest 100 only"
    assert len(a.draw(1000)) == 100 and a.drawn == 140
    assert ReplayBuffer(0).draw(5) == [] and ReplayBuffer(4).draw(3) == []
    with pytest.raises(ValueError):
        ReplayBuffer(-1)


def test_the_buffer_is_roughly_uniform() -> None:
    buf: ReplayBuffer[int] = ReplayBuffer(10, seed=0)
    buf.add(list(range(10)))
    counts = [0] * 10
    for _ in range(2000):
        for x in buf.draw(3):
            counts[x] += 1
    assert min(counts) > 500 and max(counts) < 700, counts  # expected 600 each


class CountingOptimizer:
    """Wraps the learner's optimizer to count steps."""

    def __init__(self, inner: object) -> None:
        self.inner, self.steps = inner, 0

    def step(self) -> None:
        self.steps += 1
        self.inner.step()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize(("passes", "buffer", "ratio"), [(1, 0, 1.0), (2, 0, 1.0), (1, 1000, 0.5), (3, 300, 2.0)])
def test_the_learner_replays_what_the_settings_say(tmp_path: Path, passes: int, buffer: int,
                                                   ratio: float) -> None:
    settings = Settings(data_dir=str(tmp_path), train_passes=passes, train_replay_buffer=buffer,
                        train_replay_ratio=ratio)
    learner = OnlineLearner(settings, "dnn")
    learner.optimizer = CountingOptimizer(learner.optimizer)  # type: ignore[assignment]
    samples = make_samples(600, seed=1)
    replayed = 0
    for k, start in enumerate(range(0, 600, 200)):
        in_buffer = min(buffer, 200 * k)  # learned before this batch, still held
        report = learner.learn(samples[start:start + 200])
        assert report.learned == 200 and report.predictions is not None and len(report.predictions[0]) == 200
        replayed += min(round(ratio * 200), in_buffer) if buffer else 0
    assert learner.learned == 600, "replayed samples are not counted as learned"
    assert learner.replayed == replayed
    extra = 1 if buffer else 0  # the first batch has nothing to replay
    assert learner.optimizer.steps == 3 * passes + (2 if extra else 0)
    assert len(learner.replay) == min(buffer, 600)


def test_replayed_samples_were_learned_before(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), train_replay_buffer=150, train_replay_ratio=1.0)
    learner = OnlineLearner(settings, "dnn")
    samples = make_samples(400, seed=2)
    learner.learn(samples[:200])
    prepared = learner.prepare(samples[200:400])
    drawn = {s.sample_id for s in prepared.replayed}
    assert len(drawn) == 150 and drawn <= {s.sample_id for s in samples[50:200]}, "the newest 150 learned"
    assert prepared.replay_batch is not None and len(prepared.replay_batch.items) == 150


def test_settings_refuse_bad_remedies(tmp_path: Path) -> None:
    for bad in ({"train_passes": 0}, {"train_replay_buffer": -1}, {"train_replay_ratio": -0.5}):
        with pytest.raises(ConfigError):
            Settings(data_dir=str(tmp_path), **bad).validate()


def test_the_decomposition_row_of_the_defaults_is_the_defaults(tmp_path: Path) -> None:
    """docs/online-training.md quotes the `online_tuned` row as the defaults' figure: keep them equal."""
    from streamrank.bench.online_decomposition import BASE, ONLINE_ROWS

    tuned = BASE | next(o for key, _, o in ONLINE_ROWS if key == "online_tuned")
    defaults = Settings(data_dir=str(tmp_path))
    assert {k: getattr(defaults, k) for k in tuned} == tuned
