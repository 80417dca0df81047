"""The quick retrieval benchmark (CI): on ML-100K the base two-tower model beats popularity on HIT@50."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrank.bench import retrieval as bench
from streamrank.data.movielens import MovieLensError, dataset_files


def test_quick_ml100k_run_beats_popularity(tmp_path: Path) -> None:
    try:
        dataset_files("ml-100k")
    except MovieLensError as exc:
        pytest.skip(str(exc))
    assert bench.main(["--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "retrieval-ml-100k-quick.json").read_text())
    base = result["runs"]["base"]["seeds"][0]
    pop = result["runs"]["popularity"]["seeds"][0]
    assert base["hit@50"] > pop["hit@50"], (base, pop)
    assert 0 < base["coverage@500"] <= 1
    page = (tmp_path / "retrieval-ml-100k-quick.md").read_text()
    assert "HIT@50" in page and "Base (ICAN-like)" in page
    fit = result["runs"]["base"]["fits"][0]  # how the fit ended (issue 18's contract)
    assert fit["epochs_run"] == 1 and fit["best_epoch"] == 1 and fit["converged"] is False
    assert len(fit["valid_curve"]) == 1 and "not converged" in page
    # a rerun with the same settings reads the stored fit back instead of training again
    (part,) = (tmp_path / "parts" / "retrieval-ml-100k-quick").glob("base.seed0.c*.json")
    stamp = part.stat().st_mtime_ns
    assert bench.main(["--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "retrieval-ml-100k-quick.json").read_text())
    assert part.stat().st_mtime_ns == stamp
    assert again["runs"]["base"] == result["runs"]["base"] and again["pvalues"] == result["pvalues"]


def test_parallel_fits_equal_sequential_fits(tmp_path: Path) -> None:
    """Forked workers give the numbers of one process: each fit seeds itself and sees the same data."""
    try:
        dataset_files("ml-100k")
    except MovieLensError as exc:
        pytest.skip(str(exc))
    common = ["--quick", "--no-progress", "--seeds", "2", "--steps-per-epoch", "40"]
    assert bench.main([*common, "--out", str(tmp_path / "one")]) == 0
    assert bench.main([*common, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    one, two = (json.loads((tmp_path / d / "retrieval-ml-100k-quick.json").read_text()) for d in ("one", "two"))
    assert two["machine"]["workers"] == 2
    assert [s["hit@50"] for s in one["runs"]["base"]["seeds"]] == [s["hit@50"] for s in two["runs"]["base"]["seeds"]]


def test_a_retrieval_fit_resumes_and_a_larger_cap_continues_it(tmp_path: Path) -> None:
    """fit_retrieval keeps epoch checkpoints: raising --epochs continues the stored capped fit from its
    checkpoint and ends with the numbers of a run made with that cap at once."""
    try:
        dataset_files("ml-100k")
    except MovieLensError as exc:
        pytest.skip(str(exc))
    common = ["--quick", "--no-progress", "--steps-per-epoch", "30", "--patience", "5"]
    assert bench.main([*common, "--epochs", "1", "--out", str(tmp_path / "grown")]) == 0
    assert list((tmp_path / "grown" / "parts" / "retrieval-ml-100k-quick").glob("base.seed0.c*.ckpt"))
    assert bench.main([*common, "--epochs", "2", "--out", str(tmp_path / "grown")]) == 0
    assert bench.main([*common, "--epochs", "2", "--out", str(tmp_path / "direct")]) == 0
    grown, direct = (json.loads((tmp_path / d / "retrieval-ml-100k-quick.json").read_text())
                     for d in ("grown", "direct"))
    g, d = grown["runs"]["base"], direct["runs"]["base"]
    assert g["fits"][0]["epochs_run"] == 2 and g["fits"][0]["valid_curve"] == d["fits"][0]["valid_curve"]
    assert g["seeds"] == d["seeds"]
