"""One place that turns a preset name (or a saved configuration) into a ranking model of either family.

The online trainer, the artefact reader, the scorer and the benchmarks ask here, so any preset of the
AW-MoE family (`streamrank.models.ranking`) or the multi-scenario family (`streamrank.models.scenario`)
trains, publishes and serves through the same path.
"""

from __future__ import annotations

from typing import Any

from streamrank.features.spec import FeatureSpec
from streamrank.models import ranking, scenario
from streamrank.models.ranking.moe import RankingModel
from streamrank.models.scenario.model import ScenarioModel

Ranker = RankingModel | ScenarioModel

PRESETS: dict[str, dict[str, object]] = {**ranking.PRESETS, **scenario.PRESETS}
DISPLAY_NAMES: dict[str, str] = {**ranking.DISPLAY_NAMES, **scenario.DISPLAY_NAMES}


def is_scenario_preset(name: str) -> bool:
    """Whether preset `name` is a multi-scenario model (its spec should list the scenarios)."""
    return name in scenario.PRESETS


def build_model(name: str, spec: FeatureSpec, **overrides: object) -> Ranker:
    """A model for preset `name` over `spec`, with config overrides; KeyError names every preset."""
    if name in ranking.PRESETS:
        return RankingModel(spec, ranking.make_config(name, **overrides))
    if name in scenario.PRESETS:
        return ScenarioModel(spec, scenario.make_config(name, **overrides))
    raise KeyError(f"unknown ranking model {name!r}; presets: {', '.join(sorted(PRESETS))}")


def model_config(name: str, **overrides: object) -> dict:
    """The whole configuration (`cfg.to_dict()`) a preset with overrides builds, without building it."""
    if name in ranking.PRESETS:
        return ranking.make_config(name, **overrides).to_dict()
    if name in scenario.PRESETS:
        return scenario.make_config(name, **overrides).to_dict()
    raise KeyError(f"unknown ranking model {name!r}; presets: {', '.join(sorted(PRESETS))}")


def model_from_config(spec: FeatureSpec, config: dict[str, Any]) -> Ranker:
    """Rebuilds a model (untrained weights) from its `cfg.to_dict()`; the "family" key picks the class."""
    if config.get("family") == "scenario":
        return ScenarioModel(spec, scenario.ScenarioConfig.from_dict(config))
    return RankingModel(spec, ranking.RankingConfig.from_dict(config))


def same_architecture(model: Ranker, spec: FeatureSpec) -> Ranker:
    """A fresh model of `model`'s class and configuration over another spec (restores, reloads)."""
    return model_from_config(spec, model.cfg.to_dict())
