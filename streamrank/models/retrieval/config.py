"""Configuration of the two-tower retrieval family (FM, YoutubeDNN, the ICAN-like base, MicRec).

Every model of the MicRec paper's Table 2 that we run is one module, `TwoTowerModel`, selected by these
flags; the three item-based contrastive tasks are auxiliary losses switched on by their weights. `PRESETS`
names the configurations of the benchmark.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

UserTower = Literal["transformer", "mean", "fm"]
ItemTower = Literal["mlp", "linear", "fm"]
SemanticSource = Literal["title", "genre"]
FeaAttach = Literal["raw", "tower"]


@dataclass(frozen=True)
class RetrievalConfig:
    """Hyper-parameters and structural flags of `TwoTowerModel`.

    emb_dim: size of every field embedding; dim: size of the user and item vectors.
    user_tower: "transformer" (the base: a transformer over the `max_behaviours` most recent behaviours,
        flattened, concatenated with the other user fields, then an MLP), "mean" (YoutubeDNN: mean of the
        behaviour embeddings ++ user fields -> MLP) or "fm" (the sum of the user-side field embeddings).
    item_tower: "mlp" (MLP over the concatenated item field embeddings), "linear" (one linear layer: the
        YoutubeDNN item embedding, here over all item fields) or "fm" (the sum of the item field embeddings).
    tower_hidden: hidden sizes of the tower MLPs; with the output layer (`dim`) the paper's 3-layer
        (128, 64, 64) MLP.
    normalize: L2-normalise user and item vectors (the score is then a cosine) — off by default: the
        paper scores with the plain dot product.
    temperature / n_negatives: sampled softmax with `n_negatives` uniformly random items (shared by the
        batch) as negatives, logits divided by `temperature`.
    mask_clicked: leave out of a row's negatives every pool item its user clicked in training (paper Eq. 7:
        the negatives are random items not clicked by u_i); False masks only copies of the row's target.
    fea_weight / fea_dropout: feature-level CL (element dropout of the raw item embedding, ratio 0.5).
    fea_on: where the feature-level CL compares the original and the augmented item: "raw" (the paper's
        Eq. 2: its projector MLP_f reads the raw field embeddings f and dropout(f) directly) or "tower"
        (both views go through the item tower first, then the projector; the pre-2026-12-02 code).
    sem_weight / sem_source / sem_topk: semantic-level CL, positives among the `sem_topk` nearest items by
        title embedding ("title") or sharing genres ("genre").
    sess_weight: session-level CL (positives drawn in proportion to one-hour co-occurrence counts).
    sess_same_category: factor on the co-occurrence count of two items of the same category when drawing
        session positives (paper Sec. 4.1 "emphasizes" same-category co-occurrences without a number: the
        2.0 is ours and open to tuning; 1.0 = plain counts).
    cl_negatives / cl_temperature / cl_anchors / proj_dim: distinct CL negatives per anchor (paper: up to
        50), InfoNCE temperature (paper: τ = 1 for all three tasks), anchor items per step (the batch's
        distinct targets, subsampled), output size of the 1-layer projectors.
    cl_normalize: compare L2-normalised projections (cosine / cl_temperature) instead of the paper's raw
        dot product (Eq. 2, 4, 5). Off by default; the cosine with τ = 0.2 was an earlier deviation chosen
        on validation when the feature-level CL was attached to the tower (docs/retrieval.md).
    """

    emb_dim: int = 64
    dim: int = 64
    user_tower: UserTower = "transformer"
    item_tower: ItemTower = "mlp"
    max_behaviours: int = 20
    n_heads: int = 2
    n_layers: int = 1
    ffn_dim: int = 128
    dropout: float = 0.0
    tower_hidden: tuple[int, ...] = (128, 64)
    normalize: bool = False
    temperature: float = 1.0
    n_negatives: int = 1024
    mask_clicked: bool = True
    fea_weight: float = 0.0
    fea_dropout: float = 0.5
    fea_on: FeaAttach = "raw"
    sem_weight: float = 0.0
    sem_source: SemanticSource = "title"
    sem_topk: int = 10
    sess_weight: float = 0.0
    sess_same_category: float = 2.0
    cl_negatives: int = 50
    cl_temperature: float = 1.0
    cl_normalize: bool = False
    cl_anchors: int = 512
    proj_dim: int = 64

    def __post_init__(self) -> None:
        if "fm" in (self.user_tower, self.item_tower) and self.emb_dim != self.dim:
            raise ValueError("an FM tower sums field embeddings: emb_dim must equal dim")
        if (self.user_tower == "fm") != (self.item_tower == "fm"):
            raise ValueError("FM towers come in pairs (user_tower and item_tower both 'fm')")
        if not 0.0 <= self.fea_dropout < 1.0:
            raise ValueError("fea_dropout must be in [0, 1)")
        if min(self.fea_weight, self.sem_weight, self.sess_weight) < 0:
            raise ValueError("CL weights must be >= 0")
        if self.n_negatives < 1 or self.cl_negatives < 1:
            raise ValueError("n_negatives and cl_negatives must be positive")
        if self.fea_on not in ("raw", "tower"):
            raise ValueError("fea_on must be 'raw' or 'tower'")
        if self.sess_same_category <= 0:
            raise ValueError("sess_same_category must be > 0")

    @property
    def cl_tasks(self) -> tuple[str, ...]:
        """Names of the enabled contrastive tasks ("fea", "sem", "sess")."""
        w = {"fea": self.fea_weight, "sem": self.sem_weight, "sess": self.sess_weight}
        return tuple(k for k, v in w.items() if v > 0)

    def replace(self, **changes: object) -> RetrievalConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        """Plain dict for reports and artefacts."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RetrievalConfig:
        """Inverse of `to_dict` (JSON turns tuples into lists; they are turned back).

        Fields missing from a dict saved before they existed take the value the code then had (`LEGACY`),
        so an old artefact rebuilds the model it was trained as.
        """
        d = {**LEGACY, **d}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# What configs saved before 2026-12-02 meant by the fields added then (fea_on decides the projector's shape).
LEGACY: dict[str, object] = {"fea_on": "tower", "mask_clicked": False, "sess_same_category": 1.0}


_BASE = RetrievalConfig()
# The paper's loss weights (Sec. 5.3, videos): lambda = 1.0 (fea), 0.3 (sem), 0.1 (sess).
PRESETS: dict[str, RetrievalConfig] = {
    "fm": _BASE.replace(user_tower="fm", item_tower="fm"),
    "youtube_dnn": _BASE.replace(user_tower="mean", item_tower="linear"),
    "base": _BASE,
    "fea": _BASE.replace(fea_weight=1.0),
    "fea_sess": _BASE.replace(fea_weight=1.0, sess_weight=0.1),
    "micrec": _BASE.replace(fea_weight=1.0, sem_weight=0.3, sess_weight=0.1),
}

DISPLAY_NAMES = {"popularity": "Popularity", "fm": "FM", "youtube_dnn": "YoutubeDNN", "base": "Base (ICAN-like)",
                 "fea": "MicRec (fea)", "fea_sess": "MicRec (fea+sess)", "micrec": "MicRec (final)"}


def make_config(name: str, **overrides: object) -> RetrievalConfig:
    """The preset `name` with further overrides (sizes, weights, semantic source...)."""
    if name not in PRESETS:
        raise KeyError(f"unknown retrieval model {name!r}; presets: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
