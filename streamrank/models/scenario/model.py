"""`ScenarioModel`: SAML, its ablations and the multi-scenario baselines as one configurable module.

- Wide&Deep: LR on every id + MLP on the field embeddings (behaviours mean-pooled) and dense features.
- DeepFM: LR + FM's pairwise term + the same MLP.
- DCN: cross network and MLP side by side on the same input, then one linear output.
- MMoE: shared experts; one gate and one tower per scenario branch.
- BST: the behaviour transformer (`SequenceAttention`) + MLP.
- SAML: BST's inputs in global and scenario-specific subspaces; an auxiliary network on the
  scenario-independent features (own loss, hidden layers fed to every branch, detached: knowledge flows
  one way); one branch per scenario on the scenario-dependent features, joined by mutual units.

Routing: `UserSide.branch` (the feature path's `FeatureSpec.branch_of`) says which branch serves a row; 0 is
the shared "other" branch of unlisted scenarios. Branches count the training rows they learned from; in
eval mode a branch below `min_branch_samples` does not serve (a new or rare scenario) and its rows get the
auxiliary network's prediction, or the mean of the trained branches when there is no auxiliary network.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from streamrank.features.batch import Batch
from streamrank.features.spec import FeatureSpec
from streamrank.models.layers import RowStateOwner, eval_probabilities, mlp
from streamrank.models.ranking.moe import RankingOutput
from streamrank.models.scenario.config import ScenarioConfig
from streamrank.models.scenario.heads import BranchNetwork, CrossNetwork, MMoEHead, fm_logit
from streamrank.models.scenario.inputs import ScenarioInputs


class ScenarioModel(nn.Module):
    """The multi-scenario family; see the module docstring and `ScenarioConfig` for the flags."""

    # Training mode counts branch traffic and routes rare branches differently from eval mode, so the
    # online trainer's prediction needs its own eval forward (see RankingModel.train_eval_identical).
    train_eval_identical = False

    def __init__(self, spec: FeatureSpec, cfg: ScenarioConfig) -> None:
        super().__init__()
        self.spec, self.cfg = spec, cfg
        self.inputs = ScenarioInputs(spec, cfg)
        g, hid, b = self.inputs.global_dim, cfg.hidden, spec.num_branches
        self.register_buffer("branch_samples", torch.zeros(b, dtype=torch.long))
        self.deep: nn.Module | None = None
        self.aux: nn.ModuleList | None = None
        self.aux_out: nn.Module | None = None
        self.branches: BranchNetwork | None = None
        self.mmoe: MMoEHead | None = None
        self.cross: CrossNetwork | None = None
        if cfg.arch == "mmoe":
            self.mmoe = MMoEHead(b, g, hid, cfg.num_experts)
        elif cfg.arch == "saml" and cfg.multi_branch:
            dep = g + self.inputs.specific_dim
            if cfg.aux_net:
                sizes = [g, *hid]
                self.aux = nn.ModuleList(nn.Sequential(nn.Linear(a, h), nn.ReLU())
                                         for a, h in itertools.pairwise(sizes))
                self.aux_out = nn.Linear(hid[-1], 1)
            self.branches = BranchNetwork(b, dep, hid, list(hid) if cfg.aux_net else [], cfg.mutual_gate)
        else:
            width = g + self.inputs.specific_dim
            if cfg.arch == "dcn":  # cross and deep side by side, one linear output over both
                self.cross = CrossNetwork(width, cfg.cross_layers)
                self.deep = mlp(width, hid)  # ends with ReLU
                self.combine = nn.Linear(width + hid[-1], 1)
            else:
                self.deep = mlp(width, hid, 1)

    # --------------------------------------------------------------------------------------- routing
    def usable_branches(self) -> Tensor:
        """(B,) bool: branches that have learned from at least `min_branch_samples` training rows."""
        return self.branch_samples >= self.cfg.min_branch_samples

    def _count(self, branch: Tensor) -> None:
        """Adds a training batch's rows (their branches, (N,)) to each branch's count."""
        if self.training and torch.is_grad_enabled():
            self.branch_samples += torch.bincount(branch, minlength=len(self.branch_samples))

    def _route(self, own: Tensor, all_logits: Tensor, branch: Tensor, aux_logit: Tensor | None) -> Tensor:
        """Each row's own branch logit `own`; in eval mode, rows of unusable branches get the fallback."""
        if self.training:
            return own
        usable = self.usable_branches()
        if bool(usable.all()):
            return own
        if aux_logit is not None:
            fallback = aux_logit
        elif bool(usable.any()):
            fallback = all_logits[:, usable].mean(1)
        else:
            return own
        return torch.where(usable.index_select(0, branch), own, fallback)

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, batch: Batch) -> RankingOutput:
        """Logits of every candidate (`RankingOutput.expert_logits` holds every branch's logit)."""
        branch = batch.users.branch.index_select(0, batch.owner)
        self._count(branch)  # before the branches run: they read which branches are usable
        cfg, inputs = self.cfg, self.inputs
        fields = inputs.field_vectors(batch)
        seq = inputs.sequence(batch)  # behaviour and target tokens, shared by both transformers
        x = inputs.global_features(batch, fields, seq)
        if self.mmoe is not None:
            all_logits = self.mmoe(x)
            own = all_logits.gather(1, branch.unsqueeze(1)).squeeze(1)
            return RankingOutput(self._route(own, all_logits, branch, None), all_logits, None)
        if self.branches is not None:
            dep = torch.cat([x, inputs.specific_features(batch, seq)], dim=-1)
            aux_hidden, aux_logit = None, None
            if self.aux is not None and self.aux_out is not None:
                aux_hidden, h = [], x
                for layer in self.aux:
                    h = layer(h)
                    aux_hidden.append(h)
                aux_logit = self.aux_out(h).squeeze(-1)
                aux_hidden = [a.detach() for a in aux_hidden]
            own, all_logits = self.branches(dep, aux_hidden, self.usable_branches(), branch)
            return RankingOutput(self._route(own, all_logits, branch, aux_logit), all_logits, None, aux_logit)
        if inputs.specific_dim:
            x = torch.cat([x, inputs.specific_features(batch, seq)], dim=-1)
        assert self.deep is not None
        if self.cross is not None:
            logit = self.combine(torch.cat([self.cross(x), self.deep(x)], dim=-1)).squeeze(-1)
        else:
            logit = self.deep(x).squeeze(-1)
        if cfg.arch in ("wide_deep", "deepfm"):
            logit = logit + inputs.wide_logit(batch)
        if cfg.arch == "deepfm":
            logit = logit + fm_logit(fields)
        return RankingOutput(logit, logit.unsqueeze(1), None)

    @torch.no_grad()
    def score_request(self, batch: Batch) -> Tensor:
        """Click probabilities for a request batch (one or more user rows, many candidates each); the
        behaviour sequence goes through the transformer once per user row, not once per candidate."""
        return eval_probabilities(self, batch)

    def sync_vocab(self, optimizer: torch.optim.Optimizer | RowStateOwner | None = None,
                   recycled: dict[str, list[int]] | None = None) -> bool:
        """Bring every embedding table in line with the spec's vocabularies (see `RankingModel.sync_vocab`)."""
        return self.inputs.sync(optimizer, recycled)

    def describe(self) -> dict:
        """Parameter count, config and branch traffic, for reports."""
        counts = dict(zip(self.spec.branch_names(), self.branch_samples.tolist(), strict=True))
        return {"params": sum(p.numel() for p in self.parameters()), "branch_samples": counts,
                **self.cfg.to_dict()}
