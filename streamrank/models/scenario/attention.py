"""The behaviour transformer of BST and SAML, with one weight set or one per scenario.

BST (Chen et al. 2019) runs multi-head self-attention over the behaviour sequence with the target item as
one more token. SAML's scenario-aware attention runs the same block twice on the same embeddings: once with
global weights and once with the weights of the row's scenario (`sets` = number of branches).

To keep serving cheap, behaviours attend to each other once per user row, and only the target token (one
per candidate) attends to [behaviours, itself]; behaviours do not attend to the target. BST lets them; this
is our simplification, so that scoring C candidates costs one sequence pass plus C single-token queries.
Output per candidate: [target token's output, masked mean of the behaviour outputs].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SetLinear(nn.Module):
    """A linear layer with `sets` weight sets, for rows sorted by set.

    forward(x: (R, ..., in), counts) -> (R, ..., out): the first counts[0] rows use set 0, the next
    counts[1] set 1, and so on (each set one matmul, no per-row weight copies). counts None: set 0 only.
    """

    def __init__(self, sets: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(sets, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(sets, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor, counts: list[int] | None = None) -> Tensor:
        """Rows of `x` through their set's weights."""
        if counts is None or self.weight.shape[0] == 1:
            return x @ self.weight[0] + self.bias[0]
        parts = x.split(counts)
        return torch.cat([p @ self.weight[s] + self.bias[s] for s, p in enumerate(parts) if len(p)])


class SequenceAttention(nn.Module):
    """One transformer block (multi-head attention + FFN, residuals, layer norm) over behaviours + target."""

    def __init__(self, dim: int, heads: int, sets: int = 1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.sets = dim, heads, sets
        self.qkv = SetLinear(sets, dim, 3 * dim)
        self.out = SetLinear(sets, dim, dim)
        self.ffn_in = SetLinear(sets, dim, 2 * dim)
        self.ffn_out = SetLinear(sets, 2 * dim, dim)

    @property
    def out_dim(self) -> int:
        """Width of the output per candidate: target token ++ pooled behaviours."""
        return 2 * self.dim

    def _split(self, x: Tensor) -> Tensor:  # (R, L, D) -> (R, heads, L, D / heads)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _block(self, x: Tensor, attended: Tensor, counts: list[int] | None) -> Tensor:
        z = F.layer_norm(x + self.out(attended, counts), (self.dim,))
        return F.layer_norm(z + self.ffn_out(F.relu(self.ffn_in(z, counts)), counts), (self.dim,))

    def forward(self, tokens: Tensor, mask: Tensor, target: Tensor, owner: Tensor,
                user_sets: Tensor | None = None) -> Tensor:
        """tokens (U, T, D) with mask (U, T); target (N, D) owned by user rows `owner`; -> (N, 2D).

        `user_sets` (U,) picks each user row's weight set (its scenario's branch); None = set 0. Rows are
        sorted by set for the computation and put back in order at the end.
        """
        if user_sets is None or self.sets == 1:
            return self._forward(tokens, mask, target, owner, None, None)
        cand_sets = user_sets.index_select(0, owner)
        pu, pc = torch.argsort(user_sets, stable=True), torch.argsort(cand_sets, stable=True)
        inv_u = torch.empty_like(pu)
        inv_u[pu] = torch.arange(len(pu), device=pu.device)
        counts_u = torch.bincount(user_sets, minlength=self.sets).tolist()
        counts_c = torch.bincount(cand_sets, minlength=self.sets).tolist()
        out = self._forward(tokens.index_select(0, pu), mask.index_select(0, pu), target.index_select(0, pc),
                            inv_u.index_select(0, owner.index_select(0, pc)), counts_u, counts_c)
        inv_c = torch.empty_like(pc)
        inv_c[pc] = torch.arange(len(pc), device=pc.device)
        return out.index_select(0, inv_c)

    def _forward(self, tokens: Tensor, mask: Tensor, target: Tensor, owner: Tensor,
                 counts_u: list[int] | None, counts_c: list[int] | None) -> Tensor:
        q, k, v = (self._split(t) for t in self.qkv(tokens, counts_u).chunk(3, dim=-1))  # (U, H, T, dh)
        scale = 1.0 / math.sqrt(q.shape[-1])
        # explicit attention: with sequences this short and heads this narrow it beats the fused kernels
        scores = (q @ k.transpose(-1, -2)) * scale  # (U, H, T, T)
        # a row without behaviours attends to its (zero) first slot instead of nothing, then pools to zero
        attend = mask.clone()
        attend[:, 0] |= ~mask.any(1)
        weights = torch.softmax(scores.masked_fill(~attend[:, None, None, :], float("-inf")), dim=-1)
        z = self._block(tokens, (weights @ v).transpose(1, 2).flatten(2), counts_u)  # (U, T, D)
        m = mask.unsqueeze(-1).to(z.dtype)
        pooled = ((z * m).sum(1) / m.sum(1).clamp_min(1.0)).index_select(0, owner)
        # the target token: one query per candidate over [its user's behaviours, itself]
        tq, tk, tv = (t.unflatten(-1, (self.heads, -1)) for t in self.qkv(target, counts_c).chunk(3, dim=-1))
        k_c, v_c = k.index_select(0, owner), v.index_select(0, owner)  # (N, H, T, dh)
        s_beh = torch.einsum("nhd,nhtd->nht", tq, k_c) * scale
        s_beh = s_beh.masked_fill(~mask.index_select(0, owner)[:, None, :], float("-inf"))
        s_self = (tq * tk).sum(-1, keepdim=True) * scale  # (N, H, 1): the target always attends to itself
        w = torch.softmax(torch.cat([s_beh, s_self], dim=-1), dim=-1)
        ta = torch.einsum("nht,nhtd->nhd", w[..., :-1], v_c) + w[..., -1:] * tv  # (N, H, dh)
        t_out = self._block(target, ta.flatten(1), counts_c)
        return torch.cat([t_out, pooled], dim=-1)
