"""Tensor containers produced by the tensoriser and consumed by the ranking models.

A batch is split into a user side (one row per user/request) and an item side (one row per candidate),
joined by `owner`: candidate n belongs to user row `owner[n]`. Training batches have one candidate per
user row (owner = arange); a search request has one user row and C candidates (owner = zeros), which is
what lets a model compute user-only parts (behaviour MLPs, the query-conditioned gate) once per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


def _apply(obj: object, fn: Callable[[Tensor], Tensor]) -> object:
    """A copy of a tensor dataclass with `fn` applied to every tensor field."""
    return replace(obj, **{f.name: fn(getattr(obj, f.name)) for f in fields(obj)  # type: ignore[arg-type]
                           if isinstance(getattr(obj, f.name), Tensor)})


@dataclass
class UserSide:
    """Per-user tensors. Shapes: (U,) ids, (U, F_u) user fields, (U, T) behaviour sequence and mask."""

    user: Tensor
    user_fields: Tensor
    query: Tensor
    scenario: Tensor
    hist_item: Tensor
    hist_cat: Tensor
    hist_type: Tensor
    hist_mask: Tensor  # bool; True where a behaviour is present (padding is False)
    branch: Tensor  # (U,) long; the scenario's branch (FeatureSpec.branch_of; 0 = shared "other")

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def to(self, device: torch.device | str) -> UserSide:
        """Move every tensor to `device`."""
        return _apply(self, lambda t: t.to(device, non_blocking=True))  # type: ignore[return-value]

    def index(self, rows: Tensor) -> UserSide:
        """Select (or repeat) user rows."""
        return _apply(self, lambda t: t.index_select(0, rows))  # type: ignore[return-value]

    def with_mask(self, hist_mask: Tensor) -> UserSide:
        """The same users with another behaviour mask (contrastive views drop behaviours this way)."""
        return replace(self, hist_mask=hist_mask)


@dataclass
class ItemSide:
    """Per-candidate tensors. Shapes: (N,) ids, (N, F_i) item fields, (N, max_tags) tags, (N, D) dense."""

    item: Tensor
    category: Tensor
    brand: Tensor
    shop: Tensor
    item_fields: Tensor
    tags: Tensor
    dense: Tensor

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def to(self, device: torch.device | str) -> ItemSide:
        """Move every tensor to `device`."""
        return _apply(self, lambda t: t.to(device, non_blocking=True))  # type: ignore[return-value]

    def index(self, rows: Tensor) -> ItemSide:
        """Select candidate rows."""
        return _apply(self, lambda t: t.index_select(0, rows))  # type: ignore[return-value]


@dataclass
class Batch:
    """Users, candidates, the candidate -> user map and (for training) labels."""

    users: UserSide
    items: ItemSide
    owner: Tensor  # (N,) long, row of `users` for each candidate
    labels: Tensor | None = None  # (N,) float
    # (N,) bool: rows labelled under the fake_negative policy whose loss takes the FNW importance weights
    # (streamrank.train.losses.ranking_loss); None: none of them
    fnw_rows: Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def one_user_per_row(self) -> bool:
        """True when every candidate has its own user row (training layout)."""
        return len(self.users) == len(self.items)

    @property
    def owner_is_identity(self) -> bool:
        """True when candidate n belongs to user row n (then per-user tensors need no gather)."""
        if not self.one_user_per_row:
            return False
        return bool(torch.equal(self.owner, torch.arange(len(self.owner), device=self.owner.device)))

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to `device`."""
        labels = None if self.labels is None else self.labels.to(device)
        fnw = None if self.fnw_rows is None else self.fnw_rows.to(device)
        return Batch(self.users.to(device), self.items.to(device), self.owner.to(device), labels, fnw)

    def per_candidate(self) -> Batch:
        """The same batch with the user side repeated per candidate (owner becomes arange)."""
        users = self.users.index(self.owner)
        owner = torch.arange(len(self.items), device=self.owner.device)
        return Batch(users, self.items, owner, self.labels, self.fnw_rows)

    def select(self, rows: Tensor) -> Batch:
        """Candidate rows `rows` with their users (one user row per selected candidate)."""
        users = self.users.index(self.owner.index_select(0, rows))
        labels = None if self.labels is None else self.labels.index_select(0, rows)
        fnw = None if self.fnw_rows is None else self.fnw_rows.index_select(0, rows)
        return Batch(users, self.items.index(rows), torch.arange(len(rows), device=rows.device), labels, fnw)
