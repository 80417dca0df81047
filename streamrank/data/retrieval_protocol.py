"""The retrieval protocol on MovieLens (docs/retrieval.md states every choice).

- Per user, ratings in time order (the stable tie-break of `load_movielens`); every rating is an
  interaction (implicit feedback). **Leave-last-out**: the last rating is the test target, the one
  before it the validation target, everything earlier is training. Users with fewer than 3 ratings
  are left out (MovieLens has none).
- Training examples: every training rating is a target, its history the user's earlier ratings (the
  first one has an empty history: a cold-start example). No negatives are stored: the trainer draws
  random negatives from the corpus.
- Evaluation (HIT@K): the user's history up to the held-out rating goes through the user tower; the
  held-out item is searched against the **full corpus** (every item rated by anyone in the data set,
  including items seen only in validation/test, which get the OOV id and keep their other fields),
  **excluding the items the user rated before** (for test: training items and the validation item).
  HIT@K is 1 when the held-out item is among the top K. Item coverage@K is the share of corpus items
  that appear in at least one user's top K.
- Vocabularies are fitted on the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamrank.data.movielens import MovieLens
from streamrank.data.protocols import USER_FIELDS, _Corpus
from streamrank.features.raw import Behaviors, Candidate, RequestContext
from streamrank.features.spec import FeatureSpec


@dataclass
class TargetSet:
    """Rows (user code, history length `end`, target item code): a training or evaluation split."""

    user: np.ndarray
    end: np.ndarray
    item: np.ndarray

    def __len__(self) -> int:
        return len(self.item)

    def subset(self, rows: np.ndarray) -> TargetSet:
        """The rows selected by an index array or boolean mask."""
        return TargetSet(self.user[rows], self.end[rows], self.item[rows])


@dataclass
class RetrievalProtocol:
    """Splits, corpus and what the feature spec, the baselines and the CL samplers need."""

    dataset: str
    corpus: _Corpus = field(repr=False)
    train: TargetSet
    valid: TargetSet
    test: TargetSet
    item_popularity: np.ndarray  # training targets per item code
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        """Corpus size (every rated item)."""
        return len(self.corpus.item_ids)

    def make_spec(self, max_behaviours: int = 20, min_item_count: int = 1) -> FeatureSpec:
        """A FeatureSpec fitted on the training split only (no dense features, no user id)."""
        c = self.corpus
        spec = FeatureSpec(max_seq_len=max_behaviours, user_fields=USER_FIELDS, item_fields=("year",),
                           max_tags=max(1, max(len(t) for t in c.item_tags)), dense=(), use_user_id=False)
        spec.vocabs["item"].fit([c.item_ids[i] for i in self.train.item.tolist()], min_count=min_item_count)
        items = np.unique(self.train.item).tolist()
        spec.vocabs["category"].fit([c.item_cat[i] for i in items])
        spec.vocabs["tag"].fit([t for i in items for t in c.item_tags[i]])
        spec.vocabs["item.year"].fit([c.item_year[i] for i in items])
        for f in USER_FIELDS:
            spec.vocabs[f"user.{f}"].fit([c.user_fields[u].get(f, "") for u in np.unique(self.train.user).tolist()])
        return spec

    def contexts(self, split: TargetSet, rows: np.ndarray | None = None, keep: int = 20) -> list[RequestContext]:
        """The user side of rows of a split: the `keep` most recent ratings before each target."""
        c = self.corpus
        idx = np.arange(len(split)) if rows is None else rows
        out = []
        for u, e in zip(split.user[idx].tolist(), split.end[idx].tolist(), strict=True):
            s = max(0, e - keep)
            beh = Behaviors(c.seq_items[u][s:e], c.seq_types[u][s:e], c.seq_ts[u][s:e], c.seq_cats[u][s:e])
            out.append(RequestContext(c.user_ids[u], beh, user_fields=c.user_fields[u]))
        return out

    def candidates(self) -> list[Candidate]:
        """Every corpus item in code order (what the item tower encodes for exact search)."""
        c = self.corpus
        return [Candidate(i, c.item_attrs[k]) for k, i in enumerate(c.item_ids)]

    def seen_items(self, split: TargetSet) -> list[np.ndarray]:
        """Per row, the item codes the user rated before the target (excluded from its search)."""
        c = self.corpus
        return [c.item_code[c.user_rows[u][:e]] for u, e in zip(split.user.tolist(), split.end.tolist(), strict=True)]

    def training_sequences(self) -> list[tuple[list[str], list[int]]]:
        """Per user, the training interactions (item ids, ms timestamps), oldest first (for co-occurrence)."""
        last = np.zeros(len(self.corpus.user_ids), dtype=np.int64)
        np.maximum.at(last, self.train.user, self.train.end + 1)
        c = self.corpus
        return [(c.seq_items[u][:n], c.seq_ts[u][:n]) for u, n in enumerate(last.tolist()) if n]


def retrieval_protocol(ml: MovieLens) -> RetrievalProtocol:
    """Leave-last-out per user (see the module docstring)."""
    c = _Corpus(ml, np.ones(len(ml.ratings), dtype=bool), typed=True)
    tr_u, tr_e, ev = [], [], {"valid": [], "test": []}
    for u, rows in enumerate(c.user_rows):
        n = len(rows)
        if n < 3:
            continue
        tr_u.append(np.full(n - 2, u))
        tr_e.append(np.arange(n - 2))
        ev["valid"].append((u, n - 2))
        ev["test"].append((u, n - 1))
    user, end = np.concatenate(tr_u), np.concatenate(tr_e)

    def targets(us: np.ndarray, es: np.ndarray) -> TargetSet:
        items = np.array([c.item_code[c.user_rows[u][e]] for u, e in zip(us.tolist(), es.tolist(), strict=True)],
                         dtype=np.int64)
        return TargetSet(us.astype(np.int64), es.astype(np.int64), items)

    train = targets(user, end)
    valid, test = (targets(np.array([r[0] for r in ev[k]]), np.array([r[1] for r in ev[k]])) for k in ("valid", "test"))
    pop = np.bincount(train.item, minlength=len(c.item_ids)).astype(np.float64)
    stats = {"users": len(test), "items": len(c.item_ids), "train_examples": len(train),
             "items_in_train": int((pop > 0).sum()), "test_targets_unseen_in_train": int((pop[test.item] == 0).sum())}
    return RetrievalProtocol(ml.name, c, train, valid, test, pop, stats)
