"""A ranking model as a set of named files (weights, feature spec, configuration), and back.

The registry stores these bytes without knowing what they are; the trainer writes them and the scorer
reads them, so both go through this one pair of functions.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from streamrank.features.spec import FeatureSpec
from streamrank.models.ranking.config import RankingConfig
from streamrank.models.ranking.moe import RankingModel

WEIGHTS = "model.pt"
SPEC = "spec.json"
CONFIG = "config.json"


def model_files(model: RankingModel, preset: str) -> dict[str, bytes]:
    """The files that describe `model` completely (CPU tensors, so any device can load them)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    config = {"preset": preset, "config": model.cfg.to_dict()}
    return {
        WEIGHTS: buf.getvalue(),
        SPEC: json.dumps(model.spec.to_dict()).encode(),
        CONFIG: json.dumps(config, sort_keys=True).encode(),
    }


def model_from_files(files: dict[str, bytes], device: torch.device | str = "cpu") -> tuple[RankingModel, str]:
    """Rebuilds the model written by `model_files`; returns it (eval mode) with its preset name."""
    missing = [n for n in (WEIGHTS, SPEC, CONFIG) if n not in files]
    if missing:
        raise ValueError(f"not a ranking model artefact: {', '.join(missing)} missing")
    spec = FeatureSpec.from_dict(json.loads(files[SPEC]))
    config = json.loads(files[CONFIG])
    model = RankingModel(spec, RankingConfig.from_dict(config["config"]))
    state = torch.load(io.BytesIO(files[WEIGHTS]), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model.to(device), config["preset"]


def write_model_dir(model: RankingModel, preset: str, path: str | Path) -> Path:
    """Writes the artefact files into a directory (an offline model to warm-start the online trainer)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in model_files(model, preset).items():
        (out / name).write_bytes(data)
    return out


def read_model_dir(path: str | Path) -> dict[str, bytes]:
    """The artefact files of a directory written by write_model_dir (or a registry version directory)."""
    base = Path(path)
    return {name: (base / name).read_bytes() for name in (WEIGHTS, SPEC, CONFIG) if (base / name).exists()}
