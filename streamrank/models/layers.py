"""Layers shared by the ranking (and later scenario/retrieval) models.

- `mlp`: a ReLU feed-forward stack.
- `GrowableEmbedding` / `FeatureEmbedder`: the shared embedding layer E over a `FeatureSpec`, whose tables
  append rows when the vocabularies grow (online learning admits new ids) and re-initialise the rows of
  expired ids that a vocabulary handed out again (see docs/vocabulary.md).
- `PairUnit`: the DIN activation unit / AW-MoE gate unit, an FFN over [h, v, h - v, h * v], with its first
  layer decomposed: W [h, v, h-v, h*v] + b = (W1 + W3 + W4 diag(v)) h + ((W2 - W3) v + b), so the
  concatenation is never built: per candidate a d x H matrix and a bias are formed once, and the only
  C x T work is one batched matmul with the user's (unexpanded) behaviour vectors.
- `ParallelExperts`: K identically shaped FFNs evaluated as batched matrix products.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamrank.features.batch import ItemSide, UserSide
from streamrank.features.spec import NUM_TYPE_ROWS, FeatureSpec


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None = None,
        final_act: bool = False) -> nn.Sequential:
    """Linear+ReLU layers of sizes `hidden`, then a linear output layer of `out_dim` (if given)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
        if final_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def eval_probabilities(model: nn.Module, batch: object) -> Tensor:
    """Click probabilities of `model(batch).logits` in eval mode (dropout-free, no branch counting),
    restoring training mode afterwards; the scorer's models stay in eval mode and skip the switch."""
    if not model.training:
        return torch.sigmoid(model(batch).logits)
    model.eval()
    try:
        return torch.sigmoid(model(batch).logits)
    finally:
        model.train(True)


class RowStateOwner(Protocol):
    """An optimizer that keeps per-row state for embedding tables (streamrank.train.optim.ModelOptimizer):
    it is told which rows were re-initialised so that their state restarts too."""

    def reset_rows(self, table: GrowableEmbedding, rows: Tensor) -> None:
        """Forget the optimizer state of `rows` of `table`."""
        ...


