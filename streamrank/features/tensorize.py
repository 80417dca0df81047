"""The one tensorisation path: raw examples / requests -> `Batch` tensors.

Used by the offline benchmark (MovieLens examples), the online trainer (TrainingSample protobufs,
`encode_samples`) and the scorer (`encode_request`). With `grow=True` (training) unseen ids are
admitted to the vocabularies; with `grow=False` (evaluation, serving) they map to the OOV bucket.
The scenario is routed here too (`UserSide.branch`), so every path sends a scenario to the same branch.
Sequences keep the `max_seq_len` most recent behaviours, oldest first, right-padded with PAD and masked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
import torch

from streamrank.features.batch import Batch, ItemSide, UserSide
from streamrank.features.columns import ItemColumns, UserColumns, sample_columns
from streamrank.features.raw import Candidate, RawExample, RequestContext
from streamrank.features.spec import DENSE_FEATURES, NUM_TYPE_ROWS, DenseInputs, FeatureSpec
from streamrank.features.vocab import OOV

if TYPE_CHECKING:
    from streamrank.v1.features_pb2 import TrainingSample

def _ids(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


class Tensorizer:
    """Turns raw inputs into tensors according to a `FeatureSpec` (mutating its vocabularies on grow).

    Every input form is first laid out as columns (`UserColumns`, `ItemColumns`: one list per field), and
    one columnar core turns columns into tensors: a vocabulary lookup per field over the whole batch, and
    behaviour sequences flattened into one lookup each and scattered into the padded (N, T) arrays. The
    forms are the dataclasses of `features.raw` (offline data, the scorer) and, for the online trainer,
    TrainingSample messages read directly (`encode_samples`), with sequences shared by several samples of
    the batch (a request's impressions) encoded once.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._dense_fns = [DENSE_FEATURES[name] for name in spec.dense]

    # ------------------------------------------------------------------------------------ the core
    def _histories(self, items: list[Sequence[str]], cats: list[Sequence[str]], types: list[Sequence[int]],
                   grow: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Padded (n, T) item, category and type rows and the mask of n sequences (each at most T long)."""
        v, n, t_max = self.spec.vocabs, len(items), self.spec.max_seq_len
        out = [np.zeros((n, t_max), dtype=np.int64) for _ in range(3)]
        mask = np.zeros((n, t_max), dtype=bool)
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=n)
        total = int(lengths.sum())
        if total:
            rows = np.repeat(np.arange(n), lengths)
            cols = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            out[0][rows, cols] = v["item"].lookup_many(list(chain.from_iterable(items)), grow)
            out[1][rows, cols] = v["category"].lookup_many(list(chain.from_iterable(cats)), grow)
            t = np.fromiter(chain.from_iterable(types), dtype=np.int64, count=total)
            # the closed type table: PAD 0, OOV 1, EventType t -> t + 2
            out[2][rows, cols] = np.where((t >= 0) & (t < NUM_TYPE_ROWS - 2), t + 2, OOV)
            mask[rows, cols] = True
        return out[0], out[1], out[2], mask

    def _users(self, c: UserColumns, grow: bool) -> UserSide:
        spec, v = self.spec, self.spec.vocabs
        n = len(c.user_ids)
        hist_item, hist_cat, hist_type, mask = self._histories(c.items, c.categories, c.types, grow)
        if c.history_of is not None:  # distinct sequences were encoded: one row per user row
            rows = np.asarray(c.history_of, dtype=np.int64)
            hist_item, hist_cat, hist_type, mask = hist_item[rows], hist_cat[rows], hist_type[rows], mask[rows]
        user = (np.asarray(v["user"].lookup_many(c.user_ids, grow), dtype=np.int64) if spec.use_user_id
                else np.zeros(n, dtype=np.int64))
        ufields = np.zeros((n, len(spec.user_fields)), dtype=np.int64)
        for j, f in enumerate(spec.user_fields):
            ufields[:, j] = v[f"user.{f}"].lookup_many(c.user_fields[j], grow)
        return UserSide(
            user=torch.from_numpy(user), user_fields=torch.from_numpy(ufields),
            query=_ids(v["query"].lookup_many(c.queries, grow)),
            scenario=_ids(v["scenario"].lookup_many(c.scenarios, grow)),
            hist_item=torch.from_numpy(hist_item), hist_cat=torch.from_numpy(hist_cat),
            hist_type=torch.from_numpy(hist_type), hist_mask=torch.from_numpy(mask),
            branch=_ids([spec.branch_of(x) for x in c.scenarios]),
        )

    def _items(self, c: ItemColumns, grow: bool) -> ItemSide:
        spec, v = self.spec, self.spec.vocabs
        n = len(c.item_ids)
        ifields = np.zeros((n, len(spec.item_fields)), dtype=np.int64)
        for j, f in enumerate(spec.item_fields):
            ifields[:, j] = v[f"item.{f}"].lookup_many(c.item_fields[j], grow)
        tags = np.zeros((n, spec.max_tags), dtype=np.int64)
        if spec.max_tags and c.tags is not None:
            for i, ts in enumerate(c.tags):
                ts = ts[: spec.max_tags]
                if ts:
                    tags[i, : len(ts)] = v["tag"].lookup_many(ts, grow)
        dense = np.zeros((n, len(self._dense_fns)), dtype=np.float32)
        if self._dense_fns and n:
            counts = np.asarray(c.counts, dtype=np.float64).reshape(n, 5)
            d = DenseInputs(*counts.T, np.asarray(c.prices, dtype=np.float64),
                            np.asarray(c.history_lens, dtype=np.float64))
            for j, fn in enumerate(self._dense_fns):
                dense[:, j] = fn(d)
        return ItemSide(
            item=_ids(v["item"].lookup_many(c.item_ids, grow)),
            category=_ids(v["category"].lookup_many(c.categories, grow)),
            brand=_ids(v["brand"].lookup_many(c.brands, grow)), shop=_ids(v["shop"].lookup_many(c.shops, grow)),
            item_fields=torch.from_numpy(ifields), tags=torch.from_numpy(tags), dense=torch.from_numpy(dense),
        )

    # ----------------------------------------------------------------------------------------- users
    def encode_contexts(self, contexts: Sequence[RequestContext], grow: bool = False) -> UserSide:
        """Encode the user side of requests: one row per context."""
        t_max, fields = self.spec.max_seq_len, self.spec.user_fields
        seqs = [ctx.behaviors.last(t_max) for ctx in contexts]
        return self._users(UserColumns(
            user_ids=[ctx.user_id for ctx in contexts], queries=[ctx.query for ctx in contexts],
            scenarios=[ctx.scenario for ctx in contexts],
            user_fields=[[ctx.user_fields.get(f, "") for ctx in contexts] for f in fields],
            items=[b.item_ids for b in seqs], categories=[b.categories for b in seqs],
            types=[b.types for b in seqs]), grow)

    # ------------------------------------------------------------------------------------ candidates
    def encode_candidates(self, candidates: Sequence[Candidate], history_lens: Sequence[int],
                          grow: bool = False) -> ItemSide:
        """Encode candidates; `history_lens[n]` is the full behaviour count of candidate n's user."""
        return self._items(ItemColumns(
            item_ids=[c.item_id for c in candidates], categories=[c.item.category for c in candidates],
            brands=[c.item.brand for c in candidates], shops=[c.item.shop for c in candidates],
            item_fields=[[c.item.fields.get(f, "") for c in candidates] for f in self.spec.item_fields],
            tags=[c.item.tags for c in candidates],
            counts=[(c.counts.item_impressions, c.counts.item_clicks, c.counts.item_purchases,
                     c.counts.user_item_clicks, c.counts.user_category_clicks) for c in candidates],
            prices=[math.nan if c.item.price is None else c.item.price for c in candidates],
            history_lens=list(history_lens)), grow)

    # ----------------------------------------------------------------------------------- whole batches
    def labels(self, examples: Sequence[RawExample]) -> torch.Tensor:
        """The spec's training label of each example as a float tensor."""
        name = self.spec.label
        return torch.tensor([float(getattr(ex.labels, name)) for ex in examples], dtype=torch.float32)

    def encode(self, examples: Sequence[RawExample], grow: bool = False) -> Batch:
        """Encode independent labelled examples: one user row per example (training layout)."""
        users = self.encode_contexts([ex.context() for ex in examples], grow)
        items = self.encode_candidates([ex.candidate() for ex in examples],
                                       [len(ex.behaviors) for ex in examples], grow)
        return Batch(users, items, torch.arange(len(examples)), self.labels(examples))

    def encode_samples(self, samples: Sequence[TrainingSample], grow: bool = False,
                       group_users: bool = False) -> Batch:
        """Encode TrainingSample messages directly, exactly as `encode([RawExample.from_sample(s) ...])`
        would (a test holds them equal), without building the dataclasses: the online trainer's path.
        With `group_users`, samples with the same user side share a user row (`owner` maps them)."""
        users, items, owner = sample_columns(samples, self.spec, group_users)
        name = self.spec.label
        labels = torch.tensor([float(getattr(s.labels, name)) for s in samples], dtype=torch.float32)
        return Batch(self._users(users, grow), self._items(items, grow), torch.tensor(owner, dtype=torch.long),
                     labels)

    def encode_requests(self, requests: Sequence[tuple[RequestContext, Sequence[Candidate]]],
                        grow: bool = False) -> Batch:
        """Encode several requests: one user row per request, candidates joined by `owner`."""
        contexts = [ctx for ctx, _ in requests]
        cands = [c for _, cs in requests for c in cs]
        owner = [i for i, (_, cs) in enumerate(requests) for _ in cs]
        hl = [len(requests[o][0].behaviors) for o in owner]
        users = self.encode_contexts(contexts, grow)
        items = self.encode_candidates(cands, hl, grow)
        return Batch(users, items, torch.tensor(owner, dtype=torch.long))

    def encode_request(self, context: RequestContext, candidates: Sequence[Candidate],
                       grow: bool = False) -> Batch:
        """Encode one request (the scorer's unit of work): one user row, C candidates."""
        return self.encode_requests([(context, candidates)], grow)
