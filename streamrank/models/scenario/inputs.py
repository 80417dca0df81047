"""Input representations of the multi-scenario models: field embeddings, behaviours, scenario subspaces.

Every field of the spec (target item fields, user fields with the scenario id, the query, the behaviour
sequence) has a global embedding (`emb_dim`). SAML adds a scenario-specific embedding per field: one table
per vocabulary whose rows hold a `scenario_emb_dim` slice for every branch, of which a row reads its own
scenario's slice. Scenario-independent features are the global parts; scenario-dependent features append
the specific parts (MODELS.md section 2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from streamrank.features.batch import Batch, UserSide
from streamrank.features.spec import FeatureSpec
from streamrank.models.layers import FeatureEmbedder, RowStateOwner, drain_recycled
from streamrank.models.scenario.attention import SequenceAttention
from streamrank.models.scenario.config import ScenarioConfig


def _branch_slice(x: Tensor, fields: int, branches: int, branch: Tensor) -> Tensor:
    """Rows of a scenario-specific embedding (R, fields * branches * k) -> their branch's part (R, fields * k)."""
    parts = x.unflatten(-1, (fields, branches, -1))
    return parts[torch.arange(x.shape[0], device=x.device), :, branch].flatten(1)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over present positions: (U, T, D) with mask (U, T) -> (U, D); zero for an empty sequence."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class ScenarioInputs(nn.Module):
    """Embeds a `Batch` into the vectors the multi-scenario heads read."""

    def __init__(self, spec: FeatureSpec, cfg: ScenarioConfig) -> None:
        super().__init__()
        self.spec, self.cfg = spec, cfg
        self.branches = spec.num_branches
        d = cfg.emb_dim
        self.embed = FeatureEmbedder(spec, d)
        self.item_fields = self.embed.item_dim // d
        self.user_fields = self.embed.other_user_dim // d
        # target item fields, user fields (incl. scenario), query, and 3 behaviour fields when pooled
        self.num_fields = self.item_fields + self.user_fields + 1 + (0 if cfg.attention else 3)
        self.specific = (FeatureEmbedder(spec, cfg.scenario_emb_dim * self.branches)
                         if cfg.scenario_embedding else None)
        self.wide = FeatureEmbedder(spec, 1) if cfg.arch in ("wide_deep", "deepfm") else None
        self.wide_dense = nn.Linear(len(spec.dense), 1) if self.wide is not None and spec.dense else None
        token = 3 * d  # a behaviour token: item, category, type embeddings
        self.position = nn.Embedding(spec.max_seq_len + 1, token) if cfg.attention else None
        self.attn_global = SequenceAttention(token, cfg.heads) if cfg.attention else None
        self.attn_scenario = (SequenceAttention(token, cfg.heads, self.branches)
                              if cfg.scenario_attention else None)

    # ------------------------------------------------------------------------------------ dimensions
    @property
    def global_dim(self) -> int:
        """Width of `global_features`."""
        att = self.attn_global.out_dim if self.attn_global is not None else 0
        return self.num_fields * self.cfg.emb_dim + att + len(self.spec.dense)

    @property
    def specific_dim(self) -> int:
        """Width of `specific_features` (0 without scenario subspaces)."""
        emb = (self.item_fields + self.user_fields + 1 + 3) * self.cfg.scenario_emb_dim if self.specific else 0
        att = self.attn_scenario.out_dim if self.attn_scenario is not None else 0
        return emb + att

    # -------------------------------------------------------------------------------------- features
    def field_vectors(self, batch: Batch) -> Tensor:
        """Global embeddings per field and candidate (N, F, emb_dim): what FM and the wide part pair up."""
        users, owner, d = batch.users, batch.owner, self.cfg.emb_dim
        parts = [self.embed.items(batch.items).unflatten(-1, (-1, d)),
                 self.embed.other_user(users).unflatten(-1, (-1, d)).index_select(0, owner),
                 self.embed.query(users).unsqueeze(1).index_select(0, owner)]
        if self.attn_global is None:
            pooled = _masked_mean(self.embed.behaviours(users), users.hist_mask)
            parts.append(pooled.unflatten(-1, (3, d)).index_select(0, owner))
        return torch.cat(parts, dim=1)

    def _tokens(self, users: UserSide) -> Tensor:
        """Behaviour tokens with recency positions (1 = most recent; 0 is the target token's)."""
        assert self.position is not None
        mask = users.hist_mask
        length = mask.sum(1, keepdim=True)
        steps = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
        pos = torch.where(mask, length - steps, torch.zeros_like(steps))
        return self.embed.behaviours(users) + self.position(pos)

    def _target_token(self, batch: Batch) -> Tensor:
        assert self.position is not None
        items = batch.items
        zero = torch.zeros_like(items.item)
        tok = torch.cat([self.embed.table("item")(items.item), self.embed.table("category")(items.category),
                         self.embed.type_table(zero)], dim=-1)
        return tok + self.position.weight[0]

    def sequence(self, batch: Batch) -> tuple[Tensor, Tensor] | None:
        """Behaviour tokens (U, T, D) and target tokens (N, D) that both transformers read (None without
        attention); computed once per forward and passed to `global_features` and `specific_features`."""
        if self.position is None:
            return None
        return self._tokens(batch.users), self._target_token(batch)

    def global_features(self, batch: Batch, fields: Tensor | None = None,
                        seq: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Scenario-independent features (N, global_dim): field embeddings, global attention, dense."""
        fields = self.field_vectors(batch) if fields is None else fields
        parts = [fields.flatten(1)]
        if self.attn_global is not None:
            tokens, target = self.sequence(batch) if seq is None else seq  # type: ignore[misc]
            parts.append(self.attn_global(tokens, batch.users.hist_mask, target, batch.owner))
        parts.append(batch.items.dense)
        return torch.cat(parts, dim=-1)

    def specific_features(self, batch: Batch, seq: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Scenario-dependent additions (N, specific_dim): the row's scenario slice of every field's
        specific embedding, and the behaviour transformer with the scenario's weights."""
        users, owner, b = batch.users, batch.owner, self.branches
        parts = []
        cand_branch = users.branch.index_select(0, owner)
        if self.specific is not None:
            s = self.specific
            parts += [_branch_slice(s.items(batch.items), self.item_fields, b, cand_branch),
                      _branch_slice(s.other_user(users), self.user_fields, b, users.branch).index_select(0, owner),
                      _branch_slice(s.query(users), 1, b, users.branch).index_select(0, owner),
                      _branch_slice(_masked_mean(s.behaviours(users), users.hist_mask), 3, b,
                                    users.branch).index_select(0, owner)]
        if self.attn_scenario is not None:
            tokens, target = self.sequence(batch) if seq is None else seq  # type: ignore[misc]
            parts.append(self.attn_scenario(tokens, users.hist_mask, target, owner, users.branch))
        return torch.cat(parts, dim=-1)

    def wide_logit(self, batch: Batch) -> Tensor:
        """The linear part (N,): one learned weight per id of every field, plus a linear map of dense."""
        assert self.wide is not None
        users = batch.users
        logit = self.wide.items(batch.items).sum(-1)
        logit = logit + (self.wide.other_user(users).sum(-1) + self.wide.query(users).sum(-1)).index_select(
            0, batch.owner)
        if self.wide_dense is not None:
            logit = logit + self.wide_dense(batch.items.dense).squeeze(-1)
        return logit

    def sync(self, optimizer: torch.optim.Optimizer | RowStateOwner | None = None,
             recycled: dict[str, list[int]] | None = None) -> bool:
        """Grow / reset every embedder's rows to the vocabularies (recycled rows drained once for all,
        unless the caller drained them already and passes them)."""
        recycled = drain_recycled(self.spec) if recycled is None else recycled
        grew = False
        for embedder in (self.embed, self.specific, self.wide):
            if embedder is not None:
                grew |= embedder.sync(optimizer, recycled)
        return grew
