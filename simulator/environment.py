"""The synthetic world: a ground-truth user model in which each arm's rankings produce clicks and purchases.

- **Users** have a latent interest vector (a mix of 1-3 favourite category centroids plus noise), a price
  sensitivity (log-normal), 1-3 favourite brands and an activity level (log-normal, `activity_sigma`):
  a few users make many requests, many make few. A user who makes at most `long_tail_max_requests`
  requests in the run is *long-tail*. The request stream does not depend on the rankings, so this segment
  is fixed by the seed before any arm acts (a valid breakdown of an A/B).
- **Scenarios** (`ScenarioSpec`) behave differently: the default home page (broad interests), search (the
  request carries a category as query; candidates and clicks favour it) and deals (price matters more).
- **Click model**: the click logit of item i for user u in scenario s is
  ``base_s + affinity_s * 3 * <u, v_i> + quality_i + brand_bonus * [favourite brand]
  - price_weight_s * sensitivity_u * log(price_i / category median) + query_bonus_s * [category = query]
  - repeat_penalty * [clicked before] - purchased_penalty * [bought before]``; the item is clicked at
  position p with probability ``sigmoid(logit) * (1 + p) ** -position_decay`` (position bias).
- **After a click**: add-to-cart with ``sigmoid(cart_logit_s + 0.5 * <u, v_i> * 3)``, then purchase with
  ``sigmoid(purchase_logit_s - 0.5 * sensitivity_u * log relative price)``.
- **Drifting preferences** (``drift_period_ms`` > 0; 0, the default, is the static world above): the
  interest vector u moves over event time. At the anchors ``t_k = epoch_ms + k * drift_period_ms`` the
  user's interest is ``a_k``: ``a_0`` is the vector above, ``a_k`` (k >= 1) a fresh mix of 1-3 favourite
  category centroids plus noise, drawn the same way from the generator ``(seed, 4, user, k)``. In between,
  ``u(t) = (f_t * a_{k+1} + (1 - f_t) * a_k) / ||...||`` with ``k = floor((t - epoch_ms) / drift_period_ms)``
  and ``f_t`` the elapsed fraction of that period. Click and cart affinities use ``u(ts)`` of the request;
  a search query is one of the favourite categories of the nearest anchor. Brands, price sensitivity and
  activity do not drift.

The feedback loop: clicks and purchases change what a user will click next (satiation), built-in
popularity learns from the clicks it caused, and model arms learn from the events the simulator publishes.
Everything is drawn from generators seeded by ``(seed, stream, index)``, so a seed is one world and one
request stream, and the outcome of request j uses the same random numbers whichever arm serves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simulator.catalog import Catalog, CatalogParams, make_catalog

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: simulated event time starts here by default
DRIFT_STREAM = 4  # generator stream of the drifting interests' anchors: (seed, DRIFT_STREAM, user, k)


@dataclass(frozen=True)
class ScenarioSpec:
    """How one scenario behaves (see the module docstring for the formulas)."""

    name: str
    weight: float = 1.0
    base_logit: float = -2.5
    affinity: float = 1.0
    price_weight: float = 0.3
    query: bool = False
    query_bonus: float = 0.0
    query_candidate_share: float = 0.0
    cart_logit: float = -0.5
    purchase_logit: float = -0.5


DEFAULT_SCENARIOS: tuple[ScenarioSpec, ...] = (
    ScenarioSpec("page:home", weight=0.5, base_logit=-2.8, affinity=1.0, price_weight=0.3),
    ScenarioSpec("page:search", weight=0.3, base_logit=-2.4, affinity=0.7, price_weight=0.3, query=True,
                 query_bonus=1.5, query_candidate_share=0.5, cart_logit=0.0, purchase_logit=0.0),
    ScenarioSpec("page:deals", weight=0.2, base_logit=-2.6, affinity=0.6, price_weight=1.2,
                 cart_logit=-0.3, purchase_logit=0.3),
)


@dataclass(frozen=True)
class EnvParams:
    """Every parameter of the synthetic environment; one seed gives one world and one request stream."""

    seed: int = 0
    catalog: CatalogParams = field(default_factory=CatalogParams)
    scenarios: tuple[ScenarioSpec, ...] = DEFAULT_SCENARIOS
    n_users: int = 2_000
    activity_sigma: float = 1.5
    long_tail_max_requests: int = 5
    interest_noise: float = 0.5
    price_sensitivity_sigma: float = 0.5
    brand_bonus: float = 0.5
    n_candidates: int = 100
    slate_size: int = 10
    position_decay: float = 0.8
    repeat_penalty: float = 1.0
    purchased_penalty: float = 4.0
    mean_gap_ms: float = 500.0
    epoch_ms: int = EPOCH_MS
    session_gap_ms: int = 30 * 60_000
    # Request (and so event) ids start with this; empty: ``sim<seed>``. Ids are deterministic per seed, so a
    # second run into the same topics is recognised by the worker as duplicates unless this changes.
    id_prefix: str = ""
    # Drifting preferences: each user's interest moves to a new anchor every this many event-time ms,
    # linearly in between (module docstring). 0: off, the static world.
    drift_period_ms: int = 0

    def validate(self) -> None:
        """ValueError naming the first parameter that is out of range."""
        self.catalog.validate()
        if not self.scenarios:
            raise ValueError("at least one scenario is needed")
        if self.n_users <= 0 or self.slate_size <= 0 or self.n_candidates < self.slate_size:
            raise ValueError("need n_users > 0 and n_candidates >= slate_size > 0")
        if self.n_candidates > self.catalog.n_items:
            raise ValueError("n_candidates cannot exceed the catalog size")
        if self.mean_gap_ms <= 0 or self.epoch_ms <= 0:
            raise ValueError("mean_gap_ms and epoch_ms must be > 0")
        if self.drift_period_ms < 0:
            raise ValueError(f"drift_period_ms must be >= 0 (0 = no drift), got {self.drift_period_ms}")


@dataclass(frozen=True)
class Request:
    """One simulated request: who, where, when, and the candidates the arm must order."""

    index: int
    request_id: str
    user: int
    user_id: str
    scenario: int
    scenario_name: str
    query: str
    query_category: int  # -1 without a query
    ts_ms: int
    session_id: str
    candidates: np.ndarray  # item indices
    long_tail: bool


@dataclass(frozen=True)
class Outcome:
    """What the user did with a shown slate; arrays are per position. Times are absolute event ms."""

    shown: np.ndarray  # item indices, best first
    clicked: np.ndarray  # bool
    carted: np.ndarray  # bool
    purchased: np.ndarray  # bool
    click_ts: np.ndarray  # int64 (meaningful where clicked)
    cart_ts: np.ndarray
    purchase_ts: np.ndarray
    true_ndcg: float  # NDCG@slate of the shown order under the true click probabilities


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Environment:
    """The synthetic world: a catalog, users, a request stream and the click/purchase model."""

    def __init__(self, params: EnvParams | None = None) -> None:
        self.params = params or EnvParams()
        self.params.validate()
        p = self.params
        rng = np.random.default_rng([p.seed, 0])
        self.catalog: Catalog = make_catalog(p.catalog, rng)
        self.user_ids: tuple[str, ...] = tuple(f"user-{u}" for u in range(p.n_users))
        vectors = np.zeros((p.n_users, p.catalog.dim))
        self.interests: list[np.ndarray] = []
        for u in range(p.n_users):
            vectors[u], cats = self._draw_interest(rng)
            self.interests.append(cats)
        # Anchor 0 of every user (the static world's interests); later anchors are drawn when first needed.
        self.user_vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self._anchors: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._last_interest: tuple[tuple[int, int], np.ndarray] = ((-1, -1), self.user_vectors[0])
        self.price_sensitivity = rng.lognormal(0.0, p.price_sensitivity_sigma, size=p.n_users)
        self.favourite_brands = np.zeros((p.n_users, p.catalog.n_brands), dtype=bool)
        for u in range(p.n_users):
            self.favourite_brands[u, rng.choice(p.catalog.n_brands, size=int(rng.integers(1, 4)), replace=False)] = True
        activity = rng.lognormal(0.0, p.activity_sigma, size=p.n_users)
        self.activity = activity / activity.sum()
        self._by_category = self.catalog.by_category()
        weights = np.array([s.weight for s in p.scenarios], dtype=float)
        self._scenario_p = weights / weights.sum()
        # Satiation state (the feedback loop): what each user clicked and bought so far.
        self.clicked: list[set[int]] = [set() for _ in range(p.n_users)]
        self.bought: list[set[int]] = [set() for _ in range(p.n_users)]
        self.item_clicks = np.zeros(p.catalog.n_items, dtype=np.int64)

    # --- the request stream (independent of any arm) ----------------------------------------------
    def plan(self, n_requests: int) -> list[Request]:
        """The first `n_requests` requests of this seed's stream (users, scenarios, times, candidates)."""
        p = self.params
        rng = np.random.default_rng([p.seed, 1])
        users = rng.choice(p.n_users, size=n_requests, p=self.activity)
        counts = np.bincount(users, minlength=p.n_users)
        scenarios = rng.choice(len(p.scenarios), size=n_requests, p=self._scenario_p)
        gaps = rng.exponential(p.mean_gap_ms, size=n_requests).astype(np.int64) + 1
        times = p.epoch_ms + np.cumsum(gaps)
        last_seen: dict[int, int] = {}
        session_no: dict[int, int] = {}
        prefix = p.id_prefix or f"sim{p.seed}"
        out = []
        for j in range(n_requests):
            u, s, ts = int(users[j]), int(scenarios[j]), int(times[j])
            if u not in last_seen or ts - last_seen[u] > p.session_gap_ms:
                session_no[u] = session_no.get(u, 0) + 1
            last_seen[u] = ts
            spec = p.scenarios[s]
            query_cat = int(rng.choice(self.favourite_categories_at(u, ts))) if spec.query else -1
            candidates = self._candidates(rng, query_cat, spec.query_candidate_share)
            out.append(Request(index=j, request_id=f"{prefix}-r{j}", user=u, user_id=self.user_ids[u],
                               scenario=s, scenario_name=spec.name,
                               query=Catalog.category_name(query_cat) if query_cat >= 0 else "",
                               query_category=query_cat, ts_ms=ts, session_id=f"{self.user_ids[u]}/s{session_no[u]}",
                               candidates=candidates, long_tail=bool(counts[u] <= p.long_tail_max_requests)))
        return out

    def _candidates(self, rng: np.random.Generator, query_cat: int, share: float) -> np.ndarray:
        n = self.params.n_candidates
        from_query: np.ndarray = np.empty(0, dtype=np.int64)
        if query_cat >= 0 and share > 0:
            pool = self._by_category[query_cat]
            from_query = rng.choice(pool, size=min(len(pool), round(n * share)), replace=False)
        rest = rng.choice(len(self.catalog), size=n + len(from_query), replace=False)
        rest = rest[~np.isin(rest, from_query)][: n - len(from_query)]
        candidates = np.concatenate([from_query, rest]).astype(np.int64)
        rng.shuffle(candidates)
        return candidates

    # --- the users' interests, over event time ---------------------------------------------------------
    def _draw_interest(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """An interest vector (not normalised) and its favourite categories: 1-3 centroids mixed, plus noise."""
        p = self.params
        cats = rng.choice(p.catalog.n_categories, size=int(rng.integers(1, 4)), replace=False)
        mix = rng.dirichlet(np.ones(len(cats)))
        return mix @ self.catalog.centroids[cats] + p.interest_noise * rng.normal(size=p.catalog.dim), cats

    def anchor(self, user: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The user's interest anchor `k` (unit vector, favourite categories); anchor 0 is `user_vectors[user]`.

        Anchors k >= 1 come from the generator (seed, DRIFT_STREAM, user, k), independent of the arms and of
        the order they are asked for, and are cached.
        """
        if k == 0:
            return self.user_vectors[user], self.interests[user]
        got = self._anchors.get((user, k))
        if got is None:
            vector, cats = self._draw_interest(np.random.default_rng([self.params.seed, DRIFT_STREAM, user, k]))
            got = self._anchors[(user, k)] = (vector / np.linalg.norm(vector), cats)
        return got

    def drift_position(self, ts_ms: int) -> tuple[int, float]:
        """(k, f): event time `ts_ms` lies a fraction f in [0, 1) of the way from anchor k to anchor k + 1."""
        period = self.params.drift_period_ms
        if period <= 0:
            return 0, 0.0
        k, rest = divmod(max(0, int(ts_ms) - self.params.epoch_ms), period)
        return int(k), rest / period

    def interest_at(self, user: int, ts_ms: int) -> np.ndarray:
        """The user's unit interest vector at event time `ts_ms`: between its two neighbouring anchors.

        Without drift (or exactly at an anchor) this is the stored vector itself, bit for bit.
        """
        k, f = self.drift_position(ts_ms)
        start = self.anchor(user, k)[0]
        if f == 0.0:
            return start
        if self._last_interest[0] == (user, ts_ms):  # a request asks several times (logits, cart affinity)
            return self._last_interest[1]
        mixed = (1.0 - f) * start + f * self.anchor(user, k + 1)[0]
        mixed /= max(math.sqrt(float(mixed @ mixed)), 1e-12)
        self._last_interest = ((user, ts_ms), mixed)
        return mixed

    def favourite_categories_at(self, user: int, ts_ms: int) -> np.ndarray:
        """The favourite categories of the user's anchor nearest to `ts_ms` (what a search query is drawn from)."""
        k, f = self.drift_position(ts_ms)
        return self.anchor(user, k + int(f >= 0.5))[1]

    # --- ground truth ------------------------------------------------------------------------------
    def logits(self, request: Request, items: np.ndarray) -> np.ndarray:
        """True click logits of `items` for this request's user, scenario and query, given the user's state.

        The state: what the user clicked and bought so far, and the interest at the request's event time.
        """
        p = self.params
        spec = p.scenarios[request.scenario]
        cat = self.catalog
        u = request.user
        affinity = 3.0 * (cat.vectors[items] @ self.interest_at(u, request.ts_ms))
        logit = (spec.base_logit + spec.affinity * affinity + cat.quality[items]
                 + p.brand_bonus * self.favourite_brands[u, cat.brand[items]]
                 - spec.price_weight * self.price_sensitivity[u] * cat.log_price_rel[items])
        if request.query_category >= 0:
            logit = logit + spec.query_bonus * (cat.category[items] == request.query_category)
        clicked, bought = self.clicked[u], self.bought[u]
        if clicked or bought:
            logit = logit - np.array([p.repeat_penalty * (i in clicked) + p.purchased_penalty * (i in bought)
                                      for i in items.tolist()])
        return logit

    def true_relevance(self, request: Request, items: np.ndarray | None = None) -> np.ndarray:
        """Click probability of each item at the top position (no position bias): the oracle's scores."""
        return _sigmoid(self.logits(request, request.candidates if items is None else items))

    def examination(self, positions: int) -> np.ndarray:
        """Position bias: the chance that positions 0..n-1 are looked at."""
        return (1.0 + np.arange(positions)) ** -self.params.position_decay

    # --- the user's response -----------------------------------------------------------------------
    def respond(self, request: Request, ranked: np.ndarray) -> Outcome:
        """Shows the first slate_size of `ranked` (item indices, best first) and draws what the user does.

        Updates the user's state (clicked, bought) and the global click counts: later requests see them.
        """
        p = self.params
        spec = p.scenarios[request.scenario]
        shown = np.asarray(ranked, dtype=np.int64)[: p.slate_size]
        k = len(shown)
        rng = np.random.default_rng([p.seed, 2, request.index])
        draws = rng.random((3, p.slate_size))[:, :k]
        delays = rng.uniform(size=(3, p.slate_size))[:, :k]
        relevance_all = self.true_relevance(request)
        relevance = self.true_relevance(request, shown)
        clicked = draws[0] < relevance * self.examination(k)
        affinity = 3.0 * (self.catalog.vectors[shown] @ self.interest_at(request.user, request.ts_ms))
        carted = clicked & (draws[1] < _sigmoid(spec.cart_logit + 0.5 * affinity))
        price_term = 0.5 * self.price_sensitivity[request.user] * self.catalog.log_price_rel[shown]
        purchased = carted & (draws[2] < _sigmoid(spec.purchase_logit - price_term))
        click_ts = request.ts_ms + (2_000 + delays[0] * 58_000).astype(np.int64)
        cart_ts = click_ts + (5_000 + delays[1] * 115_000).astype(np.int64)
        purchase_ts = cart_ts + (10_000 + delays[2] * 590_000).astype(np.int64)
        u = request.user
        for i in shown[clicked].tolist():
            self.clicked[u].add(i)
            self.item_clicks[i] += 1
        self.bought[u].update(shown[purchased].tolist())
        return Outcome(shown=shown, clicked=clicked, carted=carted, purchased=purchased, click_ts=click_ts,
                       cart_ts=cart_ts, purchase_ts=purchase_ts,
                       true_ndcg=ndcg_of(relevance, relevance_all, k))


def ndcg_of(shown_gains: np.ndarray, all_gains: np.ndarray, k: int) -> float:
    """NDCG@k of a shown order against the best order of all candidates, with graded gains."""
    k = min(k, len(shown_gains))
    if k == 0:
        return 0.0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = float(np.sort(all_gains)[::-1][:k] @ discount)
    return float(shown_gains[:k] @ discount) / ideal if ideal > 0 else 0.0
