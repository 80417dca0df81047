"""The online A/B loop in the synthetic environment: arms rank, simulated users click and buy, the system learns.

For each planned request (`Environment.plan`): the user's arm (`arms.assign`) orders the candidates —
through the scorer's Rank for model arms (with the candidates' attributes, so the scorer needs no
catalog), directly for built-in ones — the environment draws clicks, add-to-carts and purchases for the
top `slate_size` with position bias, the events are sent to a sink (Kafka: the worker turns them into
samples, the trainer learns, the scorer swaps versions in: the feedback loop) and one `RequestRecord`
is kept per request, with the model version that served it.

Requests are processed in ticks of `concurrency`: the Rank calls of a tick run in parallel (bounded by
the client), then outcomes are drawn in request order, so a run is deterministic given the rankings.
A model arm whose call fails with UNAVAILABLE/DEADLINE_EXCEEDED (no version yet, scorer restarting) is
served by its fallback built-in for that request and recorded with model version -1.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simulator.arms import FALLBACK_VERSION, Arm, assign, check_arms
from simulator.client import Ranked, ScorerClient, ScorerError
from simulator.environment import Environment, Outcome, Request
from simulator.publish import EventSink, impression_events, interaction_event
from simulator.rankers import builtin_order
from streamrank.v1 import events_pb2

log = logging.getLogger(__name__)

BUILTIN_VERSION = 0  # built-in rankers have no versions


@dataclass
class OnlineResult:
    """Per-request outcomes of an online run, as columns (one entry per request, in request order)."""

    arms: list[dict[str, Any]]
    params: dict[str, Any]
    hit_k: int
    index: list[int] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    arm: list[str] = field(default_factory=list)
    user_id: list[str] = field(default_factory=list)
    scenario: list[str] = field(default_factory=list)
    long_tail: list[bool] = field(default_factory=list)
    impressions: list[int] = field(default_factory=list)
    clicks: list[int] = field(default_factory=list)
    carts: list[int] = field(default_factory=list)
    purchases: list[int] = field(default_factory=list)
    hit: list[int] = field(default_factory=list)
    ndcg: list[float] = field(default_factory=list)
    model_version: list[int] = field(default_factory=list)
    served_by: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, request: Request, arm: Arm, outcome: Outcome, version: int, served_by: str) -> None:
        """Appends one request's record."""
        self.index.append(request.index)
        self.ts_ms.append(request.ts_ms)
        self.arm.append(arm.name)
        self.user_id.append(request.user_id)
        self.scenario.append(request.scenario_name)
        self.long_tail.append(request.long_tail)
        self.impressions.append(len(outcome.shown))
        self.clicks.append(int(outcome.clicked.sum()))
        self.carts.append(int(outcome.carted.sum()))
        self.purchases.append(int(outcome.purchased.sum()))
        self.hit.append(int(outcome.clicked[: self.hit_k].any()))
        self.ndcg.append(outcome.true_ndcg)
        self.model_version.append(version)
        self.served_by.append(served_by)

    def columns(self) -> dict[str, np.ndarray]:
        """The per-request columns as numpy arrays (for stats and plots)."""
        names = ("index", "ts_ms", "arm", "user_id", "scenario", "long_tail", "impressions", "clicks", "carts",
                 "purchases", "hit", "ndcg", "model_version", "served_by")
        return {name: np.asarray(getattr(self, name)) for name in names}

    def save(self, path: str | Path) -> None:
        """Writes the result as one JSON document (arms, parameters, columns)."""
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> OnlineResult:
        """Reads a result written by `save`."""
        return cls(**json.loads(Path(path).read_text()))


def _arm_dict(arm: Arm) -> dict[str, Any]:
    return {**asdict(arm), "ranker": arm.describe()}


