"""The benchmarks' process pool (results in the jobs' order, equal to a sequential run) and their shared options."""

from __future__ import annotations

import os

import pytest

from streamrank.bench.parallel import effective_workers, run_jobs


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_results_keep_the_jobs_order_across_processes() -> None:
    jobs = list(range(12, 0, -1))
    parallel = run_jobs(jobs, _square_and_pid, workers=2, device="cpu", progress=False)
    sequential = run_jobs(jobs, _square_and_pid, workers=1, device="cpu", progress=False)
    assert [r[0] for r in parallel] == [r[0] for r in sequential] == [x * x for x in jobs]
    assert all(pid != os.getpid() for _, pid in parallel)  # the fits really ran in the workers
    assert all(pid == os.getpid() for _, pid in sequential)


def test_cuda_fits_run_in_this_process() -> None:
    assert effective_workers(4, "cuda") == 1  # forked children cannot use CUDA
    assert effective_workers(4, "cpu") == 4
    assert effective_workers(0, "cpu") == 1


def _fail(x: int) -> int:
    raise ValueError(f"job {x} failed")


def test_a_failing_fit_fails_the_run() -> None:
    with pytest.raises(ValueError, match="job 1 failed"):
        run_jobs([1], _fail, workers=2, device="cpu", progress=False)


def test_set_options_parse_json_values_and_refuse_bad_pairs() -> None:
    from streamrank.bench.movielens_cli import parse_overrides, split_models

    assert parse_overrides(["cl_weight=0.01", "gate_norm=none", "hidden=[8, 4]"]) == {
        "cl_weight": 0.01, "gate_norm": "none", "hidden": [8, 4]}
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        parse_overrides(["cl_weight"])
    assert split_models("a,,b", ("a", "b", "c")) == ["a", "b"]
    with pytest.raises(SystemExit, match=r"unknown models \['z'\]; presets: a, b"):
        split_models("a,z", ("a", "b"))