class GrowableEmbedding(nn.Module):
    """An embedding table whose row 0 (padding / missing) is zero, that can append rows and reset rows.

    The table has a capacity (allocated rows) and a size (`num`, the rows the vocabulary uses). Growth within
    the capacity only moves `num` (the spare rows are initialised when allocated); past it the capacity
    doubles (at least to the new size), which replaces the Parameter: ~log2(vocabulary) replacements over a
    stream instead of one per batch. Only the first `num` rows are saved (`state_dict`), and loading accepts
    any number of rows, so artefacts do not depend on capacity. With `sparse` set (the row-wise optimizer
    does that) the gradient is a sparse tensor holding only the rows a batch looked up.
    `reset_rows` works in place (same Parameter), so an optimizer stays valid.
    """

    def __init__(self, num: int, dim: int, std: float = 0.05) -> None:
        super().__init__()
        self.dim, self.std = dim, std
        self.sparse = False
        self._num = max(num, 2)
        w = torch.randn(self._num, dim) * std
        w[0] = 0.0
        self.weight = nn.Parameter(w)

    def _init_rows(self, n: int) -> Tensor:
        """Fresh values for `n` rows (the initialisation of every non-padding row)."""
        return (torch.randn(n, self.dim, device=self.weight.device) * self.std).to(self.weight.dtype)

    @property
    def num(self) -> int:
        """Rows in use (the vocabulary's size after `sync`)."""
        return self._num

    @property
    def capacity(self) -> int:
        """Rows allocated."""
        return int(self.weight.shape[0])

    def forward(self, idx: Tensor) -> Tensor:
        """Embeddings of `idx` (row 0 is zero and receives no gradient)."""
        return F.embedding(idx, self.weight, padding_idx=0, sparse=self.sparse)

    def grow_to(self, num: int) -> bool:
        """Make room for `num` rows; returns whether the Parameter was replaced (capacity exceeded)."""
        if num <= self._num:
            return False
        self._num, cap = num, self.capacity
        if num <= cap:
            return False
        extra = self._init_rows(max(num, 2 * cap) - cap)
        self.weight = nn.Parameter(torch.cat([self.weight.data, extra]))
        return True

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        w = self.weight if keep_vars else self.weight.detach()
        destination[prefix + "weight"] = w[: self._num]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        src = state_dict[key]
        if src.dim() != 2 or src.shape[1] != self.dim:
            error_msgs.append(f"size mismatch for {key}: ({self.dim}-dim rows expected) got {tuple(src.shape)}")
            return
        rows = int(src.shape[0])
        with torch.no_grad():
            if rows > self.capacity:
                self.weight = nn.Parameter(src.detach().clone().to(self.weight.device, self.weight.dtype))
            else:
                self.weight[:rows] = src.to(self.weight.device, self.weight.dtype)
        self._num = max(rows, 2)

    @torch.no_grad()
    def reset_rows(self, rows: Sequence[int], optimizer: torch.optim.Optimizer | RowStateOwner | None = None) -> int:
        """Re-initialise `rows` in place (as new rows are initialised); returns how many were reset.

        Row 0 (padding) and rows beyond the table (not appended yet: `grow_to` initialises them) are
        skipped. With `optimizer`, the state of those rows restarts too: a row-wise optimizer
        (`RowStateOwner`) is told; for a torch optimizer every state tensor shaped like the weight
        (AdamW's exp_avg / exp_avg_sq) is zeroed at those rows, and scalar state (AdamW's step) is left alone.
        """
        idx = sorted({r for r in rows if 0 < r < self._num})
        if not idx:
            return 0
        t = torch.tensor(idx, dtype=torch.long, device=self.weight.device)
        self.weight.index_copy_(0, t, self._init_rows(len(idx)))
        if isinstance(optimizer, torch.optim.Optimizer):
            for v in optimizer.state.get(self.weight, {}).values():
                if isinstance(v, Tensor) and v.shape == self.weight.shape:
                    v.index_fill_(0, t.to(v.device), 0)
        elif optimizer is not None:
            optimizer.reset_rows(self, t)
        return len(idx)


def drain_recycled(spec: FeatureSpec) -> dict[str, list[int]]:
    """Per vocabulary, the rows handed to new ids since the last call (see `FeatureEmbedder.sync`)."""
    return {name: list(v.drain_recycled()) for name, v in spec.vocabs.items()}


def _key(vocab_name: str) -> str:
    return vocab_name.replace(".", "__")  # ModuleDict keys cannot contain dots


