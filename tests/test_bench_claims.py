"""The papers' claims as the benchmarks mark them: holds only for a positive, significant difference."""

from __future__ import annotations

import numpy as np

from streamrank.bench.claims import claim, claims_lines
from streamrank.bench.retrieval import micrec_claims
from streamrank.bench.scenario_claims import claims as scenario_claims
from streamrank.bench.scenario_claims import seed_mean_tests


def test_a_claim_holds_only_when_positive_and_significant() -> None:
    assert claim("a", 0.01, 0.001)["holds"]
    assert not claim("b", -0.01, 0.001)["holds"] and not claim("c", 0.01, 0.2)["holds"]
    assert not claim("d", 0.01, float("nan"))["holds"]
    lines = claims_lines([claim("a", 0.01, 0.001), claim("e", 0.02, 0.5, detail="why")])
    assert "| a | +0.0100 | 1.00e-03 | holds |" in lines and "does not hold" in lines[-1] and "(why)" in lines[-1]


def _scenario_world(saml_better_in: set[int]) -> tuple[dict, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Three scenarios, two seeds: BST's scores are noisy; SAML's are cleaner in the scenarios named."""
    rng = np.random.default_rng(0)
    n, scen = 6000, ("s0", "s1", "s2")
    codes = np.repeat(np.arange(3), n // 3)
    y = (rng.random(n) < 0.5).astype(np.float32)
    full = {}
    for seed in (0, 1):
        full[("bst", seed)] = y + rng.normal(0, 1.5, n)
        noise = np.where(np.isin(codes, list(saml_better_in)), 0.8, 1.5)
        full[("saml", seed)] = y + rng.normal(0, 1, n) * noise
    return full, y, codes, scen


def test_saml_claims_follow_the_per_scenario_evidence() -> None:
    full, y, codes, scen = _scenario_world({0, 1, 2})
    tests = seed_mean_tests(full, y, codes, scen)
    assert tests["seeds"] == [0, 1] and tests["overall"]["diff"] > 0
    overall, most = scenario_claims(tests)
    assert overall["holds"] and most["holds"] and "significantly in 3" in most["detail"]
    full, y, codes, scen = _scenario_world({0})  # better in one scenario of three: not "most"
    overall, most = scenario_claims(seed_mean_tests(full, y, codes, scen))
    assert not most["holds"]
    assert seed_mean_tests({("saml", 0): y}, y, codes, scen) == {}  # no BST: nothing to claim


def test_micrec_claims_read_the_paired_tests_against_the_base() -> None:
    pv = {"micrec": {"hit@50": {"diff": 0.01, "p": 1e-4}, "hit@500": {"diff": 0.002, "p": 0.3}}}
    c50, c500 = micrec_claims(pv, "base")
    assert c50["holds"] and not c500["holds"] and "HIT@500" in c500["claim"]
    assert micrec_claims(pv, "fm") == [] and micrec_claims({}, "base") == []
