"""A retrieval model as a set of named files (weights, feature spec, configuration), and back.

Mirrors `streamrank.models.ranking.artifact`: the trainer writes these bytes, the registry stores them,
the scorer and the index-refresh job read them back through `retrieval_from_files`.
"""

from __future__ import annotations

import io
import json

import torch

from streamrank.features.spec import FeatureSpec
from streamrank.models.retrieval.config import RetrievalConfig
from streamrank.models.retrieval.model import TwoTowerModel

WEIGHTS = "model.pt"
SPEC = "spec.json"
CONFIG = "config.json"
KIND = "two_tower"


def retrieval_files(model: TwoTowerModel, preset: str) -> dict[str, bytes]:
    """The files that describe `model` completely (CPU tensors, so any device can load them)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    config = {"kind": KIND, "preset": preset, "config": model.cfg.to_dict()}
    return {
        WEIGHTS: buf.getvalue(),
        SPEC: json.dumps(model.spec.to_dict()).encode(),
        CONFIG: json.dumps(config, sort_keys=True).encode(),
    }


def retrieval_from_files(files: dict[str, bytes],
                         device: torch.device | str = "cpu") -> tuple[TwoTowerModel, str]:
    """Rebuilds the model written by `retrieval_files`; returns it (eval mode) with its preset name."""
    missing = [n for n in (WEIGHTS, SPEC, CONFIG) if n not in files]
    if missing:
        raise ValueError(f"not a retrieval model artefact: {', '.join(missing)} missing")
    config = json.loads(files[CONFIG])
    if config.get("kind") != KIND:
        raise ValueError(f"not a retrieval model artefact (kind {config.get('kind')!r})")
    spec = FeatureSpec.from_dict(json.loads(files[SPEC]))
    model = TwoTowerModel(spec, RetrievalConfig.from_dict(config["config"]))
    state = torch.load(io.BytesIO(files[WEIGHTS]), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model.to(device), config["preset"]
