"""The SAML paper's claims, each marked holds / does not hold on a `bench scenario` result.

- SAML > BST overall: test AUC of the seed-averaged predictions of each model (the same seeds), DeLong's
  test on the shared test rows.
- SAML > BST in most scenarios: the same test within each scenario's test rows; the claim holds when SAML
  is significantly above BST in more than half of the scenarios. Its p is a one-sided sign test on the
  directions across scenarios (scipy.stats.binomtest), its difference the mean per-scenario AUC gap.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from streamrank.bench.claims import ALPHA, claim
from streamrank.train.metrics import delong_test

MODEL, BASE = "saml", "bst"


def seed_mean_tests(full: dict[tuple[str, int], np.ndarray], labels: np.ndarray, codes: np.ndarray,
                    scenarios: tuple[str, ...]) -> dict:
    """SAML against BST on predictions averaged over their common seeds: (difference, p) overall and per
    scenario; empty when either model or a common seed is missing."""
    seeds = sorted({s for m, s in full if m == MODEL} & {s for m, s in full if m == BASE})
    if not seeds:
        return {}
    mine = np.mean([full[(MODEL, s)] for s in seeds], 0)
    base = np.mean([full[(BASE, s)] for s in seeds], 0)
    per = {}
    for k, name in enumerate(scenarios):
        m = codes == k
        per[name] = dict(zip(("diff", "p"), delong_test(labels[m], mine[m], base[m]), strict=True))
    overall = dict(zip(("diff", "p"), delong_test(labels, mine, base), strict=True))
    return {"seeds": seeds, "overall": overall, "scenarios": per}


def claims(tests: dict) -> list[dict]:
    """The claims of the module docstring from `seed_mean_tests`' result."""
    if not tests:
        return []
    o, per = tests["overall"], tests["scenarios"]
    out = [claim("SAML > BST overall (AUC of seed-averaged predictions, DeLong)", o["diff"], o["p"])]
    diffs = [t["diff"] for t in per.values() if np.isfinite(t["diff"])]
    above = sum(d > 0 for d in diffs)
    sig = sum(t["diff"] > 0 and t["p"] < ALPHA for t in per.values())
    p = stats.binomtest(above, len(diffs), 0.5, alternative="greater").pvalue if diffs else float("nan")
    most = claim("SAML > BST in most scenarios", float(np.mean(diffs)) if diffs else float("nan"), p,
                 detail=f"mean gap; above in {above} of {len(per)}, significantly in {sig}")
    most["holds"] = bool(sig > len(per) / 2)
    return [*out, most]
