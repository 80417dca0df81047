"""Training losses: the ranking BCE and AW-MoE's contrastive loss on the gate output (Eq. 10-11).

Contrastive learning: for each row (a user with a target), a positive view masks each present behaviour
independently with probability p and goes through the gate network again; n negatives are the gate
vectors of other rows of the batch that belong to other users. With dot-product similarity:
    L_cl = -log( exp(g.g+) / (exp(g.g+) + sum_j exp(g.g-_j)) ),   L = L_rank + lambda * L_cl.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from streamrank.features.batch import Batch
from streamrank.models.ranking.moe import RankingModel


def ranking_loss(logits: Tensor, labels: Tensor, fnw_rows: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of the click/purchase label (Eq. 1); on `fnw_rows` (fake_negative samples),
    fake negative weighted (`fnw_weights`)."""
    if fnw_rows is None:
        return F.binary_cross_entropy_with_logits(logits, labels)
    weight = torch.where(fnw_rows, fnw_weights(logits, labels), torch.ones_like(logits))
    return F.binary_cross_entropy_with_logits(logits, labels, weight=weight)


def fnw_weights(logits: Tensor, labels: Tensor) -> Tensor:
    """FNW's importance weights (Ktena et al., RecSys 2019): under fake negatives every positive is also
    seen as a negative, so the observed distribution is b(1|x) = p/(1+p), b(0|x) = 1/(1+p); weighting each
    sample by p(y|x)/b(y|x) gives 1 + p on a positive and (1 - p)(1 + p) on a negative, with p the model's
    own prediction, held constant (no gradient flows through the weights)."""
    p = torch.sigmoid(logits.detach())
    return torch.where(labels > 0.5, 1.0 + p, (1.0 - p) * (1.0 + p))


def fnc_probability(probs: Tensor) -> Tensor:
    """FNC's calibration (Ktena et al.): a model trained by plain log loss on fake-negative data estimates
    b = p/(1+p), so p = b/(1-b), clipped to [0, 1]."""
    return (probs / (1.0 - probs).clamp_min(1e-6)).clamp(0.0, 1.0)


def mask_behaviours(hist_mask: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """A view of the behaviour mask with each present behaviour dropped independently with probability p."""
    keep = torch.rand(hist_mask.shape, generator=generator, device=hist_mask.device) >= p
    return hist_mask & keep


def sample_negatives(user_keys: Tensor, n: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """For each row, `n` other rows of the batch: (indices (B, n), valid (B, n) = belongs to another user).

    Rows are drawn uniformly among the other B - 1 rows (with replacement across the n draws); a draw that
    hits the same user (the 1:1 training data has a positive and a negative per user) is marked invalid
    and left out of the loss.
    """
    b = user_keys.shape[0]
    if b < 2:
        empty = torch.zeros((b, n), dtype=torch.long, device=user_keys.device)
        return empty, torch.zeros((b, n), dtype=torch.bool, device=user_keys.device)
    offsets = torch.randint(1, b, (b, n), generator=generator, device=user_keys.device)
    idx = (torch.arange(b, device=user_keys.device).unsqueeze(1) + offsets) % b
    valid = user_keys.index_select(0, idx.reshape(-1)).reshape(b, n) != user_keys.unsqueeze(1)
    return idx, valid


def info_nce(anchor: Tensor, positive: Tensor, negatives: Tensor, valid: Tensor | None = None) -> Tensor:
    """InfoNCE with dot-product similarity: anchor, positive (B, K); negatives (B, n, K); valid (B, n)."""
    pos = (anchor * positive).sum(-1, keepdim=True)  # (B, 1)
    neg = torch.einsum("bk,bnk->bn", anchor, negatives)  # (B, n)
    if valid is not None:
        neg = neg.masked_fill(~valid, float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return -(pos.squeeze(1) - torch.logsumexp(logits, dim=1)).mean()


def contrastive_loss(model: RankingModel, batch: Batch, gate: Tensor, user_keys: Tensor,
                     generator: torch.Generator | None = None, h_gate: Tensor | None = None) -> Tensor:
    """AW-MoE's L_cl for a training batch given its gate vectors g (N, K), one per candidate; candidates that
    share a user row share its masked view. `user_keys` (N,) identify each candidate's user.

    `h_gate`: the gate's behaviour vectors from the forward pass (`RankingOutput.gate_hidden`); the masked
    view differs only in which behaviours are present, so it reuses them instead of recomputing them.
    """
    cfg = model.cfg
    view = batch.users.with_mask(mask_behaviours(batch.users.hist_mask, cfg.cl_mask_prob, generator))
    g_pos = model.gate_vectors(Batch(view, batch.items, batch.owner), h_gate)
    assert g_pos is not None
    idx, valid = sample_negatives(user_keys, cfg.cl_negatives, generator)
    g_neg = gate.index_select(0, idx.reshape(-1)).reshape(*idx.shape, gate.shape[-1])
    return info_nce(gate, g_pos, g_neg, valid)
