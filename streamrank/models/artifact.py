"""A model as a set of named files (weights, feature spec, configuration), and back.

The registry stores these bytes without knowing what they are; trainers write them and the scorer and the
index job read them. Ranking and retrieval models share the layout and differ only in their configuration.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from streamrank.features.spec import FeatureSpec

WEIGHTS = "model.pt"
SPEC = "spec.json"
CONFIG = "config.json"
FILES = (WEIGHTS, SPEC, CONFIG)


def pack(model: nn.Module, spec: FeatureSpec, config: dict[str, Any]) -> dict[str, bytes]:
    """The files that describe a model completely (CPU tensors, so any device can load them)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return {
        WEIGHTS: buf.getvalue(),
        SPEC: json.dumps(spec.to_dict()).encode(),
        CONFIG: json.dumps(config, sort_keys=True).encode(),
    }


def unpack(files: dict[str, bytes], what: str) -> tuple[dict[str, torch.Tensor], FeatureSpec, dict[str, Any]]:
    """The weights, spec and configuration of files written by `pack`; ValueError when one is missing."""
    missing = [n for n in FILES if n not in files]
    if missing:
        raise ValueError(f"not a {what} artefact: {', '.join(missing)} missing")
    state = torch.load(io.BytesIO(files[WEIGHTS]), map_location="cpu", weights_only=True)
    return state, FeatureSpec.from_dict(json.loads(files[SPEC])), json.loads(files[CONFIG])


def write_dir(files: dict[str, bytes], path: str | Path) -> Path:
    """Writes artefact files into a directory (an offline model, to warm-start or to index)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out


def read_dir(path: str | Path) -> dict[str, bytes]:
    """The artefact files of a directory written by `write_dir` (or a registry version directory)."""
    base = Path(path)
    return {name: (base / name).read_bytes() for name in FILES if (base / name).exists()}
