"""The training benchmark: a tiny throughput run end to end, and the freshness bookkeeping on hand-made inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrank.bench.freshness import LiveTraffic, SampleRow, measured_rows, served_ms
from streamrank.bench.freshness_report import add_derived_window_hour, write_freshness
from streamrank.bench.freshness_served import ServedAt, first_covering
from streamrank.bench.train import main
from streamrank.config import Settings
from streamrank.events.validate import check_event
from streamrank.v1 import events_pb2, features_pb2


def test_throughput_part_writes_positive_figures(tmp_path: Path) -> None:
    code = main(["--only", "throughput", "--models", "dnn,din", "--ratings", "2000", "--reps", "1",
                 "--warmup-batches", "1", "--batches", "2", "--batch-size", "128", "--threads", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "train-throughput.json").read_text())
    assert set(result["models"]) == {"dnn", "din"}
    for model in result["models"].values():
        assert model["median"] > 0 and len(model["runs"]) == 1
        assert model["ms_per_batch"] > 0 and model["parts_ms"]["tensorize"] > 0
    assert result["threads"] == 1 and result["batch_size"] == 128 and result["mean_history"] > 0
    assert "--only throughput" in result["command"]
    md = (tmp_path / "train-throughput.md").read_text()
    assert "| DNN |" in md and "| DIN |" in md and result["command"] in md
    assert not (tmp_path / "freshness.md").exists()


def test_the_first_covering_version_is_found_per_partition() -> None:
    versions = [
        ({"0": 10, "1": 2}, 2000, 2),  # given out of order, and with JSON's string keys
        ({0: 5, 1: 2}, 1000, 1),
        ({0: 12, 1: 3, 2: 1}, 3000, 3),
    ]
    samples = [
        (0, 4),    # covered by the first version (offset 4 < next offset 5)
        (0, 5),    # offset 5 is not in the first version's 5 (next offset): the second covers it
        (0, 9),
        (1, 2),    # the first two versions stop before offset 2 of partition 1
        (2, 0),    # partition 2 appears only in the third version
        (2, 1),    # no version covers it
        (3, 0),    # a partition no version mentions
    ]
    assert first_covering(samples, versions) == [(1000, 1), (2000, 2), (2000, 2), (3000, 3), (3000, 3), None, None]
    assert first_covering(samples, []) == [None] * len(samples)
    assert first_covering([], versions) == []


def test_the_first_version_in_time_covers_even_if_a_later_one_lists_less() -> None:
    versions = [({0: 8}, 1000, 1), ({0: 6}, 2000, 2), ({0: 9}, 3000, 3)]
    assert first_covering([(0, 7), (0, 8)], versions) == [(1000, 1), (3000, 3)]


def test_live_traffic_is_valid_and_clicks_follow_their_impressions() -> None:
    traffic = LiveTraffic(rate=3000, warmup_s=0.0, duration_s=0.3, tail_s=0.3, click_delay_s=0.2,
                          ready=lambda: True)
    events = list(traffic)
    settings = Settings()
    for e in events:
        check_event(e, settings)
    impressions = {e.request_id: e.ts_ms for e in events if e.type == events_pb2.IMPRESSION}
    clicks = [e for e in events if e.type == events_pb2.CLICK]
    assert traffic.requests == len(impressions) > 100 and traffic.clicks == len(clicks) > 0
    for c in clicks:
        assert 0 <= c.ts_ms - impressions[c.request_id] <= 300
    assert traffic.measure_end_ms - traffic.measure_start_ms == 300
    assert 0.5 * 3000 * 0.6 < len(events) < 1.5 * 3000 * 0.6


def test_served_freshness_is_the_first_answer_of_the_first_covering_version() -> None:
    versions = [({0: 5}, 1000, 3), ({"0": 9}, 2000, 4), ({0: 12}, 3000, 6)]  # v5 was blocked: never published
    assert first_covering([(0, 4), (0, 5), (0, 11), (0, 12), (1, 0)], versions) == [
        (1000, 3), (2000, 4), (3000, 6), None, None]
    served_at = ServedAt([(1500, 3), (1100, 0), (2600, 4), (2400, 3), (3900, 6)])  # out of order, as gathered
    assert [served_at(v) for v in (1, 3, 4, 5, 6, 7)] == [1500, 1500, 2600, 3900, 3900, None]
    row = SampleRow(0, 4, 700, 800, features_pb2.EMISSION_IMPRESSION, "r1", False, 700)
    late = SampleRow(0, 11, 900, 950, features_pb2.EMISSION_IMPRESSION, "r2", False, 900)
    assert served_ms([(row, 700), (late, 900)], versions, served_at) == [(300, 800), (2100, 3000)]
    assert served_ms([(row, 700)], versions, ServedAt([])) == [None], "no answer yet: not served"


def test_measured_rows_pick_each_policys_first_learnable_emission() -> None:
    imp, pos, closed = (features_pb2.EMISSION_IMPRESSION, features_pb2.EMISSION_POSITIVE,
                        features_pb2.EMISSION_WINDOW_CLOSED)
    rows = [SampleRow(0, 0, 100, 0, imp, "r1", False, 100), SampleRow(0, 1, 100, 0, pos, "r1", True, 400),
            SampleRow(0, 2, 100, 0, closed, "r1", True, 2100), SampleRow(0, 3, 5000, 0, imp, "r9", False, 5000)]
    every, positives = measured_rows(rows, "fake_negative", {}, 0, 1000)
    assert every == [(rows[0], 100)] and positives == [(rows[1], 400)]
    every, positives = measured_rows(rows, "window", {"r1": 350}, 0, 1000)
    assert every == [(rows[2], 100)] and positives == [(rows[2], 350)], "the click time as the traffic sent it"


def _case(window_ms: int, served: float) -> dict:
    keys = ("served_p50_s", "served_p95_s", "positives_served_p50_s", "positives_served_p95_s", "p50_s", "p95_s",
            "pickup_p50_s")
    run = {"run": 1, "samples": 1000, "not_covered": 0, "positives": 90, "served_p50_ms": served * 1000,
           "served_p95_ms": 2000 * served, "positives_served_p95_ms": 1500 * served, "versions": 30, "blocked": 1,
           "probes": 900}
    return {**dict.fromkeys(keys, served), "events_per_s": 800.0, "attribution_window_ms": window_ms,
            "derived": False, "runs": [run]}


def test_write_freshness_renders_every_case_and_derives_the_hour_window(tmp_path: Path) -> None:
    result = {"model": "din", "rate": 800.0, "warmup_s": 30.0, "duration_s": 60.0, "runs": 1,
              "policies": {"fake_negative": {"window_3600s": _case(3_600_000, 2.5)},
                           "window": {"window_2s": _case(2000, 4.0)}},
              "settings": {"batch_within_s": 0.2, "train_batch_size": 1024, "train_batch_within_s": 0.5,
                           "checkpoint_every_s": 2.0, "publish_every_s": 2.0, "serve_poll_s": 0.25},
              "machine": {"cpus": 2, "python": "3.11", "torch": "2"}, "date": "2026-01-01"}
    add_derived_window_hour(result)
    hour = result["policies"]["window"]["window_3600s"]
    assert hour["derived"] and hour["positives_served_p95_s"] == pytest.approx(4.0 + 3598)
    md = write_freshness(result, "python -m streamrank.bench.train --only freshness", tmp_path).read_text()
    assert "| fake_negative | 3600 s | 2.50 s | 2.50 s | 2.50 s | **2.50 s** |" in md
    assert "| window | 3600 s (derived) | 3,602 s |" in md
    saved = json.loads((tmp_path / "freshness.json").read_text())
    assert saved["command"].endswith("--only freshness")
    assert saved["policies"]["fake_negative"]["window_3600s"]["positives_served_p95_s"] == 2.5
