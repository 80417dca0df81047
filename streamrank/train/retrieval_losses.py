"""The retrieval training objective: sampled softmax plus MicRec's item-based CL losses (Eq. 1-8).

One step sees B (user, target item) pairs and a pool of P uniformly random corpus items. Every item
vector it needs (targets, pool, CL anchors and their positives) comes from one item-tower pass over the
distinct item codes involved.

- Matching loss (Eq. 1 / 7): softmax over [target, P random items] of u·d / τ; pool items equal to the
  row's target, and (cfg.mask_clicked) pool items the row's user clicked in training, are masked out:
  the paper's negatives are random items not clicked by u_i.
- Anchors of the CL tasks: the batch's distinct targets, subsampled to `cfg.cl_anchors`.
- Feature-level (Eq. 2-3): anchor = MLP_f(f), positive = MLP_f(dropout(f)) with element-level dropout of
  the raw item embedding f (cfg.fea_on="tower": both through the item tower first); negatives = the
  augmented views of up to `cl_negatives` distinct other anchors.
- Semantic-level (Eq. 4): on item-tower outputs, positive = a random item among the anchor's top-k
  semantic neighbours; negatives = up to `cl_negatives` distinct pool items that are not its neighbours.
- Session-level (Eq. 5): on item-tower outputs, positive drawn in proportion to co-occurrence counts,
  same-category co-occurrences weighted by `cfg.sess_same_category` (Sec. 4.1); negatives = up to
  `cl_negatives` distinct pool items that never co-occurred with the anchor. Anchors without any
  co-occurrence are left out.
- Each task has its own 1-layer projector; similarity = dot product of projections / τ (τ = 1).
- L = L_S + λ_fea L_fea + λ_sem L_sem + λ_sess L_sess (Eq. 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamrank.features.batch import ItemSide, UserSide
from streamrank.features.vocab import OOV
from streamrank.models.retrieval.cl import element_dropout, info_nce, other_rows
from streamrank.models.retrieval.model import TwoTowerModel
from streamrank.train.cooc_sampling import NeighbourSampler


@dataclass
class CLSamplers:
    """The item graphs behind the semantic- and session-level tasks (None when the task is off)."""

    semantic: NeighbourSampler | None = None
    session: NeighbourSampler | None = None
    _boosted: dict[float, NeighbourSampler] = field(default_factory=dict, repr=False)

    def session_for(self, factor: float, corpus: ItemSide) -> NeighbourSampler | None:
        """The session graph with same-category co-occurrences weighted `factor` times (built once per
        factor from the corpus' category codes; PAD/OOV categories never count as the same)."""
        if self.session is None or factor == 1.0:
            return self.session
        if factor not in self._boosted:
            cat = corpus.category.detach().cpu().numpy().astype(np.int64)
            self._boosted[factor] = self.session.with_group_boost(np.where(cat > OOV, cat, -1), factor)
        return self._boosted[factor]


class ClickedItems:
    """Which items each user clicked (a user code x item code membership table), for negative masking."""

    DENSE_LIMIT = 1 << 27  # cells of the dense table; beyond it, sorted keys

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int) -> None:
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        self.n_users, self.n_items = int(users.max(initial=-1)) + 1, n_items
        self.dense: np.ndarray | None = None
        self.keys: np.ndarray | None = None
        if self.n_users * n_items <= self.DENSE_LIMIT:
            self.dense = np.zeros((self.n_users, n_items), dtype=bool)
            self.dense[users, items] = True
        else:
            self.keys = np.unique(users * n_items + items)

    def mask(self, users: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """(B, P) bool: whether users[b] clicked pool[p] (users unknown to the table clicked nothing)."""
        users, pool = np.asarray(users, dtype=np.int64), np.asarray(pool, dtype=np.int64)
        known = users < self.n_users
        out = np.zeros((len(users), len(pool)), dtype=bool)
        if self.dense is not None:
            out[known] = self.dense[users[known]][:, pool]
        elif self.keys is not None and len(self.keys):
            keys = users[known, None] * self.n_items + pool[None, :]
            at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            out[known] = self.keys[at] == keys
        return out


@dataclass
class StepInputs:
    """One training step: users (B), their target item codes (B,), the random pool's item codes (P,), and
    optionally `clicked` (B, P): pool items the row's user clicked (masked out of the matching negatives)."""

    users: UserSide
    targets: np.ndarray
    pool: np.ndarray
    clicked: np.ndarray | None = None


def sampled_softmax(u: Tensor, pos: Tensor, pool: Tensor, same: Tensor, temperature: float) -> Tensor:
    """Mean -log softmax of the target among [target, pool]; `same` (B, P) masks pool items that are not
    negatives of the row (copies of its target, items its user clicked)."""
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
    session = samplers.session_for(cfg.sess_same_category, corpus) if "sess" in cfg.cl_tasks else None
    for task, sampler in (("sem", samplers.semantic), ("sess", session)):
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
    not_negative = step.targets[:, None] == step.pool[None, :]
    if cfg.mask_clicked and step.clicked is not None:
        not_negative = not_negative | step.clicked
    same = torch.from_numpy(not_negative).to(dev)
    out = {"match": sampled_softmax(u, vecs[t_idx], vecs[p_idx], same, cfg.temperature)}
    tau = cfg.cl_temperature
    if "fea" in cfg.cl_tasks:
        f = raw[a_idx]
        f_aug = element_dropout(f, cfg.fea_dropout, generator)
        if cfg.fea_on == "raw":  # Eq. 2: MLP_f over the raw embeddings of the item and of its augmentation
            z, z_aug = model.project("fea", f), model.project("fea", f_aug)
        else:
            z, z_aug = model.project("fea", vecs[a_idx]), model.project("fea", model.item_vectors_from_raw(f_aug))
        neg = other_rows(len(anchors), cfg.cl_negatives, generator, dev)
        out["fea"] = info_nce(z, z_aug, z_aug[neg], temperature=tau)
    for k, (task, (_, has)) in enumerate(extra.items()):
        sampler = samplers.semantic if task == "sem" else session
        assert sampler is not None
        pick, valid = sampler.negatives(anchors, step.pool, cfg.cl_negatives, rng)
        z_pool = model.project(task, vecs[p_idx])
        out[task] = info_nce(model.project(task, vecs[a_idx]), model.project(task, vecs[parts[3 + k]]),
                             z_pool[torch.from_numpy(pick).to(dev)], torch.from_numpy(valid).to(dev), tau,
                             torch.from_numpy(has).to(dev))
    weights = {"match": 1.0, "fea": cfg.fea_weight, "sem": cfg.sem_weight, "sess": cfg.sess_weight}
    out["total"] = sum((weights[k] * v for k, v in out.items()), torch.zeros((), device=dev))
    return out
