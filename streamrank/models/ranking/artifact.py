"""A ranking model of either family (AW-MoE or multi-scenario) as registry files, and back (layout:
streamrank.models.artifact)."""

from __future__ import annotations

from pathlib import Path

import torch

from streamrank.models.artifact import CONFIG, SPEC, WEIGHTS, pack, read_dir, unpack, write_dir
from streamrank.models.factory import Ranker, model_from_config

__all__ = ["CONFIG", "SPEC", "WEIGHTS", "model_files", "model_from_files", "read_model_dir", "write_model_dir"]


def model_files(model: Ranker, preset: str) -> dict[str, bytes]:
    """The files that describe `model` completely."""
    return pack(model, model.spec, {"preset": preset, "config": model.cfg.to_dict()})


def model_from_files(files: dict[str, bytes], device: torch.device | str = "cpu") -> tuple[Ranker, str]:
    """Rebuilds the model written by `model_files`; returns it (eval mode) with its preset name."""
    state, spec, config = unpack(files, "ranking model")
    model = model_from_config(spec, config["config"])
    model.load_state_dict(state)
    model.eval()
    return model.to(device), config["preset"]


def write_model_dir(model: Ranker, preset: str, path: str | Path) -> Path:
    """Writes the artefact files into a directory (an offline model to warm-start the online trainer)."""
    return write_dir(model_files(model, preset), path)


def read_model_dir(path: str | Path) -> dict[str, bytes]:
    """The artefact files of a directory written by write_model_dir (or a registry version directory)."""
    return read_dir(path)
