"""The training benchmark: a tiny throughput run end to end, and the freshness bookkeeping on hand-made inputs."""

from __future__ import annotations

import json
from pathlib import Path

from streamrank.bench.freshness import LiveTraffic, freshness_ms, write_freshness
from streamrank.bench.train import main
from streamrank.config import Settings
from streamrank.events.validate import check_event
from streamrank.v1 import events_pb2


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


def test_freshness_is_the_first_covering_version_minus_the_impression_time() -> None:
    versions = [
        ({"0": 10, "1": 2}, 2000),  # given out of order, and with JSON's string keys
        ({0: 5, 1: 2}, 1000),
        ({0: 12, 1: 3, 2: 1}, 3000),
    ]
    samples = [
        (0, 4, 100),    # covered by the first version (offset 4 < next offset 5)
        (0, 5, 100),    # offset 5 is not in the first version's 5 (next offset): the second covers it
        (0, 9, 1500),
        (1, 2, 0),      # the first two versions stop before offset 2 of partition 1
        (2, 0, 2500),   # partition 2 appears only in the third version
        (2, 1, 2500),   # no version covers it
        (3, 0, 0),      # a partition no version mentions
    ]
    assert freshness_ms(samples, versions) == [900, 1900, 500, 3000, 500, None, None]
    assert freshness_ms(samples, []) == [None] * len(samples)
    assert freshness_ms([], versions) == []


def test_freshness_takes_the_first_version_in_time_even_if_a_later_one_lists_less() -> None:
    versions = [({0: 8}, 1000), ({0: 6}, 2000), ({0: 9}, 3000)]
    assert freshness_ms([(0, 7, 0), (0, 8, 0)], versions) == [1000, 3000]


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


def test_write_freshness_renders_a_table(tmp_path: Path) -> None:
    run = {"run": 1, "events_per_s": 800.0, "samples": 1000, "p50_ms": 3500.0, "p95_ms": 5000.0, "max_ms": 7000.0,
           "not_covered": 2, "to_topic_p50_ms": 2400.0, "to_version_p50_ms": 1100.0, "versions": 30, "blocked": 1}
    result = {"model": "din", "runs": [run], "rate": 800.0, "warmup_s": 30.0, "duration_s": 60.0,
              "settings": {"attribution_window_ms": 2000, "batch_within_s": 0.2, "train_batch_size": 1024,
                           "train_batch_within_s": 0.5, "checkpoint_every_s": 2.0, "publish_every_s": 2.0,
                           "guardrail_margin": 0.02},
              "median": {k: run[k] for k in ("p50_ms", "p95_ms", "max_ms", "to_topic_p50_ms",
                                             "to_version_p50_ms", "events_per_s")},
              "machine": {"cpus": 2, "python": "3.11", "torch": "2"}, "date": "2026-01-01"}
    md = write_freshness(result, "python -m streamrank.bench.train --only freshness", tmp_path).read_text()
    assert "| **median** | 800 | | **3.50 s** | **5.00 s** |" in md
    assert json.loads((tmp_path / "freshness.json").read_text())["command"].endswith("--only freshness")
