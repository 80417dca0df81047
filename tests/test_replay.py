"""The online remedies' mechanics: the replay buffer's bounds, order and draws, and how many samples the
learner replays and how many steps it takes (not their effect on AUC, which docs/online-training.md reports)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamrank.config import ConfigError, Settings
from streamrank.features.batch import Batch, ItemSide, UserSide
from streamrank.train.learner import OnlineLearner
from streamrank.train.replay import ReplayBuffer, batch_columns, concat_batches
from tests.synthetic_samples import make_samples

torch.set_num_threads(1)


def _rows(n: int, first: int = 0, t: int = 3) -> Batch:
    """n distinct one-user rows whose item id is first, first+1, ... (the row's identity in these tests)."""
    ids = torch.arange(first, first + n)
    hist = ids[:, None].repeat(1, t)
    users = UserSide(user=ids, user_fields=torch.zeros(n, 0, dtype=torch.long), query=ids % 3, scenario=ids % 2,
                     hist_item=hist, hist_cat=hist % 5, hist_type=hist % 4, hist_mask=hist % 2 == 0,
                     branch=ids % 2)
    items = ItemSide(item=ids, category=ids % 5, brand=ids % 7, shop=ids % 3,
                     item_fields=torch.zeros(n, 0, dtype=torch.long), tags=ids[:, None].repeat(1, 2),
                     dense=ids[:, None].float().repeat(1, 4) / 10)
    return Batch(users, items, torch.arange(n), (ids % 2).float())


def _ids(batch: Batch | None) -> list[int]:
    return [] if batch is None else batch.items.item.tolist()


def test_the_buffer_keeps_the_newest_rows_in_order() -> None:
    buf = ReplayBuffer(5)
    buf.add(_rows(3, 1), stamp=0)
    assert _ids(buf.oldest_first()) == [1, 2, 3]
    buf.add(_rows(4, 4), stamp=0)
    assert len(buf) == 5 and _ids(buf.oldest_first()) == [3, 4, 5, 6, 7]
    buf.add(_rows(12, 10), stamp=0)  # more than the capacity at once: only the newest 5
    assert _ids(buf.oldest_first()) == [17, 18, 19, 20, 21]
    assert buf.added == 19


def test_rows_come_back_exactly_as_they_went_in() -> None:
    """Every column, dtype and value survives the ring (int64 ids are held as int32 and restored)."""
    buf = ReplayBuffer(8)
    batch = _rows(6, 100)
    buf.add(_rows(5, 0), stamp=0)
    buf.add(batch, stamp=1)  # wraps around the end of the ring
    back = buf.oldest_first()
    assert back is not None
    got, want = batch_columns(back.select(torch.arange(2, 8))), batch_columns(batch)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name


def test_a_grouped_batch_is_held_one_user_row_per_sample() -> None:
    """A request's impressions share a user row (owner); the buffer keeps each sample's own user side."""
    grouped = _rows(2, 0)
    grouped = Batch(grouped.users, _rows(4, 10).items, torch.tensor([0, 0, 1, 1]), torch.ones(4))
    buf = ReplayBuffer(10)
    buf.add(grouped, stamp=0)
    back = buf.oldest_first()
    assert back is not None and back.one_user_per_row
    assert back.users.user.tolist() == [0, 0, 1, 1] and _ids(back) == [10, 11, 12, 13]


def test_draws_are_distinct_bounded_and_reproducible() -> None:
    a, b = ReplayBuffer(100, seed=3), ReplayBuffer(100, seed=3)
    for buf in (a, b):
        buf.add(_rows(250), stamp=0)
    got = _ids(a.draw(40))
    assert got == _ids(b.draw(40)), "same seed, same draw"
    assert len(set(got)) == 40 and all(150 <= x < 250 for x in got), "distinct, from the newest 100 only"
    assert len(_ids(a.draw(1000))) == 100 and a.drawn == 140
    assert ReplayBuffer(0).draw(5) is None and ReplayBuffer(4).draw(3) is None
    with pytest.raises(ValueError):
        ReplayBuffer(-1)


def test_the_buffer_is_roughly_uniform() -> None:
    buf = ReplayBuffer(10, seed=0)
    buf.add(_rows(10), stamp=0)
    counts = [0] * 10
    for _ in range(2000):
        for x in _ids(buf.draw(3)):
            counts[x] += 1
    assert min(counts) > 500 and max(counts) < 700, counts  # expected 600 each


def test_expiry_drops_exactly_the_rows_stamped_before_the_cut() -> None:
    buf = ReplayBuffer(6)
    for k in range(4):  # stamps 0, 10, 20, 30; the first batch is evicted by the ring before any expiry
        buf.add(_rows(2, 10 * k), stamp=10 * k)
    assert _ids(buf.oldest_first()) == [10, 11, 20, 21, 30, 31]
    assert buf.expire(older_than=20) == 2 and _ids(buf.oldest_first()) == [20, 21, 30, 31]
    assert buf.expire(older_than=20) == 0, "a row stamped at the cut is kept"
    buf.add(_rows(3, 40), stamp=40)
    assert _ids(buf.oldest_first()) == [21, 30, 31, 40, 41, 42]
    buf.clear()
    assert len(buf) == 0 and buf.draw(3) is None and buf.dropped == 2 + 6


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
                        train_replay_ratio=ratio, train_shuffle_pool=0)
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


