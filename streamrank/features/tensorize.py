"""The one tensorisation path: raw examples / requests -> `Batch` tensors.

Used by the offline benchmark (MovieLens examples), the online trainer (TrainingSample protobufs via
`RawExample.from_sample`) and the scorer (`encode_request`). With `grow=True` (training) unseen ids are
admitted to the vocabularies; with `grow=False` (evaluation, serving) they map to the OOV bucket.
The scenario is routed here too (`UserSide.branch`), so every path sends a scenario to the same branch.
Sequences keep the `max_seq_len` most recent behaviours, oldest first, right-padded with PAD and masked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from streamrank.features.batch import Batch, ItemSide, UserSide
from streamrank.features.raw import Candidate, RawExample, RequestContext
from streamrank.features.spec import DENSE_FEATURES, NUM_TYPE_ROWS, DenseInputs, FeatureSpec
from streamrank.features.vocab import OOV, PAD

# Index of a behaviour type in the closed type table (PAD 0, OOV 1, EventType t -> t + 2).
_TYPE_ROWS = {t: t + 2 for t in range(NUM_TYPE_ROWS - 2)}


class Tensorizer:
    """Turns raw inputs into tensors according to a `FeatureSpec` (mutating its vocabularies on grow)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._dense_fns = [DENSE_FEATURES[name] for name in spec.dense]

    # ----------------------------------------------------------------------------------------- users
    def encode_contexts(self, contexts: Sequence[RequestContext], grow: bool = False) -> UserSide:
        """Encode the user side of requests: one row per context."""
        spec, v = self.spec, self.spec.vocabs
        n, t_max = len(contexts), spec.max_seq_len
        hist_item = np.zeros((n, t_max), dtype=np.int64)
        hist_cat = np.zeros((n, t_max), dtype=np.int64)
        hist_type = np.zeros((n, t_max), dtype=np.int64)
        mask = np.zeros((n, t_max), dtype=bool)
        user = np.zeros(n, dtype=np.int64)
        query = np.zeros(n, dtype=np.int64)
        scenario = np.zeros(n, dtype=np.int64)
        branch = np.zeros(n, dtype=np.int64)
        ufields = np.zeros((n, len(spec.user_fields)), dtype=np.int64)
        type_row = _TYPE_ROWS.get
        for i, ctx in enumerate(contexts):
            b = ctx.behaviors.last(t_max)
            length = len(b)
            if length:
                hist_item[i, :length] = v["item"].lookup_many(b.item_ids, grow)
                hist_cat[i, :length] = v["category"].lookup_many(b.categories, grow)
                hist_type[i, :length] = [type_row(t, OOV) for t in b.types]
                mask[i, :length] = True
            user[i] = v["user"].lookup(ctx.user_id, grow) if spec.use_user_id else PAD
            query[i] = v["query"].lookup(ctx.query, grow)
            scenario[i] = v["scenario"].lookup(ctx.scenario, grow)
            branch[i] = spec.branch_of(ctx.scenario)
            for j, f in enumerate(spec.user_fields):
                ufields[i, j] = v[f"user.{f}"].lookup(ctx.user_fields.get(f, ""), grow)
        return UserSide(
            user=torch.from_numpy(user), user_fields=torch.from_numpy(ufields),
            query=torch.from_numpy(query), scenario=torch.from_numpy(scenario),
            hist_item=torch.from_numpy(hist_item), hist_cat=torch.from_numpy(hist_cat),
            hist_type=torch.from_numpy(hist_type), hist_mask=torch.from_numpy(mask),
            branch=torch.from_numpy(branch),
        )

    # ------------------------------------------------------------------------------------ candidates
    def encode_candidates(self, candidates: Sequence[Candidate], history_lens: Sequence[int],
                          grow: bool = False) -> ItemSide:
        """Encode candidates; `history_lens[n]` is the full behaviour count of candidate n's user."""
        spec, v = self.spec, self.spec.vocabs
        n = len(candidates)

        def ids(vocab: str, tokens: list[str]) -> np.ndarray:
            return np.asarray(v[vocab].lookup_many(tokens, grow), dtype=np.int64)

        item = ids("item", [c.item_id for c in candidates])
        cat = ids("category", [c.item.category for c in candidates])
        brand = ids("brand", [c.item.brand for c in candidates])
        shop = ids("shop", [c.item.shop for c in candidates])
        ifields = np.zeros((n, len(spec.item_fields)), dtype=np.int64)
        for j, f in enumerate(spec.item_fields):
            ifields[:, j] = v[f"item.{f}"].lookup_many([c.item.fields.get(f, "") for c in candidates], grow)
        tags = np.zeros((n, spec.max_tags), dtype=np.int64)
        if spec.max_tags:
            for i, c in enumerate(candidates):
                ts = c.item.tags[: spec.max_tags]
                if ts:
                    tags[i, : len(ts)] = v["tag"].lookup_many(ts, grow)
        dense = np.zeros((n, len(self._dense_fns)), dtype=np.float32)
        if self._dense_fns and n:
            rows = np.array([(c.counts.item_impressions, c.counts.item_clicks, c.counts.item_purchases,
                              c.counts.user_item_clicks, c.counts.user_category_clicks,
                              math.nan if c.item.price is None else c.item.price) for c in candidates],
                            dtype=np.float64).reshape(n, 6)
            d = DenseInputs(*rows.T, np.asarray(history_lens, dtype=np.float64))
            for j, fn in enumerate(self._dense_fns):
                dense[:, j] = fn(d)
        return ItemSide(
            item=torch.from_numpy(item), category=torch.from_numpy(cat), brand=torch.from_numpy(brand),
            shop=torch.from_numpy(shop), item_fields=torch.from_numpy(ifields),
            tags=torch.from_numpy(tags), dense=torch.from_numpy(dense),
        )

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
