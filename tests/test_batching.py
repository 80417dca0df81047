"""Cross-request batching: the flush rules on a recording ranker, batched scores (and retrievals) equal to
unbatched ones on real models, and a real scorer that batches concurrent calls and answers each as it would
have alone."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from streamrank.config import Settings
from streamrank.features.raw import Behaviors, Candidate, ItemAttrs, RequestContext
from streamrank.registry.store import Registry
from streamrank.serve.batching import Batcher
from streamrank.serve.models import load_ranker, load_retriever
from streamrank.v1 import ranking_pb2
from tests.servetools import (
    catalog,
    produce_state,
    publish,
    publish_retrieval,
    rank_request,
    running_scorer,
    trained_files,
    user_features,
)


class Recorder:
    """A ranker stand-in: scores are the candidates' positions, every forward is recorded."""

    def __init__(self, fail: bool = False) -> None:
        self.forwards: list[int] = []
        self.fail = fail

    def score_many(self, requests: list) -> list[np.ndarray]:
        if self.fail:
            raise RuntimeError("forward failed")
        self.forwards.append(len(requests))
        return [np.arange(len(c), dtype=np.float32) for _, c in requests]


def _req(n: int) -> tuple[RequestContext, list[Candidate]]:
    return RequestContext("u"), [Candidate(f"i{k}") for k in range(n)]


def _run(batcher: Batcher, ranker: Recorder, sizes: list[int], preparing: int) -> list[np.ndarray]:
    async def main() -> list[np.ndarray]:
        batcher.preparing = preparing
        calls = (batcher.run(ranker, ranker.score_many, _req(n), n) for n in sizes)
        return await asyncio.wait_for(asyncio.gather(*calls), 5)

    return asyncio.run(main())


def test_flush_rules() -> None:
    with ThreadPoolExecutor(1) as pool:
        lone = Recorder()
        out = _run(Batcher(pool, wait_s=10.0, max_size=100), lone, [3], preparing=0)
        assert lone.forwards == [1] and out[0].tolist() == [0, 1, 2]  # nobody could join: no wait
        waited = Recorder()
        out = _run(Batcher(pool, wait_s=0.05, max_size=100), waited, [2, 3], preparing=1)
        assert waited.forwards == [2] and [o.tolist() for o in out] == [[0, 1], [0, 1, 2]]  # one forward, split
        full = Recorder()
        _run(Batcher(pool, wait_s=10.0, max_size=4), full, [2, 2], preparing=5)  # would wait 10 s
        assert full.forwards == [2]  # the candidate budget flushed it
        with pytest.raises(RuntimeError, match="forward failed"):
            _run(Batcher(pool, wait_s=0.01, max_size=100), Recorder(fail=True), [1, 1], preparing=1)


def test_a_call_alone_is_answered_on_its_own_thread_and_counted_as_a_batch_of_one() -> None:
    seen: list[int] = []
    batcher: Batcher = Batcher(None, wait_s=10.0, max_size=100, observe=seen.append)
    batcher.preparing = 1  # the caller itself
    assert batcher.solo() and (batcher.batches, batcher.batched_calls, seen) == (1, 1, [1])
    batcher.preparing = 2  # another call may still join
    assert not batcher.solo()

    async def queued_then_solo() -> bool:
        batcher.preparing = 2  # a queued call waits for the one still preparing
        waiting = asyncio.ensure_future(batcher.run("v", Recorder().score_many, _req(2), 2))
        await asyncio.sleep(0)
        batcher.preparing = 1
        alone = batcher.solo()  # one call is queued: join it instead
        waiting.cancel()
        return alone

    assert not asyncio.run(queued_then_solo())
    assert (batcher.batches, batcher.batched_calls) == (1, 1)


def test_batched_scores_equal_unbatched_ones(settings: Settings) -> None:
    publish(settings, "din", trained_files(settings, "din", n=1024))
    ranker = load_ranker(Registry(settings.registry_root(), "din"), 1)
    rng = np.random.default_rng(0)
    requests = []
    for r in range(6):  # histories of different lengths (padded together in the batch), 1-40 candidates
        hist = [f"i{k}" for k in rng.integers(0, 40, size=int(rng.integers(0, 12)))]
        ctx = RequestContext(f"u{r}", Behaviors(hist, [2] * len(hist), [0] * len(hist), ["c0"] * len(hist)),
                             scenario="web" if r % 2 else "")
        cands = [Candidate(f"i{k}", ItemAttrs(category=f"c{k % 8}")) for k in rng.integers(0, 50, size=1 + 7 * r)]
        requests.append((ctx, cands))
    batched = ranker.score_many(requests)
    for (ctx, cands), got in zip(requests, batched, strict=True):
        np.testing.assert_allclose(got, ranker.score(ctx, cands), rtol=0, atol=1e-6)
    publish_retrieval(settings)
    retriever = load_retriever(Registry(settings.registry_root(), "retrieval"), 1)  # an exact (flat) index
    queries = [(ctx, k, seen) for (ctx, _), k, seen in zip(requests, [1, 5, 40, 3, 10, 7], [True, False] * 3,
                                                           strict=True)]
    for query, (scores, ids) in zip(queries, retriever.retrieve_many(queries), strict=True):
        alone_scores, alone_ids = retriever.retrieve_many([query])[0]
        assert ids == alone_ids and len(ids) == min(query[1], len(retriever.index))
        np.testing.assert_allclose(scores, alone_scores, rtol=0, atol=1e-6)
        if query[2]:
            assert not set(ids) & set(query[0].behaviors.item_ids)


