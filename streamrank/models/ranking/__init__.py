"""Ranking models: the AW-MoE family (DNN, DIN, Category-MoE, AW-MoE, AW-MoE & CL, gate ablations)."""

from streamrank.features.spec import FeatureSpec
from streamrank.models.ranking.config import DISPLAY_NAMES, PRESETS, RankingConfig, make_config
from streamrank.models.ranking.moe import RankingModel, RankingOutput


def build_model(name: str, spec: FeatureSpec, **overrides: object) -> RankingModel:
    """A `RankingModel` for preset `name` (see `PRESETS`) over `spec`, with config overrides."""
    return RankingModel(spec, make_config(name, **overrides))


__all__ = ["DISPLAY_NAMES", "PRESETS", "RankingConfig", "RankingModel", "RankingOutput", "build_model",
           "make_config"]