class FeatureEmbedder(nn.Module):
    """The shared embedding layer E: one table per vocabulary of the spec, plus the behaviour-type table.

    Field groups (all embeddings have size `dim`):
      behaviour b_t  = [item, category, type]                                     -> behaviour_dim
      target item v  = [item, category, brand, shop, item fields..., mean(tags)]  -> item_dim
      query q        = [query]                                                    -> dim
      other o        = [user id?, user fields..., scenario] ++ dense              -> other_dim
    """

    def __init__(self, spec: FeatureSpec, dim: int) -> None:
        super().__init__()
        self.spec, self.dim = spec, dim
        self.tables = nn.ModuleDict({_key(n): GrowableEmbedding(len(v), dim) for n, v in spec.vocabs.items()})
        self.type_table = GrowableEmbedding(NUM_TYPE_ROWS, dim)
        self.behaviour_dim = 3 * dim
        self.item_dim = (4 + len(spec.item_fields) + (1 if spec.max_tags else 0)) * dim
        self.query_dim = dim
        self.other_user_dim = (int(spec.use_user_id) + len(spec.user_fields) + 1) * dim
        self.other_dim = self.other_user_dim + len(spec.dense)

    def table(self, vocab_name: str) -> GrowableEmbedding:
        """The embedding table of a vocabulary."""
        return self.tables[_key(vocab_name)]  # type: ignore[return-value]

    def sync(self, optimizer: torch.optim.Optimizer | RowStateOwner | None = None,
             recycled: dict[str, list[int]] | None = None) -> bool:
        """Bring every table in line with its vocabulary; returns whether any table changed shape.

        Rows of indices the vocabulary handed out again since the last sync (`Vocab.drain_recycled`: an
        expired id's row now belongs to a new id) are re-initialised like new rows, so a new id never
        inherits an old embedding (with `optimizer`, their optimizer moments are zeroed too; see
        `GrowableEmbedding.reset_rows`); then tables are grown to the vocabulary sizes. Only growth
        replaces Parameters, so only a True return requires the caller to rebuild its optimizer.
        This drains the vocabularies' recycled records: one model per spec. A model with several embedders
        over one spec drains once (`drain_recycled`) and passes the same `recycled` to each.
        """
        grew = False
        recycled = drain_recycled(self.spec) if recycled is None else recycled
        for name, v in self.spec.vocabs.items():
            table = self.table(name)
            table.reset_rows(recycled.get(name, []), optimizer)
            grew |= table.grow_to(len(v))
        return grew

    def behaviours(self, users: UserSide) -> Tensor:
        """E(b_t) for every position: (U, T, behaviour_dim); padded positions are not zeroed here."""
        return torch.cat([self.table("item")(users.hist_item), self.table("category")(users.hist_cat),
                          self.type_table(users.hist_type)], dim=-1)

    def behaviour_hidden(self, users: UserSide, nets: Sequence[nn.Module]) -> list[Tensor]:
        """net(E(b_t)) for every position and each net: a list of (U, T, out) tensors.

        A behaviour's input is its (item, category, type) alone, and a batch holds far fewer distinct
        triples than positions (U x T), so each net runs once per distinct triple and the results are
        gathered back to the positions: the same values as net(behaviours(users)), for a fraction of the
        work (see docs/benchmarks/train-throughput.md). Padded positions are the (PAD, PAD, PAD) triple.
        """
        n_cat, n_type = self.table("category").capacity, self.type_table.capacity
        key = (users.hist_item * n_cat + users.hist_cat) * n_type + users.hist_type
        uniq, inverse = torch.unique(key, return_inverse=True)
        rest = torch.div(uniq, n_type, rounding_mode="floor")
        e = torch.cat([self.table("item")(torch.div(rest, n_cat, rounding_mode="floor")),
                       self.table("category")(rest % n_cat), self.type_table(uniq % n_type)], dim=-1)
        return [F.embedding(inverse, net(e)) for net in nets]

    def items(self, items: ItemSide) -> Tensor:
        """E(v) for every candidate: (N, item_dim)."""
        parts = [self.table("item")(items.item), self.table("category")(items.category),
                 self.table("brand")(items.brand), self.table("shop")(items.shop)]
        parts += [self.table(f"item.{f}")(items.item_fields[:, j])
                  for j, f in enumerate(self.spec.item_fields)]
        if self.spec.max_tags:
            tag_mask = (items.tags > 0).unsqueeze(-1).float()
            tag_sum = (self.table("tag")(items.tags) * tag_mask).sum(1)
            parts.append(tag_sum / tag_mask.sum(1).clamp_min(1.0))
        return torch.cat(parts, dim=-1)

    def category(self, items: ItemSide) -> Tensor:
        """E(category of the target item): (N, dim)."""
        return self.table("category")(items.category)

    def query(self, users: UserSide) -> Tensor:
        """E(q): (U, dim); an empty query is the zero vector."""
        return self.table("query")(users.query)

    def other_user(self, users: UserSide) -> Tensor:
        """The user-side part of E(o): (U, other_user_dim)."""
        parts = [self.table("user")(users.user)] if self.spec.use_user_id else []
        parts += [self.table(f"user.{f}")(users.user_fields[:, j])
                  for j, f in enumerate(self.spec.user_fields)]
        parts.append(self.table("scenario")(users.scenario))
        return torch.cat(parts, dim=-1)

    def other(self, users: UserSide, items: ItemSide, owner: Tensor | None) -> Tensor:
        """E(o) per candidate: user part (gathered by `owner`) ++ dense features: (N, other_dim)."""
        u = self.other_user(users)
        if owner is not None:
            u = u.index_select(0, owner)
        return torch.cat([u, items.dense], dim=-1)


