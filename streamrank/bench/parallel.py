"""Runs a benchmark's independent model fits in parallel processes, one torch thread each.

A small CPU machine trains several small models faster as separate processes than as one process with
several torch threads (the models are too small to keep threads busy). Workers are forked, so they inherit
whatever the parent built before the call (the data protocol, the feature spec) copy-on-write instead of
rebuilding it. CUDA cannot be used from forked children, so on a GPU the jobs run one after another in
this process.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

J = TypeVar("J")


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def effective_workers(workers: int, device: str | None) -> int:
    """How many processes to use: 1 when the fits would run on CUDA (no CUDA in forked children)."""
    on_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    return 1 if on_cuda else max(1, workers)


def run_jobs(jobs: Sequence[J], run: Callable[[J], Any], workers: int, threads_per_worker: int = 1,
             device: str | None = None, desc: str = "fits", progress: bool = True,
             label: Callable[[J], str] = str, on_result: Callable[[J, Any], None] | None = None) -> list[Any]:
    """`run(job)` for every job, in parallel processes when `workers` > 1; results in the jobs' order.

    Order the jobs longest first: the pool then does not end waiting on one slow fit. `on_result(job,
    result)` is called in this process as each fit finishes (a resumable benchmark saves it there).
    """
    n = effective_workers(workers, device)
    results: list[Any] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    if n == 1:
        for k, job in enumerate(jobs):
            bar.set_postfix(job=label(job))
            results[k] = run(job)
            if on_result is not None:
                on_result(job, results[k])
            bar.update()
    else:
        ctx = mp.get_context("fork")
        with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(threads_per_worker,)) as pool:
            futures = {pool.submit(run, job): k for k, job in enumerate(jobs)}
            for fut in as_completed(futures):
                k = futures[fut]
                results[k] = fut.result()
                if on_result is not None:
                    on_result(jobs[k], results[k])
                bar.set_postfix(done=label(jobs[k]))
                bar.update()
    bar.close()
    return results