def test_a_mixed_replay_is_one_step_on_fresh_then_replayed_rows(tmp_path: Path) -> None:
    """`train_replay_mixed`: the replayed rows join the fresh batch's step (no step of their own), the fresh
    candidates first, so the step's own outputs are still the fresh batch's prequential predictions."""
    mixed = concat_batches(_rows(3, 10), _rows(2, 50))
    assert _ids(mixed) == [10, 11, 12, 50, 51] and torch.equal(mixed.owner, torch.arange(5))
    settings = Settings(data_dir=str(tmp_path), train_replay_buffer=1000, train_replay_ratio=0.5,
                        train_replay_mixed=True, train_shuffle_pool=0)
    learner = OnlineLearner(settings, "dnn")
    learner.optimizer = CountingOptimizer(learner.optimizer)  # type: ignore[assignment]
    samples = make_samples(600, seed=1)
    for start in range(0, 600, 200):
        report = learner.learn(samples[start:start + 200])
        assert report.learned == 200 and report.predictions is not None and len(report.predictions[3]) == 200
    assert learner.optimizer.steps == 3 and learner.replayed == 2 * 100 and learner.learned == 600


def test_replayed_samples_were_learned_before(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), train_replay_buffer=150, train_replay_ratio=1.0,
                        train_shuffle_pool=0)
    learner = OnlineLearner(settings, "dnn")
    samples = make_samples(400, seed=2)
    learner.learn(samples[:200])
    prepared = learner.prepare(samples[200:400])
    assert prepared.replay_batch is not None and len(prepared.replay_batch.items) == 150

    def rows(batch: Batch) -> set[tuple]:
        cols = batch_columns(batch)
        return {tuple(tuple(v.flatten().tolist()) for v in vals) for vals in zip(*cols.values(), strict=True)}

    # the tensors the learner held are those of the newest 150 learned samples, encoded as they were learned
    newest = learner.tensorizer.encode_samples(samples[50:200])
    assert rows(prepared.replay_batch) == rows(newest)


def test_a_paused_replay_takes_no_extra_step_and_keeps_filling(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), train_replay_buffer=1000, train_replay_ratio=2.0,
                        train_shuffle_pool=0)
    learner = OnlineLearner(settings, "dnn")
    learner.optimizer = CountingOptimizer(learner.optimizer)  # type: ignore[assignment]
    samples = make_samples(600, seed=3)
    learner.learn(samples[:200])
    learner.replay_paused = True  # the trainer is behind the stream
    learner.learn(samples[200:400])
    assert learner.optimizer.steps == 2 and learner.replayed == 0 and learner.replay_paused_batches == 1
    assert len(learner.replay) == 400, "a paused replay still keeps what is learned"
    learner.replay_paused = False
    learner.learn(samples[400:600])
    assert learner.optimizer.steps == 4 and learner.replayed == 400