class PairUnit(nn.Module):
    """FFN over [h, v, h - v, h * v] -> `out_dim`, for sequence items h and one context vector v.

    forward(h: (U, T, d), v: (N, d), owner: (N,) | None) -> (N, T, out_dim). With `owner` given, user row
    owner[n] pairs with candidate n and the h-terms of the first layer are computed per user row only;
    with owner None, N == U and v is per user (e.g. the query). `forward_naive` builds the concatenation
    explicitly and is kept as the reference implementation for tests.
    """

    def __init__(self, dim: int, hidden: Sequence[int], out_dim: int) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("PairUnit needs at least one hidden layer")
        self.dim = dim
        self.first = nn.Linear(4 * dim, hidden[0])
        self.rest = nn.Sequential(nn.ReLU(), *mlp(hidden[0], hidden[1:], out_dim))

    def forward(self, h: Tensor, v: Tensor, owner: Tensor | None = None) -> Tensor:
        """Unit outputs (N, T, out_dim) via the decomposed first layer (see the class docstring)."""
        w1, w2, w3, w4 = self.first.weight.split(self.dim, dim=1)  # each (H, d)
        m = (w1 + w3).unsqueeze(0) + w4.unsqueeze(0) * v.unsqueeze(1)  # per candidate: (N, H, d)
        c = F.linear(v, w2 - w3, self.first.bias)  # per candidate: (N, H)
        if owner is not None:
            n = owner.shape[0]
            # one request (all candidates share user row 0): broadcast instead of copying h C times
            h = h.expand(n, -1, -1) if h.shape[0] == 1 else h.index_select(0, owner)
        z = torch.baddbmm(c.unsqueeze(1), h, m.transpose(1, 2))  # the only N x T term: (N, T, H)
        return self.rest(z)

    def forward_naive(self, h: Tensor, v: Tensor, owner: Tensor | None = None) -> Tensor:
        """Reference: the textbook unit on the explicit concatenation."""
        if owner is not None:
            h = h.index_select(0, owner)
        vv = v.unsqueeze(1).expand_as(h)
        return self.rest(self.first(torch.cat([h, vv, h - vv, h * vv], dim=-1)))


class ParallelExperts(nn.Module):
    """K FFNs of identical shape (in_dim -> hidden... -> out_dim) with separate parameters.

    Evaluated as batched matmuls: x (N, in_dim) -> (N, K, out_dim). Initialised like nn.Linear.
    """

    def __init__(self, num_experts: int, in_dim: int, hidden: Sequence[int], out_dim: int = 1) -> None:
        super().__init__()
        sizes = [in_dim, *hidden, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(num_experts, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_experts, 1, b).uniform_(-bound, bound)))

    def forward(self, x: Tensor) -> Tensor:
        """Every expert on every row: (N, in_dim) -> (N, K, out_dim)."""
        xk = x.unsqueeze(0).expand(len(self.weights[0]), -1, -1)
        z = torch.baddbmm(self.biases[0], xk, self.weights[0])
        for w, b in zip(self.weights[1:], self.biases[1:], strict=True):
            z = torch.baddbmm(b, torch.relu(z), w)
        return z.transpose(0, 1)  # (N, K, out_dim)
