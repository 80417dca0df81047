"""The guardrail's evidence rule: it blocks a candidate only when enough samples show a significant drop;
too little evidence (few samples of a class, one class only) publishes. Plus its standard error against a
bootstrap on real scores, and the publisher refusing and accepting through the registry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from streamrank.config import Settings
from streamrank.registry.guardrail import Evidence, auc_standard_error, refusal
from streamrank.registry.publisher import RegistryPublisher
from streamrank.train.metrics import auc

LIVE = Evidence(0.75, 5000, 5000)


def _refuse(candidate: Evidence, live: Evidence | None = LIVE) -> str | None:
    return refusal(candidate, live, margin=0.02, min_per_class=50, alpha=0.05)


def test_a_clear_drop_on_enough_samples_blocks() -> None:
    reason = _refuse(Evidence(0.60, 2000, 2000))
    assert reason is not None and "below the live" in reason and "p =" in reason


def test_too_little_evidence_publishes() -> None:
    assert _refuse(Evidence(float("nan"), 0, 1800)) is None, "one class only: AUC undefined, publish"
    assert _refuse(Evidence(0.40, 30, 1800)) is None, "fewer than 50 positives: publish"
    assert _refuse(Evidence(0.40, 1800, 49)) is None, "fewer than 50 negatives: publish"


def test_a_drop_within_the_noise_publishes() -> None:
    # 0.70 is 0.03 below the bar of 0.73, but on 60+/60- samples the AUC's standard error is about 0.05.
    assert _refuse(Evidence(0.70, 60, 60)) is None
    # The same shortfall on 5000+/5000- samples is significant.
    assert _refuse(Evidence(0.70, 5000, 5000)) is not None


def test_within_the_margin_or_nothing_live_publishes() -> None:
    assert _refuse(Evidence(0.735, 5000, 5000)) is None
    assert _refuse(Evidence(0.50, 5000, 5000), live=None) is None
    assert _refuse(Evidence(0.50, 5000, 5000), live=Evidence(float("nan"), 0, 10)) is None


def test_versions_without_counts_are_judged_on_the_margin() -> None:
    old_live = Evidence.from_metrics({"prequential_auc": 0.75})
    assert not old_live.counted
    assert _refuse(Evidence(0.70, 5000, 5000), live=old_live) is not None
    assert _refuse(Evidence.from_metrics({"prequential_auc": 0.70}), live=old_live) is not None
    assert _refuse(Evidence.from_metrics({"prequential_auc": 0.74}), live=old_live) is None


def test_the_standard_error_matches_a_bootstrap() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.3
    s = rng.normal(size=3000) + 1.0 * y  # binormal scores: AUC about 0.76
    a = auc(s, y.astype(np.float32))
    boot = []
    for _ in range(300):
        i = rng.integers(0, len(y), len(y))
        boot.append(auc(s[i], y[i].astype(np.float32)))
    se = auc_standard_error(a, float(y.sum()), float((~y).sum()))
    assert math.isclose(se, float(np.std(boot)), rel_tol=0.2), (se, float(np.std(boot)))


def test_the_publisher_applies_the_rule(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), guardrail_margin=0.02)
    publisher = RegistryPublisher(settings, "dnn", announce=False)
    files = {"model.safetensors": b"x"}

    def offer(a: float, pos: int, neg: int) -> bool:
        return publisher(files, {"metrics": {"prequential_auc": a, "prequential_positives": pos,
                                             "prequential_negatives": neg}})

    assert offer(0.75, 3000, 3000)
    assert not offer(0.60, 3000, 3000) and "below the live" in publisher.blocked[-1]["reason"]
    assert offer(float("nan"), 0, 2000), "a window of one class publishes"
    assert offer(0.45, 20, 2000), "so does one with too few positives"
    assert not offer(0.60, 3000, 3000), "and neither lowered the bar: still judged against 0.75"
    assert offer(0.74, 3000, 3000)
    assert len(publisher.blocked) == 2
