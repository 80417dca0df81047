"""The RankingService implementation: Rank and Retrieve over the live model versions and the feature replica.

Requests arrive as bytes (`rpc_handlers` registers no deserializer). On the asyncio loop a call is admitted
or refused (RESOURCE_EXHAUSTED) by the calls and request bytes already in flight, before anything is
decoded; the admitted work then runs on a small thread pool: count the limited repeated fields, decode,
validate, read the replica, tensorise, forward, search. With batching on (serve_batch_wait_ms > 0) a Rank
call's forward (a Retrieve call's tower pass and search) is shared with the calls that arrive close to it
(`serve.batching`). So a slow forward never stalls health checks, and a request too large for the limits
is refused for the price of reading its bytes. Every outcome is counted by status code, model and version;
a caller's mistake (INVALID_ARGUMENT, including bytes that are not a message) and a refusal are one log
line; anything unexpected is INTERNAL, logged with its traceback; nothing reaches the server's loop as an
exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import numpy as np

from streamrank.config import Settings
from streamrank.features.raw import Candidate, RequestContext
from streamrank.serve.admission import Admission, CallLabels
from streamrank.serve.batching import Batcher
from streamrank.serve.metrics import ScorerMetrics
from streamrank.serve.models import LoadedRanker, LoadedRetriever, ModelWatcher
from streamrank.serve.replica import FeatureReplica
from streamrank.serve.requests import InvalidRequest, Limits, rank_inputs, user_side, validate_rank, validate_retrieve
from streamrank.serve.wire import check_rank_counts, decode, max_request_bytes
from streamrank.v1 import ranking_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")
_ONE_LINE = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.DEADLINE_EXCEEDED)


class Unavailable(RuntimeError):
    """The scorer cannot answer yet (no version of the model loaded)."""


class NotFound(LookupError):
    """The request names a version or a label the scorer does not have loaded."""


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


def retrieved_response(request_id: str, retriever: LoadedRetriever, scores: list[float],
                       item_ids: list[str]) -> ranking_pb2.RetrieveResponse:
    """The found items, best first, with the model + index version that found them."""
    resp = ranking_pb2.RetrieveResponse(request_id=request_id, index=retriever.name, index_version=retriever.version,
                                        model=retriever.model_name, model_version=retriever.model_version)
    for item_id, score in zip(item_ids, scores, strict=True):
        resp.items.add(item_id=item_id, score=float(score))
    return resp


class RankingServicer:
    """See the module docstring."""

    def __init__(self, settings: Settings, replica: FeatureReplica, watcher: ModelWatcher,
                 metrics: ScorerMetrics, executor: ThreadPoolExecutor | None) -> None:
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self.replica = replica
        self.watcher = watcher
        self.metrics = metrics
        self.executor = executor
        self.admission = Admission(settings.serve_max_inflight, settings.serve_max_inflight_bytes)
        self.max_request_bytes = max_request_bytes(self.limits)
        self.receive_limit = self.receive_limit_for(settings)
        batching = executor is not None and settings.serve_batch_wait_ms > 0
        wait = settings.serve_batch_wait_ms / 1000
        self.rank_batcher: Batcher[Any, Any] | None = (
            Batcher(executor, wait, settings.serve_batch_max_candidates, metrics.batch_calls.labels("Rank").observe)
            if batching else None)
        self.retrieve_batcher: Batcher[Any, Any] | None = (
            Batcher(executor, wait, settings.serve_batch_max_candidates, metrics.batch_calls.labels("Retrieve").observe)
            if batching else None)

    @staticmethod
    def receive_limit_for(settings: Settings) -> int:
        """gRPC's receive limit: twice the largest valid request, so an oversized request is still answered
        by the servicer, and counted; beyond it gRPC refuses the call itself (RESOURCE_EXHAUSTED)."""
        return 2 * max_request_bytes(Limits.from_settings(settings))

    def rpc_handlers(self, service: str) -> grpc.GenericRpcHandler:
        """The service's methods taking raw request bytes (decoded by the servicer, see the module docstring)."""
        return grpc.method_handlers_generic_handler(service, {
            "Rank": grpc.unary_unary_rpc_method_handler(
                self.Rank, response_serializer=ranking_pb2.RankResponse.SerializeToString),
            "Retrieve": grpc.unary_unary_rpc_method_handler(
                self.Retrieve, response_serializer=ranking_pb2.RetrieveResponse.SerializeToString)})

    # ------------------------------------------------------------------------------------------ RPCs
    async def Rank(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        """Scores every candidate for the user with one model version; best first."""
        labels = CallLabels()

        def prepare() -> ranking_pb2.RankResponse | tuple[str, LoadedRanker, RequestContext, list[Candidate]]:
            check_rank_counts(raw, self.limits)
            request = decode(ranking_pb2.RankRequest, raw)
            wanted = self._model_name(request.model)
            if wanted in self.watcher.ranker_names:  # a label per configured model, never per caller's string
                labels.model = wanted
            validate_rank(request, self.limits)
            ranker = self._ranker(request.model, request.version, request.version_label)
            labels.model, labels.version = ranker.name, str(ranker.version)
            self.metrics.candidates.observe(len(request.candidates))
            if not request.candidates:
                return ranking_pb2.RankResponse(request_id=request.request_id, model=ranker.name,
                                                model_version=ranker.version)
            ctx, cands = rank_inputs(request, self.replica)
            if self.rank_batcher is not None and not self.rank_batcher.solo():  # scored with others close by
                return request.request_id, ranker, ctx, cands
            return ranked_response(request.request_id, ranker, [c.item_id for c in cands], ranker.score(ctx, cands))

        async def work() -> ranking_pb2.RankResponse:
            prepared = await self._prepare(self.rank_batcher, prepare)
            if isinstance(prepared, ranking_pb2.RankResponse):
                return prepared
            request_id, ranker, ctx, cands = prepared
            assert self.rank_batcher is not None
            scores = await self.rank_batcher.run(ranker, ranker.score_many, (ctx, cands), len(cands))
            return ranked_response(request_id, ranker, [c.item_id for c in cands], scores)

        return await self._call("Rank", context, raw, labels, work)

    async def Retrieve(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        """The k items of the catalog nearest to the user's vector, from one model + index version."""
        labels = CallLabels(self.watcher.retriever_name or "")

        def prepare() -> ranking_pb2.RetrieveResponse | tuple[str, LoadedRetriever, tuple[RequestContext, int, bool]]:
            request = decode(ranking_pb2.RetrieveRequest, raw)
            validate_retrieve(request, self.limits)
            retriever = self._retriever()
            labels.version = str(retriever.version)
            ctx, _view = user_side(request.user_id, request.query, request.scenario, self.replica)
            query = (ctx, request.k, request.exclude_seen)
            if self.retrieve_batcher is not None and not self.retrieve_batcher.solo():  # searched with others
                return request.request_id, retriever, query
            return retrieved_response(request.request_id, retriever, *retriever.retrieve_many([query])[0])

        async def work() -> ranking_pb2.RetrieveResponse:
            prepared = await self._prepare(self.retrieve_batcher, prepare)
            if isinstance(prepared, ranking_pb2.RetrieveResponse):
                return prepared
            request_id, retriever, query = prepared
            assert self.retrieve_batcher is not None
            found = await self.retrieve_batcher.run(retriever, retriever.retrieve_many, query, query[1])
            return retrieved_response(request_id, retriever, *found)

        return await self._call("Retrieve", context, raw, labels, work)

    # --------------------------------------------------------------------------------------- helpers
    def _model_name(self, name: str) -> str:
        """The model a request names, or the scorer's default (the first of serve_models) when it names none."""
        return name or (self.watcher.ranker_names or [""])[0]

    def _ranker(self, name: str, version: int = 0, label: str = "") -> LoadedRanker:
        """The version of model `name` a request asked for: the live one, a named version, or a label's."""
        name = self._model_name(name)
        if name not in self.watcher.ranker_names:
            raise InvalidRequest(f"unknown model {name!r}; this scorer serves {self.watcher.ranker_names}")
        if not version and not label:
            ranker = self.watcher.rankers.get(name)
            if ranker is None:
                raise Unavailable(f"model {name!r} has no servable version yet")
            return ranker
        if version and label:
            raise InvalidRequest("set version or version_label, not both")
        if version < 0:
            raise InvalidRequest(f"version must be >= 1 (0: the live one), got {version}")
        loaded = self.watcher.versions.get(name, {})
        if label:
            named = self.watcher.labels.get(name, {})
            if label not in named:
                raise NotFound(f"{name} has no version labelled {label!r} (labels: {sorted(named) or 'none'})")
            version = named[label]
        ranker = loaded.get(version)
        if ranker is None:
            raise NotFound(f"{name} v{version} is not loaded (loaded: {sorted(loaded)}; serve_version_policy "
                           f"{self.watcher.policy}, plus the live and the labelled versions)")
        return ranker

    def _retriever(self) -> LoadedRetriever:
        retriever = self.watcher.retriever
        if retriever is None:
            what = self.watcher.retriever_name or "(none configured: set serve_retrieval)"
            raise Unavailable(f"no retrieval model + index {what!r} is loaded yet")
        return retriever

    def _refusal(self, size: int) -> tuple[grpc.StatusCode, str] | None:
        """Why a request of `size` bytes is refused before decoding, or None once it is admitted."""
        if size > self.max_request_bytes:
            return grpc.StatusCode.INVALID_ARGUMENT, (
                f"the request is {size:,} bytes, more than any request within the limits can be "
                f"({self.max_request_bytes:,}: serve_max_candidates, serve_max_behaviors, max_id_length)")
        busy = self.admission.enter(size)
        return None if busy is None else (grpc.StatusCode.RESOURCE_EXHAUSTED, busy)

    async def _prepare(self, batcher: Batcher[Any, Any] | None, fn: Callable[[], T]) -> T:
        """fn() offloaded, counted as preparing while it runs, so the batcher knows who may still join."""
        if batcher is None:
            return await self._offload(fn)
        batcher.preparing += 1
        try:
            return await self._offload(fn)
        finally:
            batcher.preparing -= 1

    async def _offload(self, fn: Callable[[], T]) -> T:
        """fn() on the forward threads (serve_workers = 0: on the loop itself, no thread hop, no overlap)."""
        if self.executor is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _call(self, method: str, context: grpc.aio.ServicerContext, raw: bytes, labels: CallLabels,
                    work: Callable[[], Awaitable[T]]) -> T:
        start = time.perf_counter()
        code, detail = grpc.StatusCode.OK, ""
        timeout = self.settings.serve_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.0))
        refusal = self._refusal(len(raw))
        try:
            if refusal is not None:
                code, detail = refusal
            else:
                return await asyncio.wait_for(work(), timeout)
        except InvalidRequest as exc:
            code, detail = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except Unavailable as exc:
            code, detail = grpc.StatusCode.UNAVAILABLE, str(exc)
        except NotFound as exc:
            code, detail = grpc.StatusCode.NOT_FOUND, str(exc.args[0])
        except TimeoutError:
            code, detail = grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} took longer than {timeout:.3f}s"
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:  # a bug must cost one call, not the server
            log.exception("%s failed", method)
            code, detail = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
        finally:
            if refusal is None:
                self.admission.leave(len(raw))
            self.metrics.observe(method, code.name, time.perf_counter() - start, labels.model, labels.version)
        if code in _ONE_LINE:  # the caller's mistake or a refusal: one line, no traceback
            log.warning("%s %s from %s: %s", method, code.name, context.peer(), detail[:300])
        await context.abort(code, detail)
        raise AssertionError("unreachable: abort raises")
