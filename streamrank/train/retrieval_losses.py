"""The retrieval training objective: sampled softmax plus MicRec's item-based CL losses (Eq. 1-8).

One step sees B (user, target item) pairs and a pool of P uniformly random corpus items. Every item
vector it needs (targets, pool, CL anchors and their positives) comes from one item-tower pass over the
distinct item codes involved.

- Matching loss (Eq. 1 / 7): softmax over [target, P random items] of u·d / τ; pool items equal to the
  row's target are masked out.
- Anchors of the CL tasks: the batch's distinct targets, subsampled to `cfg.cl_anchors`.
- Feature-level (Eq. 2-3): anchor = projector(tower(f)), positive = projector(tower(dropout(f))) with
  element-level dropout; negatives = the augmented views of up to `cl_negatives` other anchors.
- Semantic-level (Eq. 4): positive = a random item among the anchor's top-k semantic neighbours;
  negatives = `cl_negatives` picks from the random pool that are not its neighbours.
- Session-level (Eq. 5): positive drawn in proportion to co-occurrence counts; negatives = pool picks
  that never co-occurred with the anchor. Anchors without any co-occurrence are left out.
- L = L_S + λ_fea L_fea + λ_sem L_sem + λ_sess L_sess (Eq. 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamrank.features.batch import ItemSide, UserSide
from streamrank.models.retrieval.cl import element_dropout, info_nce, other_rows
from streamrank.models.retrieval.model import TwoTowerModel
from streamrank.train.cooc_sampling import NeighbourSampler


@dataclass
class CLSamplers:
    """The item graphs behind the semantic- and session-level tasks (None when the task is off)."""

    semantic: NeighbourSampler | None = None
    session: NeighbourSampler | None = None


@dataclass
class StepInputs:
    """One training step: users (B), their target item codes (B,), the random pool's item codes (P,)."""

    users: UserSide
    targets: np.ndarray
    pool: np.ndarray


def sampled_softmax(u: Tensor, pos: Tensor, pool: Tensor, same: Tensor, temperature: float) -> Tensor:
    """Mean -log softmax of the target among [target, pool]; `same` (B, P) masks pool copies of the target."""
    logits = torch.cat([(u * pos).sum(-1, keepdim=True), (u @ pool.T).masked_fill(same, float("-inf"))], dim=1)
    target = torch.zeros(len(u), dtype=torch.long, device=u.device)
    return F.cross_entropy(logits / temperature, target)


def step_losses(model: TwoTowerModel, corpus: ItemSide, step: StepInputs, samplers: CLSamplers,
                rng: np.random.Generator, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Every loss term of one step ("match", "fea", "sem", "sess" as enabled) and their weighted "total".

    `corpus` is the encoded item side of every corpus item (row = item code), on the model's device.
    """
    cfg, dev = model.cfg, model.device
    anchors = np.unique(step.targets)
    if len(anchors) > cfg.cl_anchors:
        anchors = rng.choice(anchors, cfg.cl_anchors, replace=False)
    extra: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task, sampler in (("sem", samplers.semantic), ("sess", samplers.session)):
        if task in cfg.cl_tasks:
            if sampler is None:
                raise ValueError(f"the {task} CL task is enabled but no sampler was given")
            extra[task] = sampler.positives(anchors, rng)
    codes, inverse = np.unique(np.concatenate([step.targets, step.pool, anchors, *(p for p, _ in extra.values())]),
                               return_inverse=True)
    raw = model.raw_items(corpus.index(torch.from_numpy(codes).to(dev)))
    vecs = model.item_vectors_from_raw(raw)
    cuts = np.cumsum([len(step.targets), len(step.pool), len(anchors), *(len(p) for p, _ in extra.values())])
    parts = [torch.from_numpy(x).to(dev) for x in np.split(inverse, cuts[:-1])]
    t_idx, p_idx, a_idx = parts[0], parts[1], parts[2]

    u = model.user_vectors(step.users.to(dev))
    same = torch.from_numpy(step.targets[:, None] == step.pool[None, :]).to(dev)
    out = {"match": sampled_softmax(u, vecs[t_idx], vecs[p_idx], same, cfg.temperature)}
    tau = cfg.cl_temperature
    if "fea" in cfg.cl_tasks:
        f = raw[a_idx]
        z = model.project("fea", vecs[a_idx])
        z_aug = model.project("fea", model.item_vectors_from_raw(element_dropout(f, cfg.fea_dropout, generator)))
        neg = other_rows(len(anchors), cfg.cl_negatives, generator, dev)
        out["fea"] = info_nce(z, z_aug, z_aug[neg], temperature=tau)
    for k, (task, (_, has)) in enumerate(extra.items()):
        sampler = samplers.semantic if task == "sem" else samplers.session
        assert sampler is not None
        pick, valid = sampler.negatives(anchors, step.pool, cfg.cl_negatives, rng)
        z_pool = model.project(task, vecs[p_idx])
        out[task] = info_nce(model.project(task, vecs[a_idx]), model.project(task, vecs[parts[3 + k]]),
                             z_pool[torch.from_numpy(pick).to(dev)], torch.from_numpy(valid).to(dev), tau,
                             torch.from_numpy(has).to(dev))
    weights = {"match": 1.0, "fea": cfg.fea_weight, "sem": cfg.sem_weight, "sess": cfg.sess_weight}
    out["total"] = sum((weights[k] * v for k, v in out.items()), torch.zeros((), device=dev))
    return out
