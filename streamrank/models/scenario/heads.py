"""Output networks of the multi-scenario models: FM, DCN's cross network, MMoE, SAML's branches + mutual unit.

Branched heads evaluate every branch on every row and return all branch logits (N, B); the model then takes
each row's own branch. That is what the mutual unit needs (branch k's hidden output is mixed with the other
branches' outputs on the same row), and it keeps gradients in place: a row's loss reads only its own
branch's logit, and whatever it reads of other branches is detached (the paper's gradient mask).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamrank.models.layers import ParallelExperts


def fm_logit(fields: Tensor) -> Tensor:
    """FM's second-order term over field embeddings (N, F, d) -> (N,): sum of pairwise inner products."""
    s = fields.sum(1)
    return 0.5 * (s * s - (fields * fields).sum(1)).sum(-1)


class CrossNetwork(nn.Module):
    """DCN's cross layers: x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(layers, dim) / math.sqrt(dim))
        self.b = nn.Parameter(torch.zeros(layers, dim))

    def forward(self, x0: Tensor) -> Tensor:
        """(N, dim) -> (N, dim)."""
        x = x0
        for w, b in zip(self.w, self.b, strict=True):
            x = x0 * (x @ w).unsqueeze(-1) + b + x
        return x


def _parallel(branches: int, sizes: Sequence[int]) -> tuple[nn.ParameterList, nn.ParameterList]:
    """Weights (B, in, out) and biases (B, 1, out) of B parallel layers per consecutive pair of `sizes`."""
    weights, biases = nn.ParameterList(), nn.ParameterList()
    for a, b in itertools.pairwise(sizes):
        bound = 1.0 / math.sqrt(a)
        weights.append(nn.Parameter(torch.empty(branches, a, b).uniform_(-bound, bound)))
        biases.append(nn.Parameter(torch.empty(branches, 1, b).uniform_(-bound, bound)))
    return weights, biases


class MutualUnit(nn.Module):
    """SAML's mutual unit at one hidden layer of B branches (our reading of the paper's Eq. 6-8).

    For branch k on a row: beta_kj = softmax over the other usable branches j of cos(h_k, h_j);
    alpha_k = sigmoid(w_k . h_k + b_k); h_k <- h_k + alpha_k * sum_j beta_kj h_j. The partners h_j come
    without gradient, so a row's gradient never reaches a branch but its own. With alpha = 0 the branches
    are independent.
    """

    def __init__(self, branches: int, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(branches, dim, 1))
        self.b = nn.Parameter(torch.zeros(branches, 1, 1))

    def forward(self, h: Tensor, ks: Tensor, partners: Tensor, usable: Tensor) -> tuple[Tensor, Tensor]:
        """h (K, N, d): the hidden outputs of branches `ks` (K,); partners (B, N, d): every branch's output
        on the same rows (detached); usable (B,) bool. Returns (mixed h, alpha (K, N, 1))."""
        alpha = torch.sigmoid(torch.baddbmm(self.b[ks], h, self.w[ks]))
        b = partners.shape[0]
        allowed = usable.unsqueeze(0) & (torch.arange(b, device=h.device).unsqueeze(0) != ks.unsqueeze(1))  # (K, B)
        if b < 2 or not bool(allowed.any()):
            return h, alpha
        sims = torch.einsum("knd,jnd->nkj", F.normalize(h, dim=-1), F.normalize(partners, dim=-1))
        beta = torch.softmax(sims.masked_fill(~allowed, float("-inf")), dim=-1)
        beta = beta.masked_fill(~allowed.any(1).view(1, -1, 1), 0.0)  # no usable partner: nothing mixed in
        return h + alpha * torch.einsum("nkj,jnd->knd", beta, partners), alpha


class BranchNetwork(nn.Module):
    """B parallel MLP branches; layer l of every branch also reads the auxiliary network's layer l.

    Two passes: every branch on every row without gradient (the mutual unit's partners, and the logits in
    eval mode), then in training each row through its own branch only, with gradient. Mathematically one
    network; the split costs one forward of all branches plus a forward and backward of one branch per
    row, instead of a backward of all of them.
    """

    def __init__(self, branches: int, in_dim: int, hidden: Sequence[int], aux_dims: Sequence[int],
                 mutual: bool) -> None:
        super().__init__()
        self.aux_dims = list(aux_dims) or [0] * len(hidden)
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        prev = in_dim
        for h, a in zip(hidden, self.aux_dims, strict=True):
            w, b = _parallel(branches, [prev + a, h])
            self.weights.extend(w)
            self.biases.extend(b)
            prev = h
        self.out_w, self.out_b = _parallel(branches, [prev, 1])
        self.mutual = nn.ModuleList(MutualUnit(branches, h) for h in hidden) if mutual else None
        self.last_alpha: Tensor | None = None  # gate coefficients of the last forward (for analysis)

    def _layers(self, x: Tensor, aux: list[Tensor] | None, ks: Tensor, usable: Tensor,
                partners: list[Tensor] | None) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Branches `ks` (K,) on rows x (N, in): logits (K, N), pre-mix hidden per layer, alphas per layer.

        Without `partners` the branches are all B and are each other's partners."""
        z = x.unsqueeze(0).expand(len(ks), -1, -1)
        hidden, alphas = [], []
        for layer, (w, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if aux is not None:
                z = torch.cat([z, aux[layer].unsqueeze(0).expand(len(ks), -1, -1)], dim=-1)
            z = torch.relu(torch.baddbmm(bias[ks], z, w[ks]))
            hidden.append(z)
            if self.mutual is not None:
                z, alpha = self.mutual[layer](z, ks, z if partners is None else partners[layer], usable)
                alphas.append(alpha.detach())
        return torch.baddbmm(self.out_b[0][ks], z, self.out_w[0][ks]).squeeze(-1), hidden, alphas

    def forward(self, x: Tensor, aux: list[Tensor] | None, usable: Tensor,
                branch: Tensor) -> tuple[Tensor, Tensor]:
        """(each row's own-branch logit (N,), every branch's logit (N, B) without gradient)."""
        every = torch.arange(self.weights[0].shape[0], device=x.device)
        with torch.no_grad():
            all_logits, partners, alphas = self._layers(x, aux, every, usable, None)
        all_logits = all_logits.transpose(0, 1)
        if not (self.training and torch.is_grad_enabled()):
            self.last_alpha = torch.stack(alphas) if alphas else None
            return all_logits.gather(1, branch.unsqueeze(1)).squeeze(1), all_logits
        own = x.new_zeros(x.shape[0])
        for k in torch.unique(branch).tolist():
            rows = torch.nonzero(branch == k).squeeze(1)
            sub_aux = None if aux is None else [a.index_select(0, rows) for a in aux]
            logit, _, _ = self._layers(x.index_select(0, rows), sub_aux, every[k:k + 1], usable,
                                       [p.index_select(1, rows) for p in partners])
            own = own.index_copy(0, rows, logit.squeeze(0))
        return own, all_logits


class MMoEHead(nn.Module):
    """MMoE with one task per scenario: shared 2-layer MLP experts, one softmax gate and tower per branch."""

    def __init__(self, branches: int, in_dim: int, hidden: Sequence[int], experts: int) -> None:
        super().__init__()
        if len(hidden) < 2:
            raise ValueError("MMoE's experts are 2-layer MLPs: hidden needs two sizes")
        self.experts = ParallelExperts(experts, in_dim, hidden[:1], hidden[1])
        self.gate_w, self.gate_b = _parallel(branches, [in_dim, experts])
        self.tower_w, self.tower_b = _parallel(branches, [hidden[1], 1])

    def forward(self, x: Tensor) -> Tensor:
        """(N, in) -> logits of every branch's tower (N, B)."""
        e = torch.relu(self.experts(x))  # (N, K, h)
        b = self.gate_w[0].shape[0]
        g = torch.softmax(torch.baddbmm(self.gate_b[0], x.unsqueeze(0).expand(b, -1, -1), self.gate_w[0]), -1)
        mixed = torch.einsum("bnk,nkh->bnh", g, e)  # (B, N, h)
        return torch.baddbmm(self.tower_b[0], mixed, self.tower_w[0]).squeeze(-1).transpose(0, 1)
