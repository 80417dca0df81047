"""A retrieval model as registry files (see streamrank.models.artifact for the layout), and back.

The trainer writes these bytes, the registry stores them, the scorer and the index-refresh job read them
back through `retrieval_from_files`. The configuration carries `kind` so a ranking artefact is refused.
"""

from __future__ import annotations

import torch

from streamrank.models.artifact import pack, unpack
from streamrank.models.retrieval.config import RetrievalConfig
from streamrank.models.retrieval.model import TwoTowerModel

KIND = "two_tower"


def retrieval_files(model: TwoTowerModel, preset: str) -> dict[str, bytes]:
    """The files that describe `model` completely (CPU tensors, so any device can load them)."""
    return pack(model, model.spec, {"kind": KIND, "preset": preset, "config": model.cfg.to_dict()})


def retrieval_from_files(files: dict[str, bytes],
                         device: torch.device | str = "cpu") -> tuple[TwoTowerModel, str]:
    """Rebuilds the model written by `retrieval_files`; returns it (eval mode) with its preset name."""
    state, spec, config = unpack(files, "retrieval model")
    if config.get("kind") != KIND:
        raise ValueError(f"not a retrieval model artefact (kind {config.get('kind')!r})")
    model = TwoTowerModel(spec, RetrievalConfig.from_dict(config["config"]))
    model.load_state_dict(state)
    model.eval()
    return model.to(device), config["preset"]
