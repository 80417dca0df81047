"""Evaluation protocols on MovieLens for the ranking models (docs/models.md states every count).

(a) `chronological_protocol` (our main protocol, the paper's recommendation setting):
    per user, ratings in time order (stable tie-break); the last one is the test positive, the one before
    it the validation positive, everything earlier is training (leave-last-out). Every rating counts as
    an interaction (implicit feedback). Training pairs each positive with one negative sampled from the
    training popularity distribution (the paper's 1:1); a validation/test session is the held-out
    positive plus `n_eval_negatives` distinct popularity-sampled negatives. Negatives are never items the
    user rated at any time. Features are point in time: the behaviour sequence is the user's earlier
    ratings (type PURCHASE for >= 4 stars, else CLICK), item counters count ratings before that moment.
(b) `recbole_protocol`: RecBole's ML-1M context-aware benchmark: drop rating 3, label = rating >= 4,
    random 8:1:1 split of the remaining interactions, AUC and log-loss; fields user id, age, gender,
    occupation, item id, genres, release year; DIN's history = the user's earlier kept ratings (by time).

Examples are materialised on demand (`ExampleSet.examples`), so a split is a few numpy columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from streamrank.data.movielens import MovieLens
from streamrank.data.requests import user_scenarios
from streamrank.features.raw import CLICK, PURCHASE, Behaviors, Counts, ItemAttrs, Labels, RawExample
from streamrank.features.spec import FeatureSpec

CHRONO_DENSE = ("item_clicks", "item_purchases", "user_category_clicks", "history_len")
USER_FIELDS = ("age", "gender", "occupation")


class _Corpus:
    """Per-user chronological sequences and item/user attributes, shared by a protocol's splits."""

    def __init__(self, ml: MovieLens, keep: np.ndarray, typed: bool) -> None:
        r = ml.ratings
        self.rating_idx = np.flatnonzero(keep)  # positions (into ml.ratings) of the kept ratings
        self.user_code = r.user_code[self.rating_idx].astype(np.int64)
        self.item_code = r.item_code[self.rating_idx].astype(np.int64)
        self.stars = r.rating[self.rating_idx]
        self.item_ids = list(r.item_vocab)
        self.user_ids = list(r.user_vocab)
        catalog = [ml.items.get(i) for i in self.item_ids]
        self.item_tags = [list(it.genres) if it is not None else [] for it in catalog]
        self.item_cat = [it.main_category if it is not None else "" for it in catalog]
        years = [ml.items[i].year if i in ml.items else None for i in self.item_ids]
        self.item_year = ["" if y is None else str(y) for y in years]
        # one shared (read-only) attribute object per item instead of one per example
        self.item_attrs = [ItemAttrs(category=cat, tags=tags, fields={"year": year})
                           for cat, tags, year in zip(self.item_cat, self.item_tags, self.item_year, strict=True)]
        users = [ml.users.get(u) for u in self.user_ids]
        self.user_age = np.array([-1 if u is None or u.age is None else u.age for u in users])
        self.user_fields = [{} if u is None else {"age": str(u.age), "gender": u.gender,
                                                  "occupation": u.occupation} for u in users]
        self.user_scenario = [""] * len(self.user_ids)  # set by RankingProtocol.assign_scenarios
        order = np.argsort(self.user_code, kind="stable")  # chronological within each user
        bounds = np.searchsorted(self.user_code[order], np.arange(len(self.user_ids) + 1))
        self.user_rows = [order[bounds[u]:bounds[u + 1]] for u in range(len(self.user_ids))]
        self.ts_ms = r.ts_ms[self.rating_idx].astype(np.int64)
        ts = self.ts_ms.tolist()
        types = [PURCHASE if (typed and s >= ml.purchase_min) else CLICK for s in self.stars.tolist()]
        items, cats = self.item_code.tolist(), [self.item_cat[i] for i in self.item_code.tolist()]
        self.seq_items = [[self.item_ids[items[k]] for k in rows] for rows in self.user_rows]
        self.seq_types = [[types[k] for k in rows] for rows in self.user_rows]
        self.seq_ts = [[ts[k] for k in rows] for rows in self.user_rows]
        self.seq_cats = [[cats[k] for k in rows] for rows in self.user_rows]

    def example(self, u: int, end: int, item: int, label: float, counts: np.ndarray | None,
                keep: int, ts_ms: int) -> RawExample:
        """The RawExample of user `u` with their first `end` ratings as history (last `keep` kept)."""
        s = max(0, end - keep)
        beh = Behaviors(self.seq_items[u][s:end], self.seq_types[u][s:end], self.seq_ts[u][s:end],
                        self.seq_cats[u][s:end])
        c = Counts() if counts is None else Counts(0, int(counts[0]), int(counts[1]), 0, int(counts[2]))
        return RawExample(user_id=self.user_ids[u], item_id=self.item_ids[item], behaviors=beh,
                          item=self.item_attrs[item],
                          counts=c, labels=Labels(click=label > 0.5), user_fields=self.user_fields[u],
                          ts_ms=ts_ms, scenario=self.user_scenario[u])


