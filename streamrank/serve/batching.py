"""Cross-request batching of Rank forwards: calls that arrive close together share one forward pass.

A Rank call whose inputs are ready joins the queue of its model version. The queue is scored as one batch
(`LoadedRanker.score_many`: one tensorisation, one forward with one user row per request, so each request's
user side and gate are still computed once and shared by its own candidates only) when

- no other Rank call is still preparing its inputs (nobody could join: waiting would only add latency, so a
  lone caller is never delayed), or
- the queue holds `max_candidates` candidates (the forward's size budget), or
- `wait_s` (serve_batch_wait_ms, about 1 ms) has passed since the queue's first call arrived.

Scores equal unbatched scoring up to float rounding (padding never changes a score; tested). Used from the
asyncio loop only (the forward runs on the scorer's thread pool); no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from streamrank.features.raw import Candidate, RequestContext
from streamrank.serve.models import LoadedRanker


@dataclass
class _Queue:
    ranker: LoadedRanker
    requests: list[tuple[RequestContext, list[Candidate]]] = field(default_factory=list)
    futures: list[asyncio.Future[np.ndarray]] = field(default_factory=list)
    candidates: int = 0
    timer: asyncio.TimerHandle | None = None


class RankBatcher:
    """Queues of ready Rank calls per model version, flushed as one forward each (module docstring)."""

    def __init__(self, executor: Executor | None, wait_s: float, max_candidates: int,
                 observe: Callable[[int], None] | None = None) -> None:
        self.executor = executor
        self.observe = observe  # called with the number of calls of each forward
        self.wait_s = wait_s
        self.max_candidates = max_candidates
        self.preparing = 0  # Rank calls admitted and still preparing their inputs (may join a queue soon)
        self.batches = 0
        self.batched_requests = 0
        self._queues: dict[int, _Queue] = {}

    async def score(self, ranker: LoadedRanker, context: RequestContext, candidates: list[Candidate]) -> np.ndarray:
        """The candidates' scores, from a forward shared with the calls that arrive close to this one."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(id(ranker), _Queue(ranker))
        future: asyncio.Future[np.ndarray] = loop.create_future()
        queue.requests.append((context, candidates))
        queue.futures.append(future)
        queue.candidates += len(candidates)
        if self.preparing == 0 or queue.candidates >= self.max_candidates:
            self._flush(id(ranker))
        elif queue.timer is None:
            queue.timer = loop.call_later(self.wait_s, self._flush, id(ranker))
        return await future

    def _flush(self, key: int) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        self.batches += 1
        self.batched_requests += len(queue.requests)
        if self.observe is not None:
            self.observe(len(queue.requests))
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self.executor, queue.ranker.score_many, queue.requests)
        done.add_done_callback(lambda f: _deliver(f, queue.futures))


def _deliver(done: asyncio.Future[list[np.ndarray]], futures: list[asyncio.Future[np.ndarray]]) -> None:
    """Hands each waiting call its scores (or the batch's error); calls that gave up meanwhile are skipped."""
    error = done.exception() if not done.cancelled() else asyncio.CancelledError()
    results = done.result() if error is None else [None] * len(futures)
    for future, scores in zip(futures, results, strict=True):
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(scores)
