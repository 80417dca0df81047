"""The user and item towers of the retrieval models (one class per tower kind, chosen by `RetrievalConfig`).

User towers read a `UserSide` through the shared `FeatureEmbedder`; item towers read the item's raw
field embedding f = E(v) (the concatenation of its field embeddings), so that the feature-level CL can
feed them an augmented f. Shapes: users (U, dim), items (N, dim).

- `TransformerUserTower` (the ICAN-like base, MicRec Eq. 6): behaviours are put in recency order (slot 0
  is the most recent), projected to `emb_dim`, given a recency-position embedding, passed through a
  transformer encoder, flattened (padded slots are zero) and concatenated with the other user fields,
  then a 3-layer MLP. A learned "sink" token that every position may attend to is prepended, so a user
  without behaviours (cold start) never has an all-masked attention row (which would give NaN).
- `MeanUserTower` (YoutubeDNN): mean of the present behaviour embeddings ++ user fields -> MLP.
- `FMUserTower` / FM item tower: the sum of the field embeddings, so that the dot product of the two
  towers is the sum of all user-field x item-field FM interactions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from streamrank.features.batch import UserSide
from streamrank.models.layers import FeatureEmbedder, mlp
from streamrank.models.retrieval.config import RetrievalConfig


def recency_order(hist_mask: Tensor, slots: int) -> tuple[Tensor, Tensor]:
    """Indices that put right-padded, oldest-first behaviours in recency order, and the slots' validity.

    Returns (idx (U, slots) long, valid (U, slots) bool): slot r holds behaviour `len - 1 - r`.
    """
    lengths = hist_mask.sum(1, keepdim=True)
    r = torch.arange(slots, device=hist_mask.device).unsqueeze(0)
    valid = r < lengths
    idx = (lengths - 1 - r).clamp(min=0, max=max(hist_mask.shape[1] - 1, 0))
    return idx, valid


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x (U, T, ...) over positions where mask (U, T) is True; zero for rows without any."""
    m = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - 2)))
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class TransformerUserTower(nn.Module):
    """The base user tower: Transformer(recent behaviours), flattened, ++ other user fields -> MLP."""

    def __init__(self, embed: FeatureEmbedder, cfg: RetrievalConfig) -> None:
        super().__init__()
        d, self.slots = cfg.emb_dim, cfg.max_behaviours
        self.inp = nn.Linear(embed.behaviour_dim, d)
        self.pos = nn.Embedding(self.slots, d)
        self.sink = nn.Parameter(torch.randn(1, 1, d) * 0.05)
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.ffn_dim, cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.mlp = mlp(self.slots * d + embed.other_user_dim, cfg.tower_hidden, cfg.dim)

    def forward(self, embed: FeatureEmbedder, users: UserSide) -> Tensor:
        """User vectors (U, dim)."""
        idx, valid = recency_order(users.hist_mask, self.slots)
        e = embed.behaviours(users)  # (U, W, 3 * emb)
        e = e.gather(1, idx.unsqueeze(-1).expand(-1, -1, e.shape[-1]))
        vf = valid.unsqueeze(-1).to(e.dtype)
        x = (self.inp(e) + self.pos.weight.unsqueeze(0)) * vf
        x = torch.cat([self.sink.expand(x.shape[0], -1, -1), x], dim=1)
        ignore = torch.cat([torch.zeros_like(valid[:, :1]), ~valid], dim=1)  # the sink is never ignored
        h = self.encoder(x, src_key_padding_mask=ignore)[:, 1:] * vf
        return self.mlp(torch.cat([h.flatten(1), embed.other_user(users)], dim=-1))


class MeanUserTower(nn.Module):
    """YoutubeDNN's user tower: mean of the behaviour embeddings ++ user fields -> MLP."""

    def __init__(self, embed: FeatureEmbedder, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.slots = cfg.max_behaviours
        self.mlp = mlp(embed.behaviour_dim + embed.other_user_dim, cfg.tower_hidden, cfg.dim)

    def forward(self, embed: FeatureEmbedder, users: UserSide) -> Tensor:
        """User vectors (U, dim) from the `max_behaviours` most recent behaviours."""
        idx, valid = recency_order(users.hist_mask, self.slots)
        e = embed.behaviours(users)
        e = e.gather(1, idx.unsqueeze(-1).expand(-1, -1, e.shape[-1]))
        return self.mlp(torch.cat([masked_mean(e, valid), embed.other_user(users)], dim=-1))


class FMUserTower(nn.Module):
    """FM user tower: sum of the user-side field embeddings (mean behaviour item/category/type, user fields)."""

    def __init__(self, embed: FeatureEmbedder, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.slots, self.d = cfg.max_behaviours, cfg.emb_dim

    def forward(self, embed: FeatureEmbedder, users: UserSide) -> Tensor:
        """User vectors (U, dim)."""
        idx, valid = recency_order(users.hist_mask, self.slots)
        e = embed.behaviours(users)
        e = e.gather(1, idx.unsqueeze(-1).expand(-1, -1, e.shape[-1]))
        behaviour_fields = masked_mean(e, valid).reshape(len(users), -1, self.d).sum(1)
        other_fields = embed.other_user(users).reshape(len(users), -1, self.d).sum(1)
        return behaviour_fields + other_fields


class ItemTower(nn.Module):
    """Item tower over the raw item embedding f (N, item_dim): an MLP, one linear layer, or an FM sum."""

    def __init__(self, embed: FeatureEmbedder, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.kind, self.d = cfg.item_tower, cfg.emb_dim
        self.net: nn.Module | None
        if self.kind == "mlp":
            self.net = mlp(embed.item_dim, cfg.tower_hidden, cfg.dim)
        elif self.kind == "linear":
            self.net = nn.Linear(embed.item_dim, cfg.dim)
        else:
            self.net = None

    def forward(self, f: Tensor) -> Tensor:
        """Item vectors (N, dim) from raw item embeddings (N, item_dim)."""
        if self.net is None:
            return f.reshape(f.shape[0], -1, self.d).sum(1)
        return self.net(f)


def build_user_tower(embed: FeatureEmbedder, cfg: RetrievalConfig) -> nn.Module:
    """The user tower selected by `cfg.user_tower`."""
    kinds: dict[str, type[nn.Module]] = {"transformer": TransformerUserTower, "mean": MeanUserTower,
                                         "fm": FMUserTower}
    return kinds[cfg.user_tower](embed, cfg)