@dataclass
class ExampleSet:
    """A split as numpy columns; an `ExampleSource` for the trainer (examples built per mini-batch).

    user/item: codes; end: number of the user's ratings before this example (its history length);
    when: position of the example's moment in the corpus (for timestamps); sessions: one id per
    request (None for the RecBole protocol); counts: (N, 3) item clicks, item purchases, user-category
    clicks at that moment (None when the protocol has no counters).
    """

    corpus: _Corpus = field(repr=False)
    user: np.ndarray
    end: np.ndarray
    item: np.ndarray
    labels: np.ndarray
    when: np.ndarray
    sessions: np.ndarray | None = None
    counts: np.ndarray | None = None
    max_hist: int = 50

    def __len__(self) -> int:
        return len(self.labels)

    def examples(self, idx: np.ndarray | list[int]) -> list[RawExample]:
        """RawExamples of rows `idx` (behaviours limited to the `max_hist` most recent)."""
        c = self.corpus
        return [c.example(int(self.user[i]), int(self.end[i]), int(self.item[i]), float(self.labels[i]),
                          None if self.counts is None else self.counts[i], self.max_hist,
                          int(c.ts_ms[self.when[i]]))
                for i in np.asarray(idx).tolist()]

    def subset(self, rows: np.ndarray) -> ExampleSet:
        """The rows selected by a boolean mask or index array (sessions stay whole if selected whole)."""
        s = None if self.sessions is None else self.sessions[rows]
        k = None if self.counts is None else self.counts[rows]
        return replace(self, user=self.user[rows], end=self.end[rows], item=self.item[rows],
                       labels=self.labels[rows], when=self.when[rows], sessions=s, counts=k)

    def with_history_cap(self, n: int) -> ExampleSet:
        """The same rows with histories cut to the `n` most recent behaviours (simulated long-tail)."""
        return replace(self, max_hist=min(n, self.max_hist))


@dataclass
class RankingProtocol:
    """Splits of one protocol plus what a feature spec and a popularity baseline need."""

    name: str
    train: ExampleSet
    valid: ExampleSet
    test: ExampleSet
    item_popularity: np.ndarray  # training positives per item code
    dense: tuple[str, ...]
    stats: dict[str, int | float] = field(default_factory=dict)

    @property
    def corpus(self) -> _Corpus:
        """The shared per-user sequences and attributes behind the splits."""
        return self.train.corpus

    def assign_scenarios(self, ml: MovieLens, field: str = "auto") -> tuple[str, ...]:
        """Gives every example its user's scenario, named as the stream names it ("age:25"; an event log's
        users get their most frequent own scenario); returns the scenarios present, sorted (what a
        multi-scenario spec lists)."""
        c = self.corpus
        named = user_scenarios(ml, field)
        c.user_scenario = [named.get(u, "") for u in c.user_ids]
        return tuple(sorted({s for s in c.user_scenario if s}, key=_scenario_order))

    def scenario_codes(self, split: ExampleSet, scenarios: tuple[str, ...]) -> np.ndarray:
        """Index into `scenarios` of each example's scenario (-1 when it has none of them)."""
        pos = {s: i for i, s in enumerate(scenarios)}
        per_user = np.array([pos.get(s, -1) for s in self.corpus.user_scenario], dtype=np.int64)
        return per_user[split.user]

    def make_spec(self, max_seq_len: int = 50, min_item_count: int = 1,
                  use_user_id: bool = True, scenarios: tuple[str, ...] = ()) -> FeatureSpec:
        """A FeatureSpec whose vocabularies are fitted on the training split only (others -> OOV);
        `scenarios` get their own branches in multi-scenario models."""
        c = self.corpus
        spec = FeatureSpec(max_seq_len=max_seq_len, user_fields=USER_FIELDS, item_fields=("year",),
                           max_tags=max(1, max(len(t) for t in c.item_tags)), dense=self.dense,
                           use_user_id=use_user_id, scenarios=scenarios)
        # item frequency = training rows with the item as target (training behaviours are earlier positives)
        spec.vocabs["item"].fit([c.item_ids[i] for i in self.train.item.tolist()], min_count=min_item_count)
        items = np.unique(self.train.item).tolist()
        spec.vocabs["category"].fit([c.item_cat[i] for i in items])
        spec.vocabs["tag"].fit([t for i in items for t in c.item_tags[i]])
        spec.vocabs["item.year"].fit([c.item_year[i] for i in items])
        users = np.unique(self.train.user).tolist()
        spec.vocabs["user"].fit([c.user_ids[u] for u in users])
        for f in USER_FIELDS:
            spec.vocabs[f"user.{f}"].fit([c.user_fields[u].get(f, "") for u in users])
        spec.vocabs["scenario"].fit([c.user_scenario[u] for u in users])
        for s in (self.train, self.valid, self.test):
            s.max_hist = max_seq_len
        return spec

    def popularity_scores(self, split: ExampleSet) -> np.ndarray:
        """The popularity baseline: training popularity of each example's item."""
        return self.item_popularity[split.item].astype(np.float64)

    def user_ages(self, split: ExampleSet) -> np.ndarray:
        """Age (or ML-1M age bucket) of each example's user; -1 when unknown."""
        return self.corpus.user_age[split.user]


