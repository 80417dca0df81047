"""A retrieval model the scorer can serve, trained offline on a prefix of a MovieLens log.

The benchmark's models (`streamrank bench retrieval`) read user profile fields and the release year,
which the scorer has no source for online (users' profiles and years are not on any topic). The served
model therefore uses what the stream provides: the behaviour sequence for the user tower, and the
catalog's category and tags (genres) for the item tower — the fields `streamrank.index.refresh` reads from
the items topic. Training only sees the first `n_ratings` ratings, so a replay of the rest is unseen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from streamrank.data.movielens import MovieLens
from streamrank.data.retrieval_protocol import RetrievalProtocol, retrieval_protocol
from streamrank.features.spec import FeatureSpec
from streamrank.features.tensorize import Tensorizer
from streamrank.models.retrieval import build_retrieval_model, retrieval_files
from streamrank.train.retrieval import RetrievalFit, RetrievalTrainConfig, fit_retrieval


@dataclass(frozen=True)
class ServableRetrieval:
    """A trained model's registry files and how its training went."""

    files: dict[str, bytes]
    preset: str
    fit: RetrievalFit
    ratings: int


def prefix(ml: MovieLens, n_ratings: int) -> MovieLens:
    """The data set as it was after its first `n_ratings` ratings (catalog and users unchanged)."""
    r = ml.ratings
    cut = {f.name: getattr(r, f.name)[:n_ratings] for f in dataclasses.fields(r)
           if isinstance(getattr(r, f.name), np.ndarray)}
    return dataclasses.replace(ml, ratings=dataclasses.replace(r, **cut))


def servable_spec(proto: RetrievalProtocol, max_behaviours: int = 20) -> FeatureSpec:
    """A spec fitted on the training split with only stream-available fields (no user or item extras)."""
    fitted = proto.make_spec(max_behaviours)
    spec = FeatureSpec(max_seq_len=max_behaviours, max_tags=fitted.max_tags, dense=(), use_user_id=False)
    for name in ("item", "category", "tag"):
        spec.vocabs[name] = fitted.vocabs[name]
    return spec


def train_servable(ml: MovieLens, n_ratings: int, preset: str = "base", epochs: int = 2,
                   seed: int = 0, progress: bool = False, batch_size: int = 1024) -> ServableRetrieval:
    """Trains `preset` on the first `n_ratings` ratings (leave-last-out inside them for early stopping)."""
    proto = retrieval_protocol(prefix(ml, n_ratings))
    spec = servable_spec(proto)
    model = build_retrieval_model(preset, spec)
    cfg = RetrievalTrainConfig(max_epochs=epochs, seed=seed, progress=progress, batch_size=batch_size,
                               device="cpu", eval_users=1000)
    fit = fit_retrieval(model, proto, Tensorizer(spec), cfg)
    return ServableRetrieval(retrieval_files(model.cpu(), preset), preset, fit, n_ratings)
