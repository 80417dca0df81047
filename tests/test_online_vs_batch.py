"""`streamrank bench online-vs-batch --quick` end to end (broker, worker, trainer, scheduled retrains) on a
small ML-100K prefix: a smoke test of the mechanics and the JSON contract, not of which model wins."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from streamrank.bench.online_slices import slice_bounds
from streamrank.bench.online_vs_batch import main

WEEK = 7 * 24 * 3600 * 1000


def test_slices_are_weeks_merged_until_big_enough() -> None:
    dense = np.arange(0, 4 * WEEK, WEEK // 100)  # 100 samples a week for 4 weeks
    sparse = np.arange(4 * WEEK, 12 * WEEK, WEEK // 5)  # then 5 a week for 8 weeks
    stamps = np.concatenate([dense, sparse])
    bounds = slice_bounds(stamps, min_share=0.1)
    second = stamps[stamps >= np.median(stamps)]
    assert bounds[0][0] == int(np.median(stamps)) and bounds[-1][1] == int(stamps.max()) + 1
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds)), "consecutive"
    counts = [int(((second >= lo) & (second < hi)).sum()) for lo, hi in bounds]
    assert sum(counts) == len(second)
    assert min(counts) >= 0.1 * len(second), counts
    assert any(hi - lo > WEEK for lo, hi in bounds), "the sparse tail is merged into longer slices"


@pytest.mark.slow
def test_the_quick_mode_runs_and_keeps_the_json_contract(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["--quick", "--ratings", "12000", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    result = json.loads((out / "online-vs-batch-ml-100k-quick.json").read_text())
    for key in ("online_auc", "retrained_auc", "static_auc", "p_online_vs_retrained", "offline_best_auc",
                "online_last10_auc"):
        assert isinstance(result[key], float) and (math.isfinite(result[key]) or key.startswith("p_")), key
    assert "decomposition" in result
    slices = result["slices"]
    assert 1 <= len(slices) <= 3
    first = slices[0]
    assert first["retrained"] == first["static"], "the first retrain is the static model"
    assert result["samples"] > 10_000 and sum(s["online"]["samples"] for s in slices) <= result["second_half_samples"]
    assert (out / "online-vs-batch-ml-100k-quick.png").stat().st_size > 0
    assert "online vs retrained auc" in (out / "online-vs-batch-ml-100k-quick.md").read_text()
