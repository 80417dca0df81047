"""`TwoTowerModel`: FM, YoutubeDNN, the ICAN-like base and MicRec as one configurable two-tower module.

The retrieval score of (user, item) is the dot product `user_vectors · item_vectors`. The vectors are
L2-normalised only when `cfg.normalize` is set (off in every preset: the paper's plain dot product), so
a FAISS inner-product index over `encode_items` reproduces the exact scores. The contrastive
projectors (`projectors`, one 1-layer projector per enabled CL task, not shared) are used in training
only: MLP_f of the feature-level task reads raw item embeddings (paper Eq. 2; `item_dim` inputs unless
`cfg.fea_on == "tower"`), MLP_t and MLP_s read item-tower outputs (Eq. 4, 5; `dim` inputs).

`encode_users` / `encode_items` are the serving entry points: raw `RequestContext`s / `Candidate`s go
through the one `Tensorizer` with frozen vocabularies (unknown ids -> OOV; an unknown item still gets a
vector from its other fields), the model runs in eval mode, and float32 numpy arrays come back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamrank.features.batch import ItemSide, UserSide
from streamrank.features.raw import Candidate, RequestContext
from streamrank.features.spec import FeatureSpec
from streamrank.features.tensorize import Tensorizer
from streamrank.models.layers import FeatureEmbedder
from streamrank.models.retrieval.config import RetrievalConfig
from streamrank.models.retrieval.towers import ItemTower, build_user_tower

ENCODE_CHUNK = 4096


class TwoTowerModel(nn.Module):
    """User tower + item tower over the shared embedding layer; see the module docstring."""

    def __init__(self, spec: FeatureSpec, cfg: RetrievalConfig) -> None:
        super().__init__()
        if spec.dense:
            raise ValueError("retrieval towers take no dense (user x item counter) features: use dense=()")
        self.spec, self.cfg = spec, cfg
        self.embed = FeatureEmbedder(spec, cfg.emb_dim)
        self.user_tower = build_user_tower(self.embed, cfg)
        self.item_tower = ItemTower(self.embed, cfg)
        self.projectors = nn.ModuleDict({t: nn.Linear(self.projector_in(t), cfg.proj_dim) for t in cfg.cl_tasks})
        self._tensorizer = Tensorizer(spec)

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return self.embed.type_table.weight.device

    def _finish(self, v: Tensor) -> Tensor:
        return F.normalize(v, dim=-1) if self.cfg.normalize else v

    # ------------------------------------------------------------------------------------------ towers
    def user_vectors(self, users: UserSide) -> Tensor:
        """User vectors (U, dim)."""
        return self._finish(self.user_tower(self.embed, users))

    def raw_items(self, items: ItemSide) -> Tensor:
        """The raw item embedding f = E(v) (N, item_dim): what the feature-level CL augments."""
        return self.embed.items(items)

    def item_vectors_from_raw(self, f: Tensor) -> Tensor:
        """Item vectors (N, dim) from raw item embeddings."""
        return self._finish(self.item_tower(f))

    def item_vectors(self, items: ItemSide) -> Tensor:
        """Item vectors (N, dim)."""
        return self.item_vectors_from_raw(self.raw_items(items))

    def projector_in(self, task: str) -> int:
        """Input size of a CL task's projector: raw item embeddings for "fea" (unless fea_on="tower"),
        item vectors otherwise."""
        return self.embed.item_dim if task == "fea" and self.cfg.fea_on == "raw" else self.cfg.dim

    def project(self, task: str, v: Tensor) -> Tensor:
        """The 1-layer projector of a CL task ("fea", "sem", "sess"): raw item embeddings for "fea" with
        fea_on="raw", item-tower outputs otherwise (see `projector_in`)."""
        z = self.projectors[task](v)
        return F.normalize(z, dim=-1) if self.cfg.cl_normalize else z

    def score(self, users: UserSide, items: ItemSide) -> Tensor:
        """Retrieval scores (U, N): every user against every item."""
        return self.user_vectors(users) @ self.item_vectors(items).T

    # ----------------------------------------------------------------------------------------- serving
    @torch.no_grad()
    def encode_users(self, contexts: Sequence[RequestContext]) -> np.ndarray:
        """float32 (U, dim) user vectors of raw request contexts (eval mode, frozen vocabularies)."""
        return self._encode(lambda part: self.user_vectors(
            self._tensorizer.encode_contexts(part, grow=False).to(self.device)), contexts)

    @torch.no_grad()
    def encode_items(self, candidates: Sequence[Candidate]) -> np.ndarray:
        """float32 (N, dim) item vectors of raw candidates (eval mode, frozen vocabularies)."""
        return self._encode(lambda part: self.item_vectors(
            self._tensorizer.encode_candidates(part, [0] * len(part), grow=False).to(self.device)), candidates)

    def _encode(self, fn: Callable[[Sequence], Tensor], rows: Sequence) -> np.ndarray:
        was_training = self.training
        self.eval()
        try:
            parts = [fn(rows[s:s + ENCODE_CHUNK]).float().cpu().numpy() for s in range(0, len(rows), ENCODE_CHUNK)]
        finally:
            self.train(was_training)
        if not parts:
            return np.zeros((0, self.cfg.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    # ------------------------------------------------------------------------------------------ online
    def sync_vocab(self, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Bring embedding tables in line with the spec's vocabularies (see `FeatureEmbedder.sync`)."""
        return self.embed.sync(optimizer)

    def describe(self) -> dict:
        """Parameter count and config, for reports."""
        return {"params": sum(p.numel() for p in self.parameters()), **self.cfg.to_dict()}
