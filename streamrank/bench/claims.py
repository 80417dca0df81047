"""A paper's claim checked on a benchmark result: the measured difference, its p-value, holds / does not hold.

Every model benchmark ends with the claims of its paper (issue 18): `claim` makes one record (a claim holds
when its difference is positive with p < `ALPHA`), `claims_lines` renders them as one markdown table. The
benchmark-specific claims live beside their benchmarks (`ranking_claims`, `scenario_claims`,
`retrieval.micrec_claims`).
"""

from __future__ import annotations

import math

ALPHA = 0.05


def claim(text: str, diff: float, p: float, **extra: object) -> dict:
    """One claim's JSON record: `holds` when `diff` > 0 and `p` < ALPHA (extra keys are kept, e.g. a detail)."""
    return {"claim": text, "diff": float(diff), "p": float(p),
            "holds": bool(diff > 0 and math.isfinite(p) and p < ALPHA), **extra}


def claims_lines(items: list[dict]) -> list[str]:
    """The claims as a markdown table (a claim's `detail`, or its gain against the overall gain, in brackets)."""
    lines = ["| claim | difference | p | holds |", "|---|---|---|---|"]
    for c in items:
        extra = (f" ({c['detail']})" if c.get("detail") else
                 f" (gain {c['gain']:+.4f} vs {c['gain_full']:+.4f} overall)" if "gain" in c else "")
        p = "-" if not math.isfinite(c["p"]) else f"{c['p']:.2e}"
        lines.append(f"| {c['claim']} | {c['diff']:+.4f}{extra} | {p} | {'holds' if c['holds'] else 'does not hold'} |")
    return lines
