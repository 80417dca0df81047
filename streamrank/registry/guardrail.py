"""The publication guardrail's decision: block a candidate only on enough evidence that it regressed.

A candidate version carries the prequential AUC of the predictions it made since the last publication and
how many positives and negatives they held; the live version carries the same. The candidate is refused
when both hold:
  - it is more than `guardrail_margin` below the live version's AUC, and
  - that shortfall is significant: a one-sided z-test of AUC_candidate < AUC_live - margin at level
    `guardrail_alpha`, with each AUC's standard error from Hanley & McNeil (Radiology 1982), the two
    windows being disjoint sets of samples.
Too little evidence publishes, it does not block: a window with fewer than `guardrail_min_per_class`
positives or negatives (or only one class, where AUC is undefined) says nothing about the model, and a
trainer whose every version is refused would freeze the served model. Versions without class counts
(published before the counts existed) are compared on the margin alone.

A version published on too little evidence must not lower the bar for the next one, so each version
records the reference its successor is judged against (`reference`): its own window when that was enough
evidence, otherwise the reference it inherited.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.stats import norm


@dataclass(frozen=True)
class Evidence:
    """A window's AUC with the class counts it was computed on (NaN counts: unknown)."""

    auc: float
    positives: float
    negatives: float

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> Evidence:
        """Reads prequential_auc / prequential_positives / prequential_negatives from a version's metrics."""
        def num(key: str) -> float:
            value = metrics.get(key, float("nan"))
            return float(value) if isinstance(value, int | float) else float("nan")

        return cls(num("prequential_auc"), num("prequential_positives"), num("prequential_negatives"))

    def to_metrics(self) -> dict[str, float]:
        """Inverse of `from_metrics`."""
        return {"prequential_auc": self.auc, "prequential_positives": self.positives,
                "prequential_negatives": self.negatives}

    @property
    def counted(self) -> bool:
        """Whether the class counts are known."""
        return math.isfinite(self.positives) and math.isfinite(self.negatives)


def auc_standard_error(auc: float, positives: float, negatives: float) -> float:
    """Hanley & McNeil (1982) standard error of an AUC over `positives` x `negatives` pairs.

    Written out because neither scipy nor scikit-learn ships it; the formula is the paper's eq. 2 with its
    exponential-model approximations Q1 = A / (2 - A), Q2 = 2A^2 / (1 + A).
    """
    a = min(max(auc, 0.0), 1.0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (positives * negatives)
    return math.sqrt(max(var, 0.0))


def sufficient(evidence: Evidence, min_per_class: int) -> bool:
    """Whether a window can judge a model: a finite AUC and, where counted, enough of each class."""
    if not math.isfinite(evidence.auc):
        return False
    return not evidence.counted or min(evidence.positives, evidence.negatives) >= max(min_per_class, 1)


def reference(candidate: Evidence, live_reference: Evidence | None, min_per_class: int) -> Evidence | None:
    """What the version after `candidate` (once published) is judged against."""
    return candidate if sufficient(candidate, min_per_class) else live_reference


def refusal(candidate: Evidence, live: Evidence | None, margin: float, min_per_class: int,
            alpha: float) -> str | None:
    """Why the candidate must not go live, or None to publish it (see the module docstring)."""
    if not sufficient(candidate, min_per_class):
        return None  # too little evidence (one class only, or few of one): publish
    if live is None or not math.isfinite(live.auc):
        return None  # nothing to compare with
    bar = live.auc - margin
    if candidate.auc >= bar:
        return None
    if candidate.counted:
        se = auc_standard_error(candidate.auc, candidate.positives, candidate.negatives)
        if live.counted and min(live.positives, live.negatives) >= 1:
            se = math.hypot(se, auc_standard_error(live.auc, live.positives, live.negatives))
        p = float(norm.sf((bar - candidate.auc) / se)) if se > 0 else 0.0
        if p >= alpha:
            return None  # below the bar, but not significantly: publish
        return (f"prequential AUC {candidate.auc:.4f} is more than {margin} below the live version's "
                f"{live.auc:.4f} (p = {p:.2g} on {candidate.positives:.0f}+/{candidate.negatives:.0f}- samples)")
    return f"prequential AUC {candidate.auc:.4f} is more than {margin} below the live version's {live.auc:.4f}"
