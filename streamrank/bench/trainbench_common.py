"""Shared pieces of the training benchmarks (see streamrank.bench.train)."""

from __future__ import annotations

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


def finish_plot(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    """Labels, grid and legend on `ax`, then `fig` saved to `path` and closed (the benchmarks' line plots)."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
