"""Epoch checkpoints of an offline fit, so a fit killed mid-way resumes at its last finished epoch.

The converged benchmarks run fits of one to three hours each on a small CPU machine, longer than a working
session. `fit` (with `TrainConfig.checkpoint` set) writes one file after every epoch: the weights, both
optimizers' state, the early-stopping state (best value, best epoch, patience count, best weights), the
random generators (numpy's epoch order, torch's CL masks and negatives) and the history so far. A fit
started again with the same file continues from the next epoch and ends with what an uninterrupted fit
would have given (tested). The file is written atomically and read with `weights_only=True`: tensors,
numbers and strings only, nothing that can execute code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class EpochState:
    """What a fit needs to continue after epoch `epoch` (counted from 0)."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best_value: float
    best_epoch: int
    bad: int
    best_state: dict[str, torch.Tensor] | None
    numpy_rng: dict[str, Any]
    torch_rng: torch.Tensor
    generator: torch.Tensor
    history: list[dict]
    seconds: float


def save_epoch_state(path: Path, state: EpochState) -> None:
    """Writes `state` to `path` (a temporary file first, then a rename: a kill never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**state.__dict__, "numpy_rng": json.dumps(state.numpy_rng),
           "history": json.dumps(state.history, default=float)}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(doc, tmp)
    tmp.replace(path)


def load_epoch_state(path: Path, device: torch.device) -> EpochState | None:
    """The state saved at `path`, tensors on `device`; None when there is no file."""
    path = Path(path)
    if not path.exists():
        return None
    doc = torch.load(path, map_location=device, weights_only=True)
    doc["numpy_rng"] = json.loads(doc["numpy_rng"])
    doc["history"] = json.loads(doc["history"])
    doc["torch_rng"], doc["generator"] = doc["torch_rng"].cpu(), doc["generator"].cpu()
    return EpochState(**doc)


def numpy_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy generator's state as JSON-ready data."""
    return rng.bit_generator.state


def restore_numpy(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Puts a state from `numpy_state` back into `rng`."""
    rng.bit_generator.state = state