def test_a_scorer_batches_concurrent_calls_and_answers_each_as_alone(settings: Settings) -> None:
    s = settings.with_overrides(serve_port=0, serve_metrics_port=0, serve_models="din", serve_retrieval="retrieval",
                                serve_batch_wait_ms=500.0)
    publish(s, "din", trained_files(s, "din", n=1024))
    publish_retrieval(s)
    produce_state(s, [user_features(f"u{k}", [f"i{k}", f"i{k + 8}"], ["c0", "c0"]) for k in range(8)], catalog())
    requests = [rank_request(f"u{k}", [f"i{j}" for j in range(k, k + 5 + 3 * k)], scenario="web")
                for k in range(8)]
    finds = [ranking_pb2.RetrieveRequest(user_id=f"u{k}", k=3 + k, exclude_seen=k % 2 == 0) for k in range(8)]
    with running_scorer(s.with_overrides(serve_batch_wait_ms=0.0)) as alone:
        assert alone.scorer.servicer is not None and alone.scorer.servicer.rank_batcher is None
        expected = [alone.stub().Rank(r, timeout=10) for r in requests]
        expected_finds = [alone.stub().Retrieve(r, timeout=10) for r in finds]
    with running_scorer(s) as st:
        servicer, executor = st.scorer.servicer, st.scorer.executor
        assert servicer is not None and servicer.rank_batcher is not None and executor is not None
        gate = threading.Event()
        for _ in range(2):
            executor.submit(gate.wait, 30)  # both forward threads busy: the calls pile up, then prepare together
        stub = st.stub()
        futures = [stub.Rank.future(r, timeout=30) for r in requests]
        find_futures = [stub.Retrieve.future(r, timeout=30) for r in finds]
        gate.set()
        answers = [f.result() for f in futures]
        found = [f.result() for f in find_futures]
        assert servicer.rank_batcher.batched_calls == 8 and servicer.rank_batcher.batches < 8
        assert servicer.retrieve_batcher is not None and servicer.retrieve_batcher.batched_calls == 8
        assert servicer.retrieve_batcher.batches < 8
        text = st.scorer.metrics.text()
    assert 'streamrank_batch_calls_count{method="Rank"}' in text
    for got, want in zip(answers, expected, strict=True):
        assert [i.item_id for i in got.items] == [i.item_id for i in want.items]
        np.testing.assert_allclose([i.score for i in got.items], [i.score for i in want.items], rtol=0, atol=1e-6)
        assert got.model_version == want.model_version == 1
    for got, want in zip(found, expected_finds, strict=True):
        assert [i.item_id for i in got.items] == [i.item_id for i in want.items] and got.items
        np.testing.assert_allclose([i.score for i in got.items], [i.score for i in want.items], rtol=0, atol=1e-6)
        assert got.index_version == want.index_version == 1


def test_a_lone_call_with_batching_on_is_answered_without_a_second_hop(settings: Settings) -> None:
    s = settings.with_overrides(serve_port=0, serve_metrics_port=0, serve_models="din", serve_retrieval="retrieval",
                                serve_batch_wait_ms=500.0)
    publish(s, "din", trained_files(s, "din", n=1024))
    publish_retrieval(s)
    produce_state(s, [user_features("u1", ["i1", "i9"], ["c0", "c0"])], catalog())
    with running_scorer(s) as st:
        servicer = st.scorer.servicer
        assert servicer is not None and servicer.rank_batcher is not None and servicer.retrieve_batcher is not None
        executor = st.scorer.executor
        assert executor is not None
        hops: list[object] = []
        submit = executor.submit

        def counted(fn: object, *args: object, **kwargs: object) -> object:
            hops.append(fn)
            return submit(fn, *args, **kwargs)  # type: ignore[arg-type]

        executor.submit = counted  # type: ignore[method-assign]
        stub = st.stub()
        for _ in range(3):  # one at a time: each finds nobody else, so none waits the 500 ms
            got = stub.Rank(rank_request("u1", ["i1", "i2", "i3"], scenario="web"), timeout=0.4)
            assert len(got.items) == 3
            assert stub.Retrieve(ranking_pb2.RetrieveRequest(user_id="u1", k=3), timeout=0.4).items
        assert len(hops) == 6  # one trip to the forward threads per call: prepared and answered there
        assert servicer.rank_batcher.batches == servicer.rank_batcher.batched_calls == 3
        assert servicer.retrieve_batcher.batches == servicer.retrieve_batcher.batched_calls == 3
