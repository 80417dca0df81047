"""The scale-out benchmark's pieces that need no broker: sample comparison, options, the report's keys."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from streamrank.bench import stream_scaling


def test_shared_counts_common_samples_with_multiplicity() -> None:
    a = Counter({b"x": 2, b"y": 1})
    b = Counter({b"x": 1, b"y": 1, b"z": 5})
    assert stream_scaling.shared(a, b) == 2
    assert stream_scaling.shared(a, a) == 3


@pytest.mark.parametrize("workers", ["0", "1,9", "two", ""])
def test_bad_worker_counts_are_refused(workers: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        stream_scaling.main(["--workers", workers, "--no-write"])
    assert err.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_report_keeps_the_issue_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_scaling, "DOCS", tmp_path)
    rows = {str(n): {"workers": n, "events_per_s": 1000.0 / n, "cpu_s_per_million": 200.0 * n,
                     "samples_equal_to_first": None if n == 1 else 1.0} for n in (1, 2, 3)}
    result = {"dataset": "ml-1m", "ratings": 10, "events": 36, "partitions": 8, "workers": rows,
              "handoff_s": {"changelog": 3.5, "replay": 12.5},
              "machine": {"cpus": 2, "python": "3.11", "platform": "x"}, "date": "2026-12-07"}
    md = stream_scaling.write(result, "python -m streamrank.bench.stream_scaling")
    data = json.loads((tmp_path / "stream-scaling.json").read_text())
    for n in ("1", "2", "3"):
        assert data["workers"][n]["events_per_s"] > 0 and data["workers"][n]["cpu_s_per_million"] > 0
    assert data["handoff_s"] == {"changelog": 3.5, "replay": 12.5}
    text = md.read_text()
    assert "| 1 | 1,000 | 200 | reference |" in text and "| 3 | 333 | 600 | 1.000 |" in text
    assert "restored from the state changelog 3.5 s; rebuilt by replaying the events topic" in text
    assert "(`changelog=False`) 12.5 s" in text
