"""Retrieval models: two towers (FM, YoutubeDNN, the ICAN-like base) with MicRec's item-based CL tasks."""

from streamrank.features.spec import FeatureSpec
from streamrank.models.retrieval.artifact import retrieval_files, retrieval_from_files
from streamrank.models.retrieval.config import DISPLAY_NAMES, PRESETS, RetrievalConfig, make_config
from streamrank.models.retrieval.model import TwoTowerModel


def build_retrieval_model(name: str, spec: FeatureSpec, **overrides: object) -> TwoTowerModel:
    """A `TwoTowerModel` for preset `name` (see `PRESETS`) over `spec`, with config overrides."""
    return TwoTowerModel(spec, make_config(name, **overrides))


__all__ = ["DISPLAY_NAMES", "PRESETS", "RetrievalConfig", "TwoTowerModel", "build_retrieval_model", "make_config",
           "retrieval_files", "retrieval_from_files"]
