"""Configuration of the ranking model family (DNN, DIN, Category-MoE, AW-MoE and its ablations).

All five models of the paper's Table II and the four gate ablations of Table VI are one module,
`RankingModel`, selected by these flags. `PRESETS` names the configurations used in the benchmark.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

Pooling = Literal["sum", "attention"]
GateKind = Literal["none", "category", "behaviour"]
GateContext = Literal["query", "target"]
GateNorm = Literal["softmax", "none"]


@dataclass(frozen=True)
class RankingConfig:
    """Hyper-parameters and structural flags of `RankingModel`.

    pooling: user vector of the input network: "sum" of h_t (DNN) or DIN "attention" (activation unit).
    num_experts: K expert FFNs (1 with gate "none": DNN / DIN).
    gate: "none", "category" (Category-MoE: FFN on one category embedding) or "behaviour" (AW-MoE).
    gate_unit / activation_unit: AW-MoE's GU and AU (both False = "Base": linear map of sum-pooled h'_t).
    gate_context: what the gate pairs behaviours with: the request's "query" (computed once per request,
        the search setting) or the "target" item (per candidate, the recommendation setting).
    gate_norm: w = softmax(g) or w = g in y = sigmoid(sum_k w_k s_k).
    cl_*: contrastive learning on the gate output (weight 0 disables it): mask probability p,
        n in-batch negatives, loss weight lambda.
    """

    emb_dim: int = 16
    hidden_dim: int = 32
    input_mlp_hidden: tuple[int, ...] = (64,)
    pooling: Pooling = "attention"
    num_experts: int = 4
    expert_hidden: tuple[int, ...] = (200, 80)
    au_hidden: tuple[int, ...] = (80, 40)
    gate: GateKind = "behaviour"
    gate_unit: bool = True
    activation_unit: bool = True
    gate_unit_hidden: tuple[int, ...] = (80, 40)
    gate_context: GateContext = "query"
    gate_norm: GateNorm = "softmax"
    category_gate_hidden: tuple[int, ...] = (80,)
    cl_weight: float = 0.0
    cl_mask_prob: float = 0.1
    cl_negatives: int = 3

    def __post_init__(self) -> None:
        if self.gate == "none" and self.num_experts != 1:
            raise ValueError("a model without a gate must have exactly one expert")
        if self.gate != "none" and self.num_experts < 2:
            raise ValueError("a gated model needs at least two experts")
        if self.cl_weight > 0 and self.gate != "behaviour":
            raise ValueError("contrastive learning acts on the behaviour gate; use gate='behaviour'")
        if not 0.0 <= self.cl_mask_prob < 1.0:
            raise ValueError("cl_mask_prob must be in [0, 1)")

    def replace(self, **changes: object) -> RankingConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        """Plain dict for reports and artefacts."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RankingConfig:
        """Inverse of `to_dict` (JSON turns tuples into lists; they are turned back)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# name -> field overrides of RankingConfig(); the paper's models, then the Table VI gate ablations.
PRESETS: dict[str, dict[str, object]] = {
    "dnn": {"pooling": "sum", "num_experts": 1, "gate": "none"},
    "din": {"pooling": "attention", "num_experts": 1, "gate": "none"},
    "category_moe": {"gate": "category"},
    "aw_moe": {"gate": "behaviour"},
    "aw_moe_cl": {"gate": "behaviour", "cl_weight": 0.05},
    "aw_moe_base": {"gate": "behaviour", "gate_unit": False, "activation_unit": False},
    "aw_moe_gu": {"gate": "behaviour", "gate_unit": True, "activation_unit": False},
    "aw_moe_au": {"gate": "behaviour", "gate_unit": False, "activation_unit": True},
}

DISPLAY_NAMES = {
    "dnn": "DNN", "din": "DIN", "category_moe": "Category-MoE", "aw_moe": "AW-MoE",
    "aw_moe_cl": "AW-MoE & CL",
    "aw_moe_base": "Base (sum pooling)", "aw_moe_gu": "Base+GU", "aw_moe_au": "Base+AU",
}


def make_config(name: str, **overrides: object) -> RankingConfig:
    """The preset `name` with further overrides (e.g. sizes, gate_context, gate_norm)."""
    if name not in PRESETS:
        raise KeyError(f"unknown ranking model {name!r}; presets: {sorted(PRESETS)}")
    return RankingConfig(**{**PRESETS[name], **overrides})  # type: ignore[arg-type]