def test_expiry_and_restore_drop_rows_that_could_point_at_freed_indices(tmp_path: Path) -> None:
    day = 86_400_000
    settings = Settings(data_dir=str(tmp_path), train_replay_buffer=10_000, vocab_ttl_ms=day,
                        vocab_expire_every_ms=day // 4, train_shuffle_pool=0)
    learner = OnlineLearner(settings, "dnn")
    learner.learn(make_samples(200, seed=4))
    learner.learn(make_samples(200, seed=5, start=200))
    assert len(learner.replay) == 400
    learner.learn(make_samples(200, seed=6, start=400, t0=make_samples(1)[0].impression_ts_ms + 3 * day))
    assert learner.expired_ids > 0, "the setup must expire ids"
    assert len(learner.replay) == 200, "rows learned more than a TTL ago are gone; the new batch is held"
    learner.restore_good()
    assert len(learner.replay) == 0


def test_settings_refuse_bad_remedies(tmp_path: Path) -> None:
    for bad in ({"train_passes": 0}, {"train_replay_buffer": -1}, {"train_replay_ratio": -0.5},
                {"train_replay_max_lag": -2}, {"train_shuffle_pool": -1}):
        with pytest.raises(ConfigError):
            Settings(data_dir=str(tmp_path), **bad).validate()


def test_the_decomposition_row_of_the_defaults_is_the_defaults(tmp_path: Path) -> None:
    """docs/online-training.md quotes the `online_tuned` row as the defaults' figure: keep them equal."""
    from streamrank.bench.online_decomposition import BASE, ONLINE_ROWS, TUNED

    row = BASE | next(o for key, _, o in ONLINE_ROWS if key == "online_tuned")
    defaults = Settings(data_dir=str(tmp_path))
    assert row == BASE | TUNED
    assert {k: getattr(defaults, k) for k in row} == row


def test_a_batch_prepared_before_a_restore_leaves_no_stale_rows(tmp_path: Path) -> None:
    """learn_stream prepares batch k+1 in a thread while batch k trains; if k restores the last good state,
    k+1's prepare may add rows of the discarded vocabularies after the restore emptied the buffer. Its apply
    (a generation mismatch) empties the buffer again and encodes k+1 against the restored vocabularies."""
    settings = Settings(data_dir=str(tmp_path), train_replay_buffer=10_000, train_shuffle_pool=0)
    learner = OnlineLearner(settings, "dnn")
    samples = make_samples(400, seed=7)
    learner.learn(samples[:200])
    learner.mark_good()
    prepared = learner.prepare(samples[200:400])  # rows added, against the current vocabularies
    learner.restore_good()  # what a non-finite batch k does
    assert prepared.batch is not None
    learner.replay.add(prepared.batch, stamp=0)  # the thread's add landing after the restore's clear
    report = learner.apply(prepared)
    assert report.learned == 200 and len(learner.replay) == 200
    back = learner.replay.oldest_first()
    assert back is not None
    assert torch.equal(back.items.item, learner.tensorizer.encode_samples(samples[200:400]).items.item)


def test_the_decomposition_names_its_files_by_the_prefix_and_will_not_mix_rows(tmp_path: Path) -> None:
    from streamrank.bench.online_decomposition import main, ratings_suffix

    assert [ratings_suffix(n) for n in (250_000, 0, 50_000)] == ["", "-all", "-50000"]
    (tmp_path / "online-decomposition-ml-100k-din-all.json").write_text('{"rows": {}, "ratings": 5}')
    with pytest.raises(SystemExit):  # rows of another prefix in the file: refused before any work
        main(["--dataset", "ml-100k", "--ratings", "0", "--out", str(tmp_path)])
