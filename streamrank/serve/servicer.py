"""The RankingService implementation: Rank and Retrieve over the live model versions and the feature replica.

The asyncio loop only validates, picks the live version (one reference per call) and awaits; the
blocking work — replica reads, tensorisation, the forward pass, the index search — runs on a small thread
pool, so a slow forward never stalls health checks or other calls. Every outcome is counted by status code;
only OK and INVALID_ARGUMENT come from the caller's input, anything unexpected is INTERNAL and logged, and
nothing reaches the server's loop as an exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import numpy as np

from streamrank.config import Settings
from streamrank.serve.metrics import ScorerMetrics
from streamrank.serve.models import LoadedRanker, LoadedRetriever, ModelWatcher
from streamrank.serve.replica import FeatureReplica
from streamrank.serve.requests import InvalidRequest, Limits, rank_inputs, user_side, validate_rank, validate_retrieve
from streamrank.v1 import ranking_pb2, ranking_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")


class Unavailable(RuntimeError):
    """The scorer cannot answer yet (no version of the model loaded)."""


def served_models(settings: Settings) -> list[str]:
    """Ranking model names from settings.serve_models, in order (the first is Rank's default)."""
    return [m.strip() for m in settings.serve_models.split(",") if m.strip()]


def ranked_response(request_id: str, ranker: LoadedRanker, item_ids: list[str],
                    scores: np.ndarray) -> ranking_pb2.RankResponse:
    """Candidates sorted by descending score (ties keep request order), with the version that scored them."""
    order = np.argsort(-scores, kind="stable")
    resp = ranking_pb2.RankResponse(request_id=request_id, model=ranker.name, model_version=ranker.version)
    items = resp.items
    for i in order.tolist():
        items.add(item_id=item_ids[i], score=float(scores[i]))
    return resp


class RankingServicer(ranking_pb2_grpc.RankingServiceServicer):
    """See the module docstring."""

    def __init__(self, settings: Settings, replica: FeatureReplica, watcher: ModelWatcher,
                 metrics: ScorerMetrics, executor: ThreadPoolExecutor | None) -> None:
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self.replica = replica
        self.watcher = watcher
        self.metrics = metrics
        self.executor = executor

    # ------------------------------------------------------------------------------------------ RPCs
    async def Rank(self, request: ranking_pb2.RankRequest, context: grpc.aio.ServicerContext) -> Any:
        """Scores every candidate for the user with one model version; best first."""
        def work() -> ranking_pb2.RankResponse:
            validate_rank(request, self.limits)
            ranker = self._ranker(request.model)
            self.metrics.candidates.observe(len(request.candidates))
            if not request.candidates:
                return ranking_pb2.RankResponse(request_id=request.request_id, model=ranker.name,
                                                model_version=ranker.version)
            ctx, cands = rank_inputs(request, self.replica)
            scores = ranker.score(ctx, cands)
            return ranked_response(request.request_id, ranker, [c.item_id for c in cands], scores)

        return await self._call("Rank", context, work)

    async def Retrieve(self, request: ranking_pb2.RetrieveRequest, context: grpc.aio.ServicerContext) -> Any:
        """The k items of the catalog nearest to the user's vector, from one model + index version."""
        def work() -> ranking_pb2.RetrieveResponse:
            validate_retrieve(request, self.limits)
            retriever = self._retriever()
            ctx, _view = user_side(request.user_id, request.query, request.scenario, self.replica)
            vec = retriever.user_vector(ctx)
            exclude = [set(ctx.behaviors.item_ids)] if request.exclude_seen else None
            scores, ids = retriever.index.search(vec, request.k, exclude=exclude)
            resp = ranking_pb2.RetrieveResponse(
                request_id=request.request_id, index=retriever.name, index_version=retriever.version,
                model=retriever.model_name, model_version=retriever.model_version)
            for item_id, score in zip(ids[0], scores[0].tolist(), strict=False):
                resp.items.add(item_id=item_id, score=float(score))
            return resp

        return await self._call("Retrieve", context, work)

    # --------------------------------------------------------------------------------------- helpers
    def _ranker(self, name: str) -> LoadedRanker:
        name = name or (self.watcher.ranker_names or [""])[0]
        if name not in self.watcher.ranker_names:
            raise InvalidRequest(f"unknown model {name!r}; this scorer serves {self.watcher.ranker_names}")
        ranker = self.watcher.rankers.get(name)
        if ranker is None:
            raise Unavailable(f"model {name!r} has no servable version yet")
        return ranker

    def _retriever(self) -> LoadedRetriever:
        retriever = self.watcher.retriever
        if retriever is None:
            what = self.watcher.retriever_name or "(none configured: set serve_retrieval)"
            raise Unavailable(f"no retrieval model + index {what!r} is loaded yet")
        return retriever

    async def _call(self, method: str, context: grpc.aio.ServicerContext, work: Callable[[], T]) -> T:
        start = time.perf_counter()
        code, detail = grpc.StatusCode.OK, ""
        timeout = self.settings.serve_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.0))
        try:
            if self.executor is None:  # serve_workers = 0: on the loop itself (no thread hop, no overlap)
                return work()
            loop = asyncio.get_running_loop()
            return await asyncio.wait_for(loop.run_in_executor(self.executor, work), timeout)
        except InvalidRequest as exc:
            code, detail = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except Unavailable as exc:
            code, detail = grpc.StatusCode.UNAVAILABLE, str(exc)
        except TimeoutError:
            code, detail = grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} took longer than {timeout:.3f}s"
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:  # a bug must cost one call, not the server
            log.exception("%s failed", method)
            code, detail = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
        finally:
            self.metrics.observe(method, code.name, time.perf_counter() - start)
        await context.abort(code, detail)
        raise AssertionError("unreachable: abort raises")
