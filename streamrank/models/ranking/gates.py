"""Gate networks of the MoE rankers.

`BehaviourGate` is AW-MoE's gate (Eq. 6-8): its own MLPs over the shared embeddings, a gate unit
G_t = f_g(h'_t, h'_c) in R^K and an activation unit a_t = f'_a(h'_t, h'_c) per behaviour, and
g = sum_t a_t G_t over the present behaviours. The context c is the query (search: the gate depends on
the user and the request only, so it is computed once per request) or the target item (recommendation:
once per candidate). Without GU, G_t = W h'_t (a linear map of the behaviour alone); without AU, a_t = 1;
without both ("Base"), g = W sum_t h'_t.

`CategoryGate` is Category-MoE's gate: an FFN on one category embedding (the target item's category, or
the query when the gate context is the query: our data has no query category).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from streamrank.features.batch import ItemSide, UserSide
from streamrank.models.layers import FeatureEmbedder, PairUnit, mlp
from streamrank.models.ranking.config import RankingConfig


class BehaviourGate(nn.Module):
    """AW-MoE gate network; returns raw (unnormalised) gate vectors."""

    def __init__(self, embed: FeatureEmbedder, cfg: RankingConfig) -> None:
        super().__init__()
        d, k = cfg.hidden_dim, cfg.num_experts
        self.cfg = cfg
        self.mlp_b = mlp(embed.behaviour_dim, cfg.input_mlp_hidden, d)
        uses_context = cfg.gate_unit or cfg.activation_unit
        ctx_dim = embed.query_dim if cfg.gate_context == "query" else embed.item_dim
        self.mlp_c = mlp(ctx_dim, cfg.input_mlp_hidden, d) if uses_context else None
        self.unit: nn.Module = PairUnit(d, cfg.gate_unit_hidden, k) if cfg.gate_unit else nn.Linear(d, k)
        self.attention = PairUnit(d, cfg.au_hidden, 1) if cfg.activation_unit else None

    @property
    def per_candidate(self) -> bool:
        """Whether the gate differs between candidates of one request (target-item context)."""
        return self.cfg.gate_context == "target" and (self.cfg.gate_unit or self.cfg.activation_unit)

    def forward(self, embed: FeatureEmbedder, users: UserSide, items: ItemSide, owner: Tensor,
                h: Tensor | None = None) -> Tensor:
        """Gate vectors: (N, K) if `per_candidate`, else (U, K) (one per user row / request).

        `h`: h'_t (U, T, d) when the caller computed them already (`RankingModel.behaviour_hidden`).
        """
        if h is None:
            h = embed.behaviour_hidden(users, [self.mlp_b])[0]  # (U, T, d), once per distinct behaviour
        mask = users.hist_mask.unsqueeze(-1).to(h.dtype)
        if self.mlp_c is None:  # Base: no context at all
            return (self.unit(h) * mask).sum(1)
        if self.per_candidate:
            c, pair_owner = self.mlp_c(embed.items(items)), owner  # (N, d)
            mask = mask.index_select(0, owner)
        else:
            c, pair_owner = self.mlp_c(embed.query(users)), None  # (U, d), once per request
        if self.cfg.gate_unit:
            g_t = self.unit(h, c, pair_owner)  # (rows, T, K)
        else:
            g_t = self.unit(h)  # linear in h'_t alone: per user row, then gathered
            if pair_owner is not None:
                g_t = g_t.index_select(0, pair_owner)
        if self.attention is not None:
            g_t = g_t * self.attention(h, c, pair_owner)  # a_t: (rows, T, 1)
        return (g_t * mask).sum(1)


class CategoryGate(nn.Module):
    """Category-MoE gate: FFN(E(category)) -> K, per candidate (target) or per request (query)."""

    def __init__(self, embed: FeatureEmbedder, cfg: RankingConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = mlp(embed.dim, cfg.category_gate_hidden, cfg.num_experts)

    @property
    def per_candidate(self) -> bool:
        """Whether the gate differs between candidates of one request."""
        return self.cfg.gate_context == "target"

    def forward(self, embed: FeatureEmbedder, users: UserSide, items: ItemSide, owner: Tensor) -> Tensor:
        """Gate vectors: (N, K) for the target-category context, (U, K) for the query context."""
        e = embed.category(items) if self.per_candidate else embed.query(users)
        return self.net(e)


def expand_gate(gate: nn.Module, g: Tensor, owner: Tensor) -> Tensor:
    """Per-candidate gate vectors (N, K) from a gate's output (rows are users unless per_candidate)."""
    return g if getattr(gate, "per_candidate", True) else g.index_select(0, owner)


def normalise(g: Tensor, how: str) -> Tensor:
    """Expert weights w from gate vectors g: softmax over experts, or g unchanged."""
    return torch.softmax(g, dim=-1) if how == "softmax" else g
