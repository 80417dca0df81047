"""The online trainer's private checkpoint: written atomically, so a kill -9 leaves the previous one intact."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes state to a temporary file, fsyncs it and renames it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointError(RuntimeError):
    """A checkpoint file that is not plain data (tensors, numbers, strings, lists, dicts, numeric arrays)."""


def _numpy_globals() -> list[Any]:
    """What a plain numeric numpy array needs to be rebuilt (the prequential window's scores and labels):
    the array constructor and the numeric dtypes, nothing that can call arbitrary code."""
    import numpy as np

    dtypes = [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                                          "uint8", "bool")]
    return [np._core.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The last checkpoint, or None when there is none yet.

    Loaded with torch's weights-only unpickler (tensors and plain data; numeric numpy arrays allowed), so a
    planted or tampered file cannot run code: anything else raises CheckpointError, naming the file.
    """
    if not path.exists():
        return None
    try:
        with open(path, "rb") as fh, torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"it refers to {found.group(1)}" if found else "it holds objects other than tensors and plain data"
        raise CheckpointError(f"{path} is not a plain-data checkpoint and was not loaded ({what}); "
                              "if you did not write it, someone may have planted it: delete it to start from "
                              "the stream's beginning or from --warm-start") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint (a {type(state).__name__})")
    return state
