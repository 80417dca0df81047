"""Multi-scenario ranking models: SAML (with ablations) and Wide&Deep, DeepFM, DCN, MMoE, BST."""

from streamrank.models.scenario.config import DISPLAY_NAMES, PRESETS, ScenarioConfig, make_config
from streamrank.models.scenario.model import ScenarioModel

__all__ = ["DISPLAY_NAMES", "PRESETS", "ScenarioConfig", "ScenarioModel", "make_config"]
