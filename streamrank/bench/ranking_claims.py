"""The AW-MoE paper's claims, each marked holds / does not hold on a `bench ranking` result.

- The ordering AW-MoE & CL > AW-MoE > Category-MoE > DIN > DNN: each step a positive session-AUC difference
  with p < `claims.ALPHA` (paired t-test across test sessions against the row above).
- CL's gain larger on short histories than overall: the per-session gain g = AUC(AW-MoE & CL) - AUC(AW-MoE).
  On a simulated long tail (the same sessions with histories cut to K) the test is paired: g_K - g_full per
  session. On the long-tail-1 users (a subset of the sessions) it is Welch's t-test of g on those sessions
  against g on the other sessions.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats

from streamrank.bench.claims import claim
from streamrank.train.metrics import paired_test

ORDER = ("dnn", "din", "category_moe", "aw_moe", "aw_moe_cl")


def _mean_sessions(arrs: list[np.ndarray]) -> np.ndarray:
    return np.nanmean(np.stack(arrs), 0)


def cl_gain_contrasts(cl: dict[str, list[np.ndarray]], base: dict[str, list[np.ndarray]],
                      longtail_in_full: np.ndarray | None, caps: list[int]) -> dict[str, dict[str, float]]:
    """Whether CL's per-session AUC gain is larger on short histories than on the full test set.

    `cl` / `base`: the session arrays of AW-MoE & CL and AW-MoE ("subset/metric" -> per seed);
    `longtail_in_full`: which full-set sessions (sorted ids) are long-tail-1 sessions. Returns, per view,
    the gain there, the gain it is set against, the difference and its p-value.
    """
    key = "session_auc"
    gain_full = _mean_sessions(cl[f"full/{key}"]) - _mean_sessions(base[f"full/{key}"])
    out: dict[str, dict[str, float]] = {}
    for cap in caps:
        name = f"capped{cap}_full/{key}"
        if name not in cl or name not in base:
            continue
        gain = _mean_sessions(cl[name]) - _mean_sessions(base[name])
        diff, p = paired_test(gain, gain_full)
        out[f"capped{cap}_full"] = {"gain": float(np.nanmean(gain)), "gain_full": float(np.nanmean(gain_full)),
                                    "diff": diff, "p": p}
    if longtail_in_full is not None and longtail_in_full.any() and (~longtail_in_full).any():
        tail, rest = gain_full[longtail_in_full], gain_full[~longtail_in_full]
        tail, rest = tail[np.isfinite(tail)], rest[np.isfinite(rest)]
        if len(tail) > 1 and len(rest) > 1:
            res = stats.ttest_ind(tail, rest, equal_var=False)
            out["longtail_few"] = {"gain": float(tail.mean()), "gain_full": float(np.nanmean(gain_full)),
                                   "diff": float(tail.mean() - rest.mean()), "p": float(res.pvalue)}
    return out


def claims(section: dict) -> list[dict]:
    """The claims of the module docstring, from a result's "chronological" section."""
    pv, out = section["pvalues"], []
    for above, row in itertools.pairwise(ORDER):
        t = pv.get(f"{row}|{above}", {}).get("full/session_auc")
        if t is not None:
            out.append(claim(f"{row} > {above} (session AUC, full test set)", t["diff"], t["p"]))
    for view, t in section.get("cl_gain_vs_full", {}).items():
        label = ("long-tail-1 users (Welch, vs the other users)" if view == "longtail_few"
                 else f"histories cut to {view.removeprefix('capped').removesuffix('_full')} (paired)")
        out.append(claim(f"CL's gain larger on {label} than overall", t["diff"], t["p"], gain=t["gain"],
                         gain_full=t["gain_full"]))
    return out
