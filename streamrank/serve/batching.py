"""Cross-request batching: calls that arrive close together share one forward pass (and one index search).

A call whose inputs are ready joins the queue of the model version that answers it (Rank: the ranking
version, scored by `LoadedRanker.score_many`, one tensorisation and one forward with one user row per call,
so each call's user side and gate are still computed once and shared by its own candidates only; Retrieve:
the retrieval version, `LoadedRetriever.retrieve_many`, one user-tower pass and one FAISS search). A queue is
run as one batch when

- no other call of its kind is still preparing its inputs (nobody could join: waiting would only add
  latency, so a lone caller is never delayed; one that finds nobody preparing or queued when its inputs
  are ready is answered on its own thread at once, `solo`), or
- the queue holds `max_size` units of work (candidates for Rank, results for Retrieve), or
- `wait_s` (serve_batch_wait_ms, about 1 ms) has passed since the queue's first call arrived.

Results equal unbatched ones up to float rounding (padding never changes a score; tested). Used from the
asyncio loop (the batch runs on the scorer's thread pool), except `solo`, a read from a forward thread;
no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - one call's input
R = TypeVar("R")  # one call's result


@dataclass
class _Queue(Generic[I, R]):
    run_many: Callable[[Sequence[I]], list[R]]
    inputs: list[I] = field(default_factory=list)
    futures: list[asyncio.Future[R]] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


class Batcher(Generic[I, R]):
    """Queues of ready calls per answering version, each run as one batch (see the module docstring)."""

    def __init__(self, executor: Executor | None, wait_s: float, max_size: int,
                 observe: Callable[[int], None] | None = None) -> None:
        self.executor = executor
        self.wait_s = wait_s
        self.max_size = max_size
        self.observe = observe  # called with the number of calls of each batch
        self.preparing = 0  # calls admitted and still preparing their inputs (may join a queue soon)
        self.batches = 0
        self.batched_calls = 0
        self._queues: dict[int, _Queue[I, R]] = {}

    def solo(self) -> bool:
        """True, counted as a batch of one, when the calling thread's call is the only one that could be in a
        batch: no other call is preparing (the caller itself still counts) and none is queued. Such a call is
        answered on the thread that prepared it, as without batching: waiting could only delay it, and a
        second hop to the forward threads costs a lone caller more than batching saves (bench serve: p50
        9.6 ms without batching, 12.5 ms with two hops). Read from a forward thread: a call that starts
        preparing just after this answer simply makes its own batch; answers are the same either way."""
        if self.preparing > 1 or self._queues:
            return False
        self.batches += 1
        self.batched_calls += 1
        if self.observe is not None:
            self.observe(1)
        return True

    async def run(self, owner: Any, run_many: Callable[[Sequence[I]], list[R]], item: I, size: int) -> R:
        """`item`'s result from `run_many`, called once on the batch of calls that `owner` (the version that
        answers them) gathered meanwhile; `size` is the call's share of the batch budget."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(id(owner), _Queue(run_many))
        future: asyncio.Future[R] = loop.create_future()
        queue.inputs.append(item)
        queue.futures.append(future)
        queue.size += size
        if self.preparing == 0 or queue.size >= self.max_size:
            self._flush(id(owner))
        elif queue.timer is None:
            queue.timer = loop.call_later(self.wait_s, self._flush, id(owner))
        return await future

    def _flush(self, key: int) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        self.batches += 1
        self.batched_calls += len(queue.inputs)
        if self.observe is not None:
            self.observe(len(queue.inputs))
        done = asyncio.get_running_loop().run_in_executor(self.executor, queue.run_many, queue.inputs)
        done.add_done_callback(lambda f: _deliver(f, queue.futures))


def _deliver(done: asyncio.Future[list[R]], futures: list[asyncio.Future[R]]) -> None:
    """Hands each waiting call its result (or the batch's error); calls that gave up meanwhile are skipped."""
    error = done.exception() if not done.cancelled() else asyncio.CancelledError()
    results: list[Any] = done.result() if error is None else [None] * len(futures)
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