def run_online(env: Environment, arms: Sequence[Arm], n_requests: int, *, salt: str = "streamrank-ab",
               client: ScorerClient | None = None, sink: EventSink | None = None, concurrency: int = 16,
               hit_k: int = 5, rate: float | None = None, publish_catalog: bool = True,
               progress_every: int = 0) -> OnlineResult:
    """Runs `n_requests` simulated requests through the arms and returns the per-request records.

    `client` is required when an arm is a model arm. `sink` receives every request's events (impressions,
    clicks, add-to-carts, purchases; the catalog first when `publish_catalog`); `rate` paces requests
    per wall-clock second (None: as fast as possible). The environment's state advances: call on a fresh
    Environment for a fresh world.
    """
    check_arms(arms)
    if any(a.uses_scorer for a in arms) and client is None:
        raise ValueError("model arms need a ScorerClient (client=...)")
    if concurrency <= 0:
        raise ValueError(f"concurrency must be > 0, got {concurrency}")
    catalog = env.catalog
    attributes = [catalog.attributes(i) for i in range(len(catalog))]
    if sink is not None and publish_catalog:
        sink.publish_items(catalog.items(updated_ms=env.params.epoch_ms))
    params = asdict(env.params)
    params["n_requests"] = n_requests
    params["salt"] = salt
    result = OnlineResult(arms=[_arm_dict(a) for a in arms], params=params, hit_k=hit_k)
    bucket = None
    if rate:
        from streamrank.events.producer import TokenBucket

        bucket = TokenBucket(rate)
    plan = env.plan(n_requests)
    started = time.monotonic()
    for start in range(0, len(plan), concurrency):
        tick = plan[start:start + concurrency]
        chosen = [assign(r.user_id, arms, salt) for r in tick]
        calls: list[Future[Ranked] | None] = []
        for request, arm in zip(tick, chosen, strict=True):
            if bucket is not None:
                bucket.acquire()
            if arm.uses_scorer:
                assert client is not None and arm.model is not None
                ids = [catalog.item_ids[i] for i in request.candidates.tolist()]
                calls.append(client.rank_async(request.user_id, ids, request.scenario_name, arm.model,
                                               request.query, request.request_id,
                                               [attributes[i] for i in request.candidates.tolist()]))
            else:
                calls.append(None)
        for request, arm, call in zip(tick, chosen, calls, strict=True):
            order, version, served_by = _order(env, request, arm, call)
            outcome = env.respond(request, request.candidates[order])
            result.add(request, arm, outcome, version, served_by)
            if sink is not None:
                sink.send(request_events(env, request, outcome, attributes))
        if progress_every and (start // concurrency) % max(1, progress_every // concurrency) == 0:
            log.info("online: %d/%d requests (%.0f/s)", start + len(tick), len(plan),
                     (start + len(tick)) / max(time.monotonic() - started, 1e-9))
    return result


def _order(env: Environment, request: Request, arm: Arm,
           call: Future[Ranked] | None) -> tuple[np.ndarray, int, str]:
    """The candidate order (indices into request.candidates), the model version and what served it."""
    rng = np.random.default_rng([env.params.seed, 3, request.index])
    popularity = env.item_clicks[request.candidates]
    if call is None:
        oracle = env.true_relevance(request) if arm.builtin == "oracle" else None
        assert arm.builtin is not None
        return builtin_order(arm.builtin, rng, popularity, oracle), BUILTIN_VERSION, arm.builtin
    try:
        ranked = call.result()
    except ScorerError as exc:
        if not exc.unavailable:
            raise
        log.debug("arm %s: %s; serving %s", arm.name, exc, arm.fallback)
        return builtin_order(arm.fallback, rng, popularity), FALLBACK_VERSION, f"fallback:{arm.fallback}"
    position = {item_id: n for n, item_id in enumerate(env.catalog.item_ids[i] for i in request.candidates.tolist())}
    try:
        order = np.array([position[item_id] for item_id in ranked.items], dtype=np.int64)
    except KeyError as exc:
        raise RuntimeError(f"scorer returned item {exc} that was not a candidate of {request.request_id}") from exc
    if len(order) != len(position):
        raise RuntimeError(f"scorer ranked {len(order)} of {len(position)} candidates of {request.request_id}")
    return order, ranked.version, f"model:{ranked.model}"


def request_events(env: Environment, request: Request, outcome: Outcome,
                   attributes: Sequence[events_pb2.ItemAttributes]) -> list[events_pb2.Event]:
    """The events a request produced: impressions of the slate, then clicks, carts, purchases by time."""
    ids = env.catalog.item_ids
    shown = outcome.shown.tolist()
    common = (request.request_id, request.user_id, request.session_id, request.scenario_name, request.query)
    events = impression_events(*common, request.ts_ms, [ids[i] for i in shown], [attributes[i] for i in shown])
    later: list[events_pb2.Event] = []
    for pos, item in enumerate(shown):
        for flag, kind, stamps in ((outcome.clicked, events_pb2.CLICK, outcome.click_ts),
                                   (outcome.carted, events_pb2.ADD_TO_CART, outcome.cart_ts),
                                   (outcome.purchased, events_pb2.PURCHASE, outcome.purchase_ts)):
            if flag[pos]:
                later.append(interaction_event(kind, *common, int(stamps[pos]), ids[item], pos, attributes[item]))
    later.sort(key=lambda e: e.ts_ms)
    return events + later