def _scenario_order(name: str) -> tuple[str, float | str]:
    """Sort key of scenario names: numerically by value where the value is a number ("age:18" < "age:25")."""
    field_name, _, value = name.partition(":")
    try:
        return field_name, float(value)
    except ValueError:
        return field_name, value


def _counts(c: _Corpus, user: np.ndarray, item: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Point-in-time counters for (user, item, moment) rows: ratings of the item before the moment,
    ratings >= 4 of the item before it, and the user's earlier ratings in the item's category."""
    n = len(c.item_code) + 1
    g = np.arange(len(c.item_code))
    out = np.zeros((len(item), 3), dtype=np.int32)
    for col, sel in ((0, np.ones(len(g), bool)), (1, c.stars >= 4)):
        keys = np.sort(c.item_code[sel] * n + g[sel])
        out[:, col] = np.searchsorted(keys, item * n + when) - np.searchsorted(keys, item * n)
    cat_codes = {cat: k for k, cat in enumerate(sorted(set(c.item_cat)))}
    item_cat = np.array([cat_codes[x] for x in c.item_cat])
    uc = c.user_code * len(cat_codes) + item_cat[c.item_code]
    keys = np.sort(uc * n + g)
    q = user * len(cat_codes) + item_cat[item]
    out[:, 2] = np.searchsorted(keys, q * n + when) - np.searchsorted(keys, q * n)
    return out


def _sample_negatives(rng: np.random.Generator, pop: np.ndarray, users: np.ndarray, per_row: int,
                      rated: np.ndarray, n_items: int) -> np.ndarray:
    """`per_row` distinct popularity-sampled items per user row, none of which the user ever rated.

    `rated` is the sorted array of user * n_items + item keys of every rating in the data set.
    """
    p = pop / pop.sum()
    out = np.full((len(users), per_row), -1, dtype=np.int64)
    todo = np.arange(len(users))
    for _ in range(1000):
        if not len(todo):
            break
        cand = rng.choice(n_items, size=(len(todo), 2 * per_row + 4), p=p)
        keys = users[todo, None] * n_items + cand
        pos = np.minimum(np.searchsorted(rated, keys), len(rated) - 1)
        ok = rated[pos] != keys  # not a rated (user, item) pair
        if per_row == 1:
            has = ok.any(1)
            out[todo[has], 0] = cand[has, ok[has].argmax(1)]
            todo = todo[~has]
            continue
        left = []
        for r, row, row_ok in zip(todo.tolist(), cand.tolist(), ok.tolist(), strict=True):
            chosen = [int(x) for x in out[r] if x >= 0]
            for i, good in zip(row, row_ok, strict=True):
                if good and i not in chosen and len(chosen) < per_row:
                    chosen.append(i)
            out[r, : len(chosen)] = chosen
            if len(chosen) < per_row:
                left.append(r)
        todo = np.array(left, dtype=np.int64)
    if len(todo):
        raise ValueError("not enough unrated items with training popularity to sample negatives from")
    return out


def chronological_protocol(ml: MovieLens, n_eval_negatives: int = 50, seed: int = 0,
                           max_hist: int = 50) -> RankingProtocol:
    """Protocol (a): leave-last-out per user, 1:1 training negatives, popularity-sampled test sessions."""
    rng = np.random.default_rng(seed)
    c = _Corpus(ml, np.ones(len(ml.ratings), dtype=bool), typed=True)
    n_items = len(c.item_ids)
    rated = np.unique(c.user_code * n_items + c.item_code)
    tr_u, tr_end, tr_g, ev = [], [], [], {"valid": [], "test": []}
    for u, rows in enumerate(c.user_rows):
        n = len(rows)
        if n < 3:
            continue
        tr_u.append(np.full(n - 2, u))
        tr_end.append(np.arange(n - 2))
        tr_g.append(rows[: n - 2])
        ev["valid"].append((u, n - 2, rows[n - 2]))
        ev["test"].append((u, n - 1, rows[n - 1]))
    user, end, when = np.concatenate(tr_u), np.concatenate(tr_end), np.concatenate(tr_g)
    pos_item = c.item_code[when]
    pop = np.bincount(pos_item, minlength=n_items).astype(np.float64)
    neg_item = _sample_negatives(rng, pop, user, 1, rated, n_items)[:, 0]
    cat = np.concatenate
    train = (cat([user, user]), cat([end, end]), cat([pos_item, neg_item]),
             cat([np.ones(len(user)), np.zeros(len(user))]).astype(np.float32), cat([when, when]))
    splits = {"train": ExampleSet(c, *train, sessions=None, max_hist=max_hist)}
    for name, rows in ev.items():
        u = np.array([r[0] for r in rows])
        e, g = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
        negs = _sample_negatives(rng, pop, u, n_eval_negatives, rated, n_items)
        k = n_eval_negatives + 1
        items = np.concatenate([c.item_code[g][:, None], negs], axis=1).reshape(-1)
        labels = np.tile(np.r_[1.0, np.zeros(n_eval_negatives)], len(u)).astype(np.float32)
        splits[name] = ExampleSet(c, np.repeat(u, k), np.repeat(e, k), items, labels, np.repeat(g, k),
                                  sessions=np.repeat(u, k), max_hist=max_hist)
    for s in splits.values():
        s.counts = _counts(c, s.user, s.item, s.when)
    stats = {"users": len(ev["test"]), "items": n_items, "train_examples": len(splits["train"]),
             "train_positives": len(user), "valid_sessions": len(ev["valid"]),
             "test_sessions": len(ev["test"]), "eval_negatives_per_session": n_eval_negatives}
    return RankingProtocol("chronological", splits["train"], splits["valid"], splits["test"], pop,
                           CHRONO_DENSE, stats)


def recbole_protocol(ml: MovieLens, seed: int = 0, max_hist: int = 50) -> RankingProtocol:
    """Protocol (b): RecBole's ML-1M context-aware benchmark (drop 3s, label >= 4, random 8:1:1).

    On an event log the same split with label = purchase (every interaction kept): an interaction that
    ended in a purchase against one that stopped at a click or an add-to-cart.
    """
    keep = ml.ratings.rating != 3 if ml.source == "movielens" else np.ones(len(ml.ratings), dtype=bool)
    c = _Corpus(ml, keep, typed=False)
    n = len(c.item_code)
    end = np.empty(n, dtype=np.int64)
    for rows in c.user_rows:
        end[rows] = np.arange(len(rows))  # earlier kept ratings of the same user = DIN's history
    labels = (c.stars >= ml.purchase_min).astype(np.float32)
    if not 0 < labels.sum() < n:
        raise ValueError(f"{ml.name}: every interaction is {'a purchase' if labels.sum() else 'not a purchase'}, so "
                         "a purchase label has one class; this protocol needs both")
    order = np.random.default_rng(seed).permutation(n)
    n_eval = int(0.1 * n)  # RecBole's _calcu_split_ids: valid and test rounded down, train the rest
    a, b = n - 2 * n_eval, n - n_eval
    full = ExampleSet(c, c.user_code, end, c.item_code, labels, np.arange(n), max_hist=max_hist)
    train, valid, test = (full.subset(np.sort(order[s])) for s in (slice(0, a), slice(a, b), slice(b, n)))
    pop = np.bincount(train.item[train.labels > 0.5], minlength=len(c.item_ids)).astype(np.float64)
    stats = {"interactions": n, "train": len(train), "valid": len(valid), "test": len(test),
             "positive_rate": float(labels.mean())}
    return RankingProtocol("recbole", train, valid, test, pop, (), stats)
