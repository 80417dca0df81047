"""Configuration of the multi-scenario model family: SAML, its ablations, and the baselines of its Table II.

One module, `ScenarioModel`, is selected by `arch` and SAML's flags (MODELS.md section 2):
Wide&Deep, DeepFM, DCN, MMoE (one gate and tower per scenario), BST, and SAML with or without the gate of
its mutual unit, the auxiliary network, or the whole multi-branch network. DIN, the remaining baseline of
the paper's table, is `streamrank.models.ranking`'s preset "din".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

Arch = Literal["wide_deep", "deepfm", "dcn", "mmoe", "bst", "saml"]


@dataclass(frozen=True)
class ScenarioConfig:
    """Hyper-parameters and structural flags of `ScenarioModel`.

    emb_dim: global embedding size per field. scenario_emb_dim: scenario-specific size per field (SAML).
    hidden: MLP layer sizes (deep parts, MMoE experts, SAML's auxiliary and branch networks).
    heads: attention heads of the behaviour transformer (BST, SAML).
    cross_layers: DCN's cross layers. num_experts: MMoE's experts.
    SAML flags: scenario_embedding / scenario_attention add the scenario-specific subspaces;
        aux_net: the auxiliary network on scenario-independent features, with its own loss (weight
        aux_weight), whose hidden layers feed every branch; multi_branch: one branch per scenario (off =
        one MLP on all features: "w/o gate & mutual"); mutual_gate: the mutual unit (off = alpha 0,
        independent branches: "w/o gate").
    min_branch_samples: a branch that has learned from fewer training rows than this does not serve;
        its scenario gets the auxiliary network's prediction (or the mean of the trained branches).
    """

    arch: Arch = "saml"
    emb_dim: int = 12
    scenario_emb_dim: int = 4
    hidden: tuple[int, ...] = (128, 64)
    heads: int = 4
    cross_layers: int = 3
    num_experts: int = 4
    scenario_embedding: bool = True
    scenario_attention: bool = True
    aux_net: bool = True
    multi_branch: bool = True
    mutual_gate: bool = True
    aux_weight: float = 1.0
    min_branch_samples: int = 100

    def __post_init__(self) -> None:
        saml_parts = (self.scenario_embedding, self.scenario_attention, self.aux_net, self.multi_branch,
                      self.mutual_gate)
        if self.arch != "saml" and any(saml_parts):
            raise ValueError(f"{self.arch}: SAML's flags (scenario_embedding, scenario_attention, aux_net, "
                             "multi_branch, mutual_gate) must be off")
        if self.mutual_gate and not self.multi_branch:
            raise ValueError("the mutual unit joins branches: mutual_gate needs multi_branch")
        if self.aux_net and not self.multi_branch:
            raise ValueError("without branches the one MLP is the auxiliary network: set aux_net=False")
        if not self.hidden:
            raise ValueError("hidden needs at least one layer")
        if (3 * self.emb_dim) % self.heads:
            raise ValueError(f"3 * emb_dim ({3 * self.emb_dim}) must be divisible by heads ({self.heads})")
        if self.arch == "mmoe" and self.num_experts < 2:
            raise ValueError("MMoE needs at least two experts")

    @property
    def attention(self) -> bool:
        """Whether the behaviour sequence goes through the transformer (else it is mean-pooled)."""
        return self.arch in ("bst", "saml")

    @property
    def branched(self) -> bool:
        """Whether the output has one head per scenario (SAML's branches, MMoE's towers)."""
        return self.arch == "mmoe" or (self.arch == "saml" and self.multi_branch)

    def replace(self, **changes: object) -> ScenarioConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        """Plain dict for reports and artefacts (`family` tells the model factory which class to build)."""
        return {"family": "scenario", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> ScenarioConfig:
        """Inverse of `to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "family"})


_BASELINE = {"scenario_embedding": False, "scenario_attention": False, "aux_net": False, "multi_branch": False,
             "mutual_gate": False}

# name -> field overrides of ScenarioConfig(): the paper's Table II baselines, SAML, its Table IV ablations.
PRESETS: dict[str, dict[str, object]] = {
    "wide_deep": {"arch": "wide_deep", **_BASELINE},
    "deepfm": {"arch": "deepfm", **_BASELINE},
    "dcn": {"arch": "dcn", **_BASELINE},
    "mmoe": {"arch": "mmoe", **_BASELINE},
    "bst": {"arch": "bst", **_BASELINE},
    "saml": {"arch": "saml"},
    "saml_no_gate": {"arch": "saml", "mutual_gate": False},
    "saml_no_aux": {"arch": "saml", "aux_net": False},
    "saml_no_gate_mutual": {"arch": "saml", "aux_net": False, "multi_branch": False, "mutual_gate": False},
}

DISPLAY_NAMES = {
    "wide_deep": "Wide&Deep", "deepfm": "DeepFM", "dcn": "DCN", "mmoe": "MMoE", "bst": "BST", "saml": "SAML",
    "saml_no_gate": "SAML w/o gate", "saml_no_aux": "SAML w/o aux", "saml_no_gate_mutual": "SAML w/o gate&mut",
}


def make_config(name: str, **overrides: object) -> ScenarioConfig:
    """The preset `name` with further overrides (sizes, aux_weight, ...)."""
    if name not in PRESETS:
        raise KeyError(f"unknown multi-scenario model {name!r}; presets: {sorted(PRESETS)}")
    return ScenarioConfig(**{**PRESETS[name], **overrides})  # type: ignore[arg-type]
