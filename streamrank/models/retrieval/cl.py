"""Building blocks of MicRec's item-based contrastive learning (MicRec paper, Sec. 3.3-3.5).

- `info_nce`: -log exp(a·p/τ) / (exp(a·p/τ) + Σ_j exp(a·n_j/τ)) with per-anchor negatives, some of
  which may be masked out (e.g. sampled negatives that turned out to be positives);
- `element_dropout`: the feature-level augmentation (element-level dropout of the raw item embedding);
- `other_rows`: K distinct row indices per anchor, none of them the anchor's own (in-batch negatives).

The losses that use them (which items, which positives, which negatives) are assembled in
`streamrank.train.retrieval_losses`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(anchor: Tensor, positive: Tensor, negatives: Tensor, neg_valid: Tensor | None = None,
             temperature: float = 1.0, row_valid: Tensor | None = None) -> Tensor:
    """Mean InfoNCE over anchors with dot-product similarity.

    anchor, positive: (M, d); negatives: (M, K, d); neg_valid: (M, K) bool (False = not a negative);
    row_valid: (M,) bool (False = the anchor has no positive and is left out). Zero when no row counts.
    """
    pos = (anchor * positive).sum(-1, keepdim=True)
    neg = torch.einsum("md,mkd->mk", anchor, negatives)
    if neg_valid is not None:
        neg = neg.masked_fill(~neg_valid, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device),
                           reduction="none")
    if row_valid is None:
        return loss.mean()
    if not bool(row_valid.any()):
        return loss.sum() * 0.0
    return loss[row_valid].mean()


def element_dropout(f: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Each element of f zeroed with probability p (survivors scaled by 1/(1-p), as nn.Dropout does)."""
    if p <= 0:
        return f
    keep = torch.rand(f.shape, generator=generator, device=f.device) >= p
    return f * keep.to(f.dtype) / (1.0 - p)


def other_rows(m: int, k: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
    """(m, min(k, m-1)) row indices: for each row, a uniformly random subset of the other m-1 rows (no
    repeats), so every anchor gets min(k, m-1) distinct negatives, as the paper's "up to 50" negatives."""
    k = min(k, m - 1)
    if k <= 0:
        return torch.zeros((m, 0), dtype=torch.long, device=device)
    offs = torch.rand((m, m - 1), generator=generator, device=device).topk(k, dim=1).indices + 1
    return (torch.arange(m, device=device).unsqueeze(1) + offs) % m
