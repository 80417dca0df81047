"""The whole system, small: broker, worker, two online trainers, retrieval + index, scorer, and an A/B replay.

This is `streamrank demo` with a short warm-up and replay and a fast publication cadence, on the test
session's broker. It checks what an operator would look at: the replay got answers from the scorer, the
models kept learning from the replayed traffic (the versions the scorer served advanced during the replay),
and the A/B report was produced with finite metrics for both arms.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from streamrank.demo import DemoPlan, run_demo


@pytest.mark.slow
def test_demo_end_to_end_serves_advancing_versions_and_reports(broker, tmp_path: Path, capsys) -> None:
    plan = DemoPlan(warm_ratings=6_000, replay_ratings=1_500, retrieval_epochs=1, data_dir=str(tmp_path / "demo"),
                    report_dir=str(tmp_path / "report"), publish_every_s=2.0, min_samples_to_publish=200,
                    guardrail_margin=1.0, topic_prefix=f"e2e-{tmp_path.name}.")
    assert run_demo(plan, bootstrap_servers=broker.bootstrap_servers) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {a["arm"] for a in report["summary"]} == {"treatment", "control"}
    for arm in report["summary"]:
        assert arm["requests"] > 300
        assert math.isfinite(arm["HIT@10"]["value"]) and math.isfinite(arm["session AUC"]["value"])
    assert (tmp_path / "report" / "metric_over_time.png").stat().st_size > 1000
    assert (tmp_path / "report" / "versions_over_time.png").stat().st_size > 1000
    out = capsys.readouterr().out
    served = json.loads(out.split("model versions served during the replay: ")[1].splitlines()[0].replace("'", '"'))
    assert -1 not in served["treatment"] and -1 not in served["control"], served  # no fallback: the scorer answered
    assert len(served["treatment"]) >= 2 or len(served["control"]) >= 2, served  # a new version went live mid-replay
    assert "HIT@10" in out and "p = " in out
