"""Shared pieces of the training benchmarks (see streamrank.bench.train)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
MODELS = ("dnn", "din", "category_moe", "aw_moe", "aw_moe_cl")
PARTS = ("tensorize", "score_forward", "train_forward", "rest")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform()}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (NaN for no values)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` settings for the trainer (values parsed as JSON where they parse, else kept as text)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set wants key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
