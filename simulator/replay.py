"""Log replay: logged interactions played through the scorer as if the replay were the production service.

For each logged interaction (`simulator.replay_log`), in log order:
1. candidates: ``candidates="retrieve"`` asks the scorer's Retrieve for `retrieve_k` items (one call per
   request: the scorer serves one retrieval version, shared by all arms); ``candidates="sampled"`` uses
   the logged item plus `negatives` items drawn uniformly from the catalog (no scorer needed);
2. the user's arm (`arms.assign`) orders them: Rank with its model, or a built-in (random; popularity =
   logged interactions replayed so far). With ``shadow=True`` every arm orders every request (a paired
   comparison) but only the assigned arm's slate is published;
3. the logged item's 0-based rank in that order gives HIT@K and NDCG@K (0 when it was not a candidate),
   and per session an AUC of the logged items against the other candidates (scores: Rank's, or minus
   the position for built-ins);
4. events (to a sink, e.g. Kafka, so the system learns online from the replay): an impression for each
   of the top `slate_size`, the logged item's impression at position `slate_size` when it was not among
   them (`include_logged`, so every request has its positive), then the logged CLICK (ts + 1 ms) and, for
   a purchase, ADD_TO_CART and PURCHASE (ts + 2, + 3 ms) with the request's id.

What the events teach the trainers (`feedback`): ``"slate"`` publishes the arm's own top `slate_size` as the
impressions, as production would; but a replayed user never saw that slate, so its unclicked items are
negatives the log does not contain, and they are exactly the items the model ranks highest: a trainer that
keeps up learns to push down whatever it currently prefers, and its ranking of the logged items degrades
(docs/simulator.md, "Feedback"). ``"sampled"`` publishes the logged item among `slate_size - 1` catalog items
drawn uniformly at random (shuffled), the same for every arm: labels as unbiased as an interaction-only log
allows, independent of the arm that ranked the request (the metrics above still come from the arm's order).

A request is *long-tail* when its user had at most `long_tail_max` logged interactions before it (the log
is fixed, so this does not depend on the arms). Pacing: `speedup` (event-time ms per wall ms) or `rate`
(requests per second); neither: as fast as possible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.arms import FALLBACK_VERSION, Arm, assign, check_arms
from simulator.client import Ranked, Retrieved, ScorerClient, ScorerError
from simulator.publish import EventSink, impression_events, interaction_event
from simulator.rankers import builtin_order
from simulator.replay_log import LoggedInteraction
from simulator.stats import auc, hit_at_k, ndcg_at_k
from streamrank.events.producer import known_length
from streamrank.v1 import events_pb2


@dataclass
class ReplayResult:
    """Per-(request, arm) rows of a replay as lists; `columns()` gives numpy arrays."""

    arms: list[dict[str, Any]]
    ks: tuple[int, ...]
    shadow: bool
    rows: dict[str, list[Any]] = field(default_factory=dict)
    retrieval_versions: list[int] = field(default_factory=list)
    lag: list[dict[str, Any]] = field(default_factory=list)  # training-lag probes (request, seconds, per arm)
    held_s: float = 0.0  # seconds the replay waited for the trainers (--pace-to-trainers)

    def add(self, **values: Any) -> None:
        """Appends one row."""
        for key, value in values.items():
            self.rows.setdefault(key, []).append(value)

    def __len__(self) -> int:
        return len(self.rows.get("arm", []))

    def columns(self) -> dict[str, np.ndarray]:
        """The rows as numpy columns."""
        return {k: np.asarray(v) for k, v in self.rows.items()}


@dataclass
class _Session:
    key: tuple[str, str]
    labels: list[bool] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    last_row: int = -1


def run_replay(interactions: Iterable[LoggedInteraction], arms: Sequence[Arm], *, client: ScorerClient | None = None,
               sink: EventSink | None = None, salt: str = "streamrank-ab", candidates: str = "sampled",
               catalog: Sequence[str] = (), attributes: dict[str, events_pb2.ItemAttributes] | None = None,
               retrieve_k: int = 100, exclude_seen: bool = False, negatives: int = 99, slate_size: int = 10,
               ks: Sequence[int] = (1, 5, 10), shadow: bool = False, include_logged: bool = True,
               feedback: str = "slate", long_tail_max: int = 5, concurrency: int = 16, speedup: float | None = None,
               rate: float | None = None, seed: int = 0, request_prefix: str = "replay",
               lag_probe: Callable[[], dict[str, int | None]] | None = None, lag_every: int = 500,
               pace_to_trainers: int | None = None,
               progress: Callable[[str], None] | None = None, progress_every: int = 0) -> ReplayResult:
    """Replays interactions through the arms; returns per-request rank metrics (see the module docstring).

    `lag_probe` (a `simulator.lag.TrainerLag.lags`) is read every `lag_every` requests into `result.lag`;
    with `pace_to_trainers` the replay then waits while any arm's trainer is more than that many samples
    behind. `progress` receives a line every `progress_every` requests.
    """
    check_arms(arms)
    if feedback not in FEEDBACK:
        raise ValueError(f"feedback must be one of {', '.join(FEEDBACK)}, got {feedback!r}")
    if candidates not in ("retrieve", "sampled"):
        raise ValueError(f"candidates must be retrieve or sampled, got {candidates!r}")
    if client is None and (candidates == "retrieve" or any(a.uses_scorer for a in arms)):
        raise ValueError("Retrieve and model arms need a ScorerClient (client=...)")
    if any(a.builtin == "oracle" for a in arms):
        raise ValueError("the oracle ranker exists only in the synthetic environment")
    universe = list(catalog)
    if candidates == "sampled" and len(universe) <= negatives:
        raise ValueError(f"sampled candidates need a catalog of more than {negatives} items")
    result = ReplayResult([{"name": a.name, "ranker": a.describe(), "weight": a.weight} for a in arms],
                          tuple(ks), shadow)
    state = _ReplayState(arms, universe, attributes or {}, np.random.default_rng([seed, 5]))
    if feedback == "sampled" and len(universe) < slate_size:
        raise ValueError(f"sampled feedback needs a catalog of at least {slate_size} items")
    opts = _Opts(client, sink, salt, candidates, retrieve_k, exclude_seen, negatives, slate_size, tuple(ks), shadow,
                 include_logged, feedback, long_tail_max, request_prefix, _Pacer(speedup, rate))
    batch: list[tuple[int, LoggedInteraction]] = []
    watch = _Watch(result, lag_probe, lag_every, pace_to_trainers, progress, progress_every, known_length(interactions))
    for n, logged in enumerate(interactions):
        batch.append((n, logged))
        if len(batch) >= concurrency:
            _tick(batch, result, state, opts)
            batch = []
            watch.after(n + 1)
    if batch:
        _tick(batch, result, state, opts)
    watch.after(watch.total or 0, final=True)
    state.close_all(result)
    return result


class _Watch:
    """Progress lines, training-lag probes and pacing to the trainers, between batches of requests."""

    def __init__(self, result: ReplayResult, probe: Callable[[], dict[str, int | None]] | None, every: int,
                 pace: int | None, progress: Callable[[str], None] | None, progress_every: int,
                 total: int | None) -> None:
        self.result, self.probe, self.every, self.pace = result, probe, max(every, 1), pace
        self.progress, self.progress_every, self.total = progress, progress_every, total
        self.start = time.monotonic()
        self.next_probe, self.next_line = 0, progress_every
        self.lags: dict[str, int | None] = {}

    def after(self, done: int, final: bool = False) -> None:
        """Called after `done` requests were sent."""
        if self.probe is not None and (done >= self.next_probe or final):
            self.next_probe = done + self.every
            if self.pace is not None and not final:
                from simulator.lag import hold_while_behind

                self.lags, held = hold_while_behind(self.probe, self.pace)
                self.result.held_s += held
            else:
                self.lags = self.probe()
            self.result.lag.append({"request": done, "seconds": round(time.monotonic() - self.start, 1),
                                    "lags": dict(self.lags)})
        if self.progress is not None and self.progress_every and (done >= self.next_line or final):
            self.next_line = done + self.progress_every
            rate = done / max(time.monotonic() - self.start, 1e-9)
            total = f"/{self.total:,}" if self.total else ""
            behind = [f"{a} {v:,}" if v is not None else f"{a} ?" for a, v in self.lags.items()]
            lag = ("; trainers behind: " + ", ".join(behind)
                   if self.lags else "")
            self.progress(f"replayed {done:,}{total} interactions ({rate:.0f}/s){lag}")


FEEDBACK = ("slate", "sampled")


@dataclass
class _Opts:
    client: ScorerClient | None
    sink: EventSink | None
    salt: str
    candidates: str
    retrieve_k: int
    exclude_seen: bool
    negatives: int
    slate_size: int
    ks: Sequence[int]
    shadow: bool
    include_logged: bool
    feedback: str
    long_tail_max: int
    prefix: str
    pace: _Pacer


class _Pacer:
    """Sleeps so requests go out at `rate` per second or at `speedup` times event time."""

    def __init__(self, speedup: float | None, rate: float | None) -> None:
        self.speedup, self.rate = speedup, rate
        self.start_wall = time.monotonic()
        self.start_ts: int | None = None
        self.count = 0

    def wait(self, ts_ms: int) -> None:
        """Blocks until the request at event time `ts_ms` is due."""
        self.count += 1
        if self.start_ts is None:
            self.start_ts = ts_ms
        due = None
        if self.speedup:
            due = self.start_wall + (ts_ms - self.start_ts) / self.speedup / 1000.0
        elif self.rate:
            due = self.start_wall + (self.count - 1) / self.rate
        if due is not None and (delay := due - time.monotonic()) > 0:
            time.sleep(delay)


class _ReplayState:
    """What the replay remembers: interaction counts (popularity, long-tail) and open sessions per arm."""

    def __init__(self, arms: Sequence[Arm], universe: list[str], attributes: dict[str, events_pb2.ItemAttributes],
                 rng: np.random.Generator) -> None:
        self.arms = list(arms)
        self.universe = universe
        self.attributes = attributes
        self.rng = rng
        self.item_counts: dict[str, int] = {}
        self.user_counts: dict[str, int] = {}
        self.sessions: dict[tuple[str, str], _Session] = {}  # (arm, user) -> the user's open session
        self.session_ids: dict[tuple[str, str], str] = {}

    def sample(self, logged: str, negatives: int) -> list[str]:
        """The logged item plus `negatives` distinct other catalog items, shuffled."""
        picked: set[str] = {logged}
        while len(picked) < negatives + 1:
            for idx in self.rng.integers(0, len(self.universe), size=negatives + 1 - len(picked)).tolist():
                picked.add(self.universe[idx])
        out = sorted(picked)
        self.rng.shuffle(out)
        return out

    def session_scores(self, result: ReplayResult, arm: str, logged: LoggedInteraction, row: int,
                       labels: list[bool], scores: list[float]) -> None:
        """Adds a request's labelled scores to the arm's session of the user, closing the previous session."""
        key = (arm, logged.user_id)
        session_id = logged.session_id or logged.user_id
        if self.session_ids.get(key) != session_id:
            self._close(result, key)
            self.sessions[key] = _Session(key)
            self.session_ids[key] = session_id
        session = self.sessions[key]
        session.labels.extend(labels)
        session.scores.extend(scores)
        session.last_row = row

    def _close(self, result: ReplayResult, key: tuple[str, str]) -> None:
        session = self.sessions.pop(key, None)
        if session is None or session.last_row < 0:
            return
        value = auc(np.array(session.labels), np.array(session.scores))
        if np.isfinite(value):
            result.rows["sauc_num"][session.last_row] += value
            result.rows["sauc_den"][session.last_row] += 1

    def close_all(self, result: ReplayResult) -> None:
        """Closes every open session (end of the replay)."""
        for key in list(self.sessions):
            self._close(result, key)


def _tick(batch: list[tuple[int, LoggedInteraction]], result: ReplayResult, state: _ReplayState, o: _Opts) -> None:
    """Retrieve for a batch of requests in parallel, then Rank per arm in parallel, then record in order."""
    retrieved: list[Future[Retrieved] | None] = []
    for n, logged in batch:
        o.pace.wait(logged.ts_ms)
        if o.candidates == "retrieve":
            assert o.client is not None
            retrieved.append(o.client.retrieve_async(logged.user_id, o.retrieve_k, logged.scenario, o.exclude_seen,
                                                     logged.query, f"{o.prefix}-{n}"))
        else:
            retrieved.append(None)
    plans = []
    for (n, logged), call in zip(batch, retrieved, strict=True):
        version = FALLBACK_VERSION
        if call is None:
            cands = state.sample(logged.item_id, o.negatives)
        else:
            try:
                got = call.result()
                cands, version = got.items, got.version
            except ScorerError as exc:
                if not exc.unavailable:
                    raise
                cands = state.sample(logged.item_id, o.negatives) if state.universe else [logged.item_id]
        assigned = assign(logged.user_id, state.arms, o.salt)
        serving = state.arms if o.shadow else [assigned]
        ranks: list[tuple[Arm, Future[Ranked] | None]] = []
        for arm in serving:
            if arm.uses_scorer and cands:
                assert o.client is not None
                attrs = [state.attributes.get(c) for c in cands]
                ranks.append((arm, o.client.rank_async(logged.user_id, cands, logged.scenario, arm.model or "",
                                                       logged.query, f"{o.prefix}-{n}", attrs)))
            else:
                ranks.append((arm, None))
        plans.append((n, logged, cands, version, assigned, ranks))
    for n, logged, cands, retrieval_version, assigned, ranks in plans:
        result.retrieval_versions.append(retrieval_version)
        prior = state.user_counts.get(logged.user_id, 0)
        for arm, call in ranks:
            order, scores, version = _arm_order(arm, call, cands, state)
            rank = order.index(logged.item_id) if logged.item_id in order else None
            row = len(result)
            values: dict[str, Any] = {
                "index": n, "ts_ms": logged.ts_ms, "arm": arm.name, "user_id": logged.user_id,
                "scenario": logged.scenario, "long_tail": prior <= o.long_tail_max, "assigned": arm is assigned,
                "rank": -1 if rank is None else rank, "in_candidates": int(rank is not None),
                "model_version": version, "retrieval_version": retrieval_version, "sauc_num": 0.0, "sauc_den": 0,
            }
            for k in o.ks:
                values[f"hit@{k}"] = hit_at_k(rank, k)
                values[f"ndcg@{k}"] = ndcg_at_k(rank, k)
            result.add(**values)
            if rank is not None:
                state.session_scores(result, arm.name, logged, row, [c == logged.item_id for c in order], scores)
            if arm is assigned and o.sink is not None:
                shown = order if o.feedback == "slate" else state.sample(logged.item_id, o.slate_size - 1)
                o.sink.send(_events(logged, shown, f"{o.prefix}-{n}", o.slate_size, o.include_logged,
                                    state.attributes))
        state.user_counts[logged.user_id] = prior + 1
        state.item_counts[logged.item_id] = state.item_counts.get(logged.item_id, 0) + 1


def _arm_order(arm: Arm, call: Future[Ranked] | None, cands: list[str],
               state: _ReplayState) -> tuple[list[str], list[float], int]:
    """The arm's order of the candidates, a score per position, and the model version (0 built-in)."""
    if call is not None:
        try:
            ranked = call.result()
            return ranked.items, ranked.scores, ranked.version
        except ScorerError as exc:
            if not exc.unavailable:
                raise
            name, version = arm.fallback, FALLBACK_VERSION
    else:
        name, version = str(arm.builtin or arm.fallback), 0
    popularity = np.array([state.item_counts.get(c, 0) for c in cands], dtype=float)
    order = builtin_order(name, state.rng, popularity).tolist()
    return [cands[i] for i in order], [-float(p) for p in range(len(order))], version


def _events(logged: LoggedInteraction, order: list[str], request_id: str, slate_size: int, include_logged: bool,
            attributes: dict[str, events_pb2.ItemAttributes]) -> list[events_pb2.Event]:
    """Impressions of the slate (plus the logged item when missing), then the logged interaction."""
    shown = list(order[:slate_size])
    if include_logged and logged.item_id not in shown:
        shown.append(logged.item_id)
    attrs = [attributes.get(i) for i in shown]
    common = (request_id, logged.user_id, logged.session_id, logged.scenario, logged.query)
    events = impression_events(*common, logged.ts_ms, shown, attrs)
    if logged.item_id in shown:
        position = shown.index(logged.item_id)
        attr = attributes.get(logged.item_id)
        kinds = [events_pb2.CLICK]
        if logged.kind in (events_pb2.ADD_TO_CART, events_pb2.PURCHASE):
            kinds.append(events_pb2.ADD_TO_CART)
        if logged.kind == events_pb2.PURCHASE:
            kinds.append(events_pb2.PURCHASE)
        for step, kind in enumerate(kinds, start=1):
            events.append(interaction_event(kind, *common, logged.ts_ms + step, logged.item_id, position, attr))
    return events
