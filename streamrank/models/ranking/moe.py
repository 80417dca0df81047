"""`RankingModel`: DNN, DIN, Category-MoE and AW-MoE (with or without CL) as one configurable module.

Input network (Eq. 2-4): h_t = MLP_b(E(b_t)), h_v = MLP_v(E(v)), h_q = MLP_q(E(q)), h_o = MLP_o(E(o));
user vector u = sum_t f_a(h_t, h_v) h_t over present behaviours (DIN) or sum_t h_t (DNN);
x = [u, h_v, h_q, h_o]. Experts (Eq. 5): s_k = FFN_k(x). Output (Eq. 9): y = sigmoid(sum_k w_k s_k) with
w = softmax(g) or g from the gate network; without a gate (DNN, DIN) y = sigmoid(s_1).

A `Batch` holds U user rows and N candidates joined by `owner`; everything that depends only on the user
(behaviour MLPs, the h-terms of the activation unit, a query-context gate) is computed per user row, so
scoring C candidates of one request costs one user-side pass. `score_request` is that API.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from streamrank.features.batch import Batch, UserSide
from streamrank.features.spec import FeatureSpec
from streamrank.models.layers import FeatureEmbedder, PairUnit, ParallelExperts, RowStateOwner, eval_probabilities, mlp
from streamrank.models.ranking.config import RankingConfig
from streamrank.models.ranking.gates import BehaviourGate, CategoryGate, expand_gate, normalise


@dataclass
class RankingOutput:
    """Model outputs for N candidates: logits (N,), expert logits (N, K), raw gate vectors (N, K) or None,
    an auxiliary head's logits (N,) that training adds a loss on (SAML's auxiliary network) or None, and the
    behaviour gate's hidden behaviour vectors (what contrastive learning's masked view reuses) or None."""

    logits: Tensor
    expert_logits: Tensor
    gate: Tensor | None
    aux_logits: Tensor | None = None
    gate_hidden: Tensor | None = None  # the behaviour gate's h'_t (U, T, d), reused by the CL view


class RankingModel(nn.Module):
    """The AW-MoE family; see the module docstring and `RankingConfig` for the flags."""

    # No dropout, no batch statistics, nothing counted: a training-mode forward gives the eval-mode logits,
    # so the online trainer takes its test-then-train prediction from the training step's own forward.
    train_eval_identical = True

    def __init__(self, spec: FeatureSpec, cfg: RankingConfig) -> None:
        super().__init__()
        self.spec, self.cfg = spec, cfg
        self.embed = FeatureEmbedder(spec, cfg.emb_dim)
        d, hid = cfg.hidden_dim, cfg.input_mlp_hidden
        self.mlp_b = mlp(self.embed.behaviour_dim, hid, d)
        self.mlp_v = mlp(self.embed.item_dim, hid, d)
        self.mlp_q = mlp(self.embed.query_dim, hid, d)
        self.mlp_o = mlp(self.embed.other_dim, hid, d)
        self.attention = PairUnit(d, cfg.au_hidden, 1) if cfg.pooling == "attention" else None
        self.experts = ParallelExperts(cfg.num_experts, 4 * d, cfg.expert_hidden, 1)
        self.gate: nn.Module | None
        if cfg.gate == "behaviour":
            self.gate = BehaviourGate(self.embed, cfg)
        elif cfg.gate == "category":
            self.gate = CategoryGate(self.embed, cfg)
        else:
            self.gate = None

    @property
    def groups_user_rows(self) -> bool:
        """Whether training batches should share user rows between a request's samples: true when the
        model does per-user work beyond the behaviour MLPs (a behaviour gate with the query as context,
        computed once per user row); otherwise the gather to candidates would cost more than it saves."""
        return isinstance(self.gate, BehaviourGate) and not self.gate.per_candidate

    # ------------------------------------------------------------------------------------------ parts
    def behaviour_hidden(self, users: UserSide) -> tuple[Tensor, Tensor | None]:
        """h_t of the input network and h'_t of the behaviour gate (None without one): (U, T, d) each,
        both computed once per distinct behaviour of the batch (`FeatureEmbedder.behaviour_hidden`)."""
        nets = [self.mlp_b] + ([self.gate.mlp_b] if isinstance(self.gate, BehaviourGate) else [])
        hs = self.embed.behaviour_hidden(users, nets)
        return hs[0], (hs[1] if len(hs) > 1 else None)

    def user_vectors(self, batch: Batch, h_v: Tensor, h: Tensor | None = None) -> Tensor:
        """u per candidate (N, d): attention (DIN) or sum pooling (DNN) of h_t over present behaviours.

        `h_v` (N, d) is the candidates' hidden vector, the other input of the activation unit; `h` the
        behaviours' h_t when already computed.
        """
        users, owner = batch.users, batch.owner
        if h is None:
            h = self.behaviour_hidden(users)[0]  # (U, T, d)
        mask = users.hist_mask.unsqueeze(-1).to(h.dtype)
        identity = batch.owner_is_identity  # training layout: no per-candidate copies of (U, T, d)
        if self.attention is None:
            pooled = (h * mask).sum(1)
            return pooled if identity else pooled.index_select(0, owner)
        if identity:
            return (self.attention(h, h_v) * mask * h).sum(1)
        a = self.attention(h, h_v, owner)  # (N, T, 1); unnormalised, as in DIN
        return (a * mask.index_select(0, owner) * h.index_select(0, owner)).sum(1)

    def gate_vectors(self, batch: Batch, h_gate: Tensor | None = None) -> Tensor | None:
        """Raw gate vectors g per candidate (N, K), or None for ungated models (the CL target).

        `h_gate`: the behaviour gate's h'_t when already computed (the CL view reuses them: it changes
        only which behaviours are present).
        """
        if self.gate is None:
            return None
        if isinstance(self.gate, BehaviourGate):
            g = self.gate(self.embed, batch.users, batch.items, batch.owner, h_gate)
        else:
            g = self.gate(self.embed, batch.users, batch.items, batch.owner)
        return expand_gate(self.gate, g, batch.owner)

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, batch: Batch) -> RankingOutput:
        """Logits of every candidate of the batch (see `RankingOutput`)."""
        users, items, owner = batch.users, batch.items, batch.owner
        h_v = self.mlp_v(self.embed.items(items))
        h, h_gate = self.behaviour_hidden(users)
        u = self.user_vectors(batch, h_v, h)
        h_q = self.mlp_q(self.embed.query(users)).index_select(0, owner)
        h_o = self.mlp_o(self.embed.other(users, items, owner))
        s = self.experts(torch.cat([u, h_v, h_q, h_o], dim=-1)).squeeze(-1)  # (N, K)
        g = self.gate_vectors(batch, h_gate)
        if g is None:
            return RankingOutput(s[:, 0], s, None)
        w = normalise(g, self.cfg.gate_norm)
        return RankingOutput((w * s).sum(-1), s, g, gate_hidden=h_gate)

    @torch.no_grad()
    def score_request(self, batch: Batch) -> Tensor:
        """Click probabilities for a request batch (one or more user rows, many candidates each).

        The user side — behaviour MLPs, the h-terms of every pair unit, and the whole gate when its
        context is the query — is evaluated once per user row and shared by that row's candidates.
        """
        return eval_probabilities(self, batch)

    def sync_vocab(self, optimizer: torch.optim.Optimizer | RowStateOwner | None = None,
                   recycled: dict[str, list[int]] | None = None) -> bool:
        """Bring embedding tables in line with the spec's vocabularies (after the online trainer admitted
        or expired ids): re-initialise rows the vocabularies handed to new ids, append rows for growth.

        Returns whether a parameter changed shape (then the optimizer must be rebuilt). Pass `optimizer` to
        zero the moments of re-initialised rows as well (see `FeatureEmbedder.sync`, docs/vocabulary.md), and
        `recycled` when the vocabularies' recycled rows were drained already (the pipelined trainer does).
        """
        return self.embed.sync(optimizer, recycled)

    def describe(self) -> dict:
        """Parameter count and config, for reports."""
        return {"params": sum(p.numel() for p in self.parameters()), **self.cfg.to_dict()}
