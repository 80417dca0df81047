"""Validation of Rank/Retrieve requests and their translation into the feature path's raw inputs.

Every rule that can reject a request lives here, so the servicer answers INVALID_ARGUMENT with one clear
message before any model runs. The user side comes from the request's explicit behaviour list when it has
one, else from the feature replica (an unknown user is a cold start: empty history, still served); the
candidates' attributes come from the request when set, else from the catalog; their counters come from the
replica's item stats and the user's click counters, as the worker computed them for training samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamrank.config import Settings
from streamrank.events.types import NAME_BY_TYPE
from streamrank.events.validate import has_control_chars, id_problem, price_problem, timestamp_problem
from streamrank.features.raw import Behaviors, Candidate, Counts, ItemAttrs, RequestContext
from streamrank.serve.replica import FeatureReplica, UserView
from streamrank.v1 import ranking_pb2
from streamrank.v1.features_pb2 import BehaviorSequence


class InvalidRequest(ValueError):
    """A request that breaks a limit or a rule; the message is sent back with INVALID_ARGUMENT."""


@dataclass(frozen=True)
class Limits:
    """Request limits (from Settings)."""

    max_candidates: int
    max_k: int
    max_behaviors: int
    max_id_chars: int
    max_query_chars: int
    max_future_skew_ms: int = 86_400_000

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        """The limits a scorer with these settings enforces."""
        return cls(s.serve_max_candidates, s.serve_max_k, s.serve_max_behaviors, s.max_id_length,
                   s.serve_max_query_chars, s.max_future_skew_ms)


def _refuse(problem: tuple[str, str] | None) -> None:
    if problem is not None:
        raise InvalidRequest(problem[1])


def _check_id(name: str, value: str, limits: Limits, required: bool = False) -> None:
    """The worker's id rules (streamrank.events.validate), so what was learned can be ranked."""
    _refuse(id_problem(name, value, limits.max_id_chars, required))


def _check_common(req: ranking_pb2.RankRequest | ranking_pb2.RetrieveRequest, limits: Limits) -> None:
    _check_id("request_id", req.request_id, limits)
    _check_id("user_id", req.user_id, limits)
    _check_id("scenario", req.scenario, limits)
    if len(req.query) > limits.max_query_chars:
        raise InvalidRequest(f"query has {len(req.query)} characters (limit {limits.max_query_chars})")


def validate_rank(req: ranking_pb2.RankRequest, limits: Limits) -> None:
    """Raises InvalidRequest unless the Rank request is within every limit and well formed."""
    _check_common(req, limits)
    _check_id("model", req.model, limits)
    _check_id("version_label", req.version_label, limits)
    n = len(req.candidates)
    if n > limits.max_candidates:
        raise InvalidRequest(f"{n} candidates (limit {limits.max_candidates})")
    ids = [cand.item_id for cand in req.candidates]
    joined = "".join(ids)
    if not all(ids) or (ids and max(map(len, ids)) > limits.max_id_chars) or has_control_chars(joined):
        for i, item_id in enumerate(ids):  # slow path: name the first offending candidate
            _check_id(f"candidates[{i}].item_id", item_id, limits, required=True)
    for i, cand in enumerate(req.candidates):
        if not cand.HasField("attributes"):
            continue
        attrs = cand.attributes
        for name in ("category", "brand", "shop"):
            _check_id(f"candidates[{i}].attributes.{name}", getattr(attrs, name), limits)
        if attrs.HasField("price"):
            _refuse(price_problem(f"candidates[{i}].attributes.price", attrs.price))
    if req.HasField("behaviors"):
        b = req.behaviors
        length = len(b.item_ids)
        if length > limits.max_behaviors:
            raise InvalidRequest(f"{length} behaviours (limit {limits.max_behaviors})")
        for name in ("types", "ts_ms", "categories"):
            got = len(getattr(b, name))
            if got not in (0, length):
                raise InvalidRequest(f"behaviors.{name} has {got} entries, item_ids has {length} (or send none)")
        for i, item_id in enumerate(b.item_ids):
            _check_id(f"behaviors.item_ids[{i}]", item_id, limits, required=True)
        for i, cat in enumerate(b.categories):
            _check_id(f"behaviors.categories[{i}]", cat, limits)
        for i, ts in enumerate(b.ts_ms):
            _refuse(timestamp_problem(f"behaviors.ts_ms[{i}]", ts, limits.max_future_skew_ms))
        bad = [t for t in b.types if t not in NAME_BY_TYPE]
        if bad:
            raise InvalidRequest(f"behaviors.types has unknown event types {sorted(set(bad))[:5]}")


def validate_retrieve(req: ranking_pb2.RetrieveRequest, limits: Limits) -> None:
    """Raises InvalidRequest unless the Retrieve request is within every limit and well formed."""
    _check_common(req, limits)
    if not 1 <= req.k <= limits.max_k:
        raise InvalidRequest(f"k must be in 1..{limits.max_k}, got {req.k}")


def user_side(user_id: str, query: str, scenario: str, replica: FeatureReplica,
              override: BehaviorSequence | None = None) -> tuple[RequestContext, UserView | None]:
    """The request's user side: explicit behaviours when given, else the replica's (empty for a new user)."""
    view = replica.user(user_id) if user_id else None
    if override is not None:
        behaviors = Behaviors.from_proto(override)
    else:
        behaviors = view.behaviors if view is not None else Behaviors()
    return RequestContext(user_id, behaviors, query, scenario), view


def rank_inputs(req: ranking_pb2.RankRequest, replica: FeatureReplica) -> tuple[RequestContext, list[Candidate]]:
    """The raw inputs of a validated Rank request."""
    context, view = user_side(req.user_id, req.query, req.scenario, replica,
                              req.behaviors if req.HasField("behaviors") else None)
    item_clicks = view.item_clicks if view is not None else {}
    category_clicks = view.category_clicks if view is not None else {}
    candidates = []
    for cand in req.candidates:
        a = cand.attributes
        if cand.HasField("attributes"):
            attrs = ItemAttrs(a.category, a.brand, a.shop, a.price if a.HasField("price") else None)
        else:
            attrs = replica.item(cand.item_id) or ItemAttrs()
        imps, clicks, purchases = replica.item_counts(req.scenario, cand.item_id)
        counts = Counts(imps, clicks, purchases, item_clicks.get(cand.item_id, 0),
                        category_clicks.get(attrs.category, 0) if attrs.category else 0)
        candidates.append(Candidate(cand.item_id, attrs, counts))
    return context, candidates
