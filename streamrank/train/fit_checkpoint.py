"""Epoch checkpoints of an offline fit, so a fit killed mid-way resumes at its last finished epoch.

The converged benchmarks run fits of one to three hours each on a small CPU machine, longer than a working
session. `fit` (with `TrainConfig.checkpoint` set) writes one file after every epoch: the weights, both
optimizers' state, the early-stopping state (best value, best epoch, patience count, best weights), the
random generators (numpy's epoch order, torch's CL masks and negatives) and the history so far. A fit
started again with the same file continues from the next epoch and ends with what an uninterrupted fit
would have given (tested). The file is written atomically and read with `weights_only=True`: tensors,
numbers and strings only, nothing that can execute code.

A fit that its epoch cap ended (early stopping had not) keeps its file: a later run of the same fit with a
larger cap continues it from there instead of starting over (`bench.parts` reuses the fits early stopping
ended under any cap they stayed within). Used by the ranking/scenario `fit` and by `fit_retrieval`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


class _Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> Any: ...


class _Stopper(Protocol):
    best_value: float
    best_epoch: int
    bad: int
    patience: int
    best_state: dict | None


@dataclass
class FitLoop:
    """The moving parts of one fit that an epoch checkpoint saves and restores."""

    model: torch.nn.Module
    optimizer: _Stateful
    stopper: _Stopper
    rng: np.random.Generator
    gen: torch.Generator


def save_fit(path: Path, epoch: int, loop: FitLoop, history: list[dict], seconds: float) -> None:
    """Saves what `resume_fit` needs to continue `loop` after `epoch` (counted from 0)."""
    st = loop.stopper
    save_epoch_state(Path(path), EpochState(
        epoch, loop.model.state_dict(), loop.optimizer.state_dict(), st.best_value, st.best_epoch, st.bad,
        st.best_state, numpy_state(loop.rng), torch.get_rng_state(), loop.gen.get_state(), history, seconds))


def resume_fit(path: Path | None, max_epochs: int, device: torch.device, loop: FitLoop
               ) -> tuple[int, list[dict], float]:
    """Restores `loop` from the checkpoint at `path` if there is one; returns (the epoch to start at, the
    history so far, the seconds spent so far). A checkpoint past `max_epochs` (a run with a smaller cap) is
    not used: that fit starts over."""
    state = load_epoch_state(Path(path), device) if path else None
    if state is None or state.epoch + 1 > max_epochs:
        return 0, [], 0.0
    loop.model.load_state_dict(state.model)
    loop.optimizer.load_state_dict(state.optimizer)
    st = loop.stopper
    st.best_value, st.best_epoch, st.bad = state.best_value, state.best_epoch, state.bad
    st.best_state = state.best_state
    restore_numpy(loop.rng, state.numpy_rng)
    torch.set_rng_state(state.torch_rng)
    loop.gen.set_state(state.generator)
    # killed between its last checkpoint and its return: early stopping had already ended the fit
    first = max_epochs if st.bad >= st.patience else state.epoch + 1
    return first, state.history, state.seconds


def finish_fit(path: Path | None, stopped_early: bool) -> None:
    """After a fit: its checkpoint goes when early stopping ended it, and stays when the cap did (a run with
    a larger cap continues from it)."""
    if path and stopped_early:
        Path(path).unlink(missing_ok=True)


def numpy_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy generator's state as JSON-ready data."""
    return rng.bit_generator.state


def restore_numpy(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Puts a state from `numpy_state` back into `rng`."""
    rng.bit_generator.state = state
