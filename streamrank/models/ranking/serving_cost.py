"""Serving-cost measurement of the ranking models: what gate-once and the pair-unit decomposition save.

`gate_once_rows` times one request (C candidates x T behaviours) in several layouts:
- batched request, query-context gate: user side and gate once per request (the production path);
- the same model with pair units evaluated on the explicit [h, v, h - v, h * v] concatenation;
- the same model with the request expanded to one user row per candidate (gate computed C times);
- the recommendation setting (gate paired with the target item: per candidate by construction);
- DIN for reference, and the tensorisation of the request itself.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from streamrank.features import Behaviors, Candidate, Counts, FeatureSpec, ItemAttrs, RequestContext, Tensorizer
from streamrank.models.layers import PairUnit
from streamrank.models.ranking.config import make_config
from streamrank.models.ranking.moe import RankingModel


def time_ms(cases: list[Callable[[], object]], repeats: int, warmup: int = 5) -> list[list[float]]:
    """Wall-clock milliseconds of `repeats` calls of each case, after `warmup` untimed calls.

    Cases are interleaved (round robin) so that load from other processes on a shared machine spreads
    evenly over them instead of biasing whichever case ran during a busy spell.
    """
    for fn in cases:
        for _ in range(warmup):
            fn()
    out: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for k, fn in enumerate(cases):
            t = time.perf_counter()
            fn()
            out[k].append(1000.0 * (time.perf_counter() - t))
    return out


@contextlib.contextmanager
def naive_pair_units() -> Iterator[None]:
    """Temporarily evaluate every PairUnit on the explicit concatenation (no decomposition)."""
    original = PairUnit.forward
    PairUnit.forward = PairUnit.forward_naive  # type: ignore[method-assign]
    try:
        yield
    finally:
        PairUnit.forward = original  # type: ignore[method-assign]


def synthetic_request(n_candidates: int, n_behaviours: int, seed: int = 0,
                      n_items: int = 5000) -> tuple[FeatureSpec, Tensorizer, RequestContext, list[Candidate]]:
    """A spec with `n_items` items and one search request with the given sizes (random ids)."""
    rng = random.Random(seed)
    spec = FeatureSpec(max_seq_len=n_behaviours)
    spec.vocabs["item"].fit(f"i{k}" for k in range(n_items))
    spec.vocabs["category"].fit(f"c{k}" for k in range(50))
    spec.vocabs["query"].fit(["q"])
    items = [f"i{rng.randrange(n_items)}" for _ in range(n_behaviours)]
    beh = Behaviors(items, [rng.choice([2, 4]) for _ in items], list(range(n_behaviours)),
                    [f"c{rng.randrange(50)}" for _ in items])
    ctx = RequestContext("u", beh, query="q")
    cands = [Candidate(f"i{rng.randrange(n_items)}", ItemAttrs(f"c{rng.randrange(50)}", price=9.9),
                       Counts(100, 10, 1, 0, 2)) for _ in range(n_candidates)]
    return spec, Tensorizer(spec), ctx, cands


def gate_once_rows(n_candidates: int = 200, n_behaviours: int = 50, repeats: int = 50,
                   threads: int = 1, **model_kw: object) -> list[dict[str, object]]:
    """Median / p90 latency (ms) of scoring one request in each layout of the module docstring."""
    torch.set_num_threads(threads)
    spec, tz, ctx, cands = synthetic_request(n_candidates, n_behaviours)
    req = tz.encode_request(ctx, cands)
    expanded = req.per_candidate()
    torch.manual_seed(0)
    search = RankingModel(spec, make_config("aw_moe", gate_context="query", **model_kw)).eval()
    rec = RankingModel(spec, make_config("aw_moe", gate_context="target", **model_kw)).eval()
    din = RankingModel(spec, make_config("din", **model_kw)).eval()
    def naive(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with naive_pair_units():
                return fn()
        return run

    cases: list[tuple[str, Callable[[], object]]] = [
        ("encode_request (tensorisation only)", lambda: tz.encode_request(ctx, cands)),
        ("DIN, batched request", lambda: din.score_request(req)),
        ("AW-MoE search (query gate), batched: gate once, decomposed units", lambda: search.score_request(req)),
        ("AW-MoE search, batched, units on the concatenation", naive(lambda: search.score_request(req))),
        ("AW-MoE search, one user row per candidate (gate x C)", lambda: search.score_request(expanded)),
        ("AW-MoE recommendation (target gate), batched, decomposed", lambda: rec.score_request(req)),
        ("AW-MoE recommendation, units on the concatenation", naive(lambda: rec.score_request(req))),
    ]
    with torch.inference_mode():
        timings = time_ms([fn for _, fn in cases], repeats)
    rows = []
    for (name, _), ms in zip(cases, timings, strict=True):
        ms = sorted(ms)
        rows.append({"case": name, "p50_ms": statistics.median(ms), "p90_ms": ms[int(0.9 * (len(ms) - 1))],
                     "repeats": repeats})
    return rows
