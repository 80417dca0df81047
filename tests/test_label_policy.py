"""Label policies in the worker: fake_negative emits an impression at once, again when clicked, and at its
window's close; every emission carries the same point-in-time features. In-process over real RocksDB, and a
real worker process killed with SIGKILL between the two emissions on the embedded broker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from streamrank.config import Settings
from streamrank.events.producer import produce_events
from streamrank.pipeline import (
    end_offsets,
    processed_through,
    read_status,
    read_topic,
    start_worker,
    stop_worker,
    wait_caught_up,
)
from streamrank.stream.processor import BatchProcessor, Record
from streamrank.stream.store import StateStore
from streamrank.topics import ensure_topics
from streamrank.v1 import events_pb2, features_pb2
from tests.streamtools import log_path
from tests.test_processor import BUY, CLICK, IMP, NOW, T0, WINDOW, Feed, event, make_settings

FN = features_pb2.LABEL_POLICY_FAKE_NEGATIVE
E_IMP, E_POS, E_CLOSED = (features_pb2.EMISSION_IMPRESSION, features_pb2.EMISSION_POSITIVE,
                          features_pb2.EMISSION_WINDOW_CLOSED)


def _decode(result_samples: list[tuple[bytes, bytes]]) -> list[features_pb2.TrainingSample]:
    return [features_pb2.TrainingSample.FromString(v) for _, v in result_samples]


def _features(s: features_pb2.TrainingSample) -> bytes:
    """The sample without what differs between its emissions (labels, emission kind and time)."""
    copy = features_pb2.TrainingSample()
    copy.CopyFrom(s)
    copy.ClearField("labels")
    copy.ClearField("emission")
    copy.ClearField("emitted_ts_ms")
    return copy.SerializeToString(deterministic=True)


def _labels(s: features_pb2.TrainingSample) -> tuple[bool, bool, bool]:
    return s.labels.click, s.labels.add_to_cart, s.labels.purchase


def test_a_click_after_an_impression_yields_two_emissions_with_identical_features(tmp_path: Path) -> None:
    settings = make_settings(label_policy="fake_negative")
    store = StateStore(tmp_path / "state")
    proc = BatchProcessor(settings, store, now_ms=NOW)
    feed = Feed(settings)

    def run(*values: bytes) -> list[features_pb2.TrainingSample]:
        result = proc.process([feed(v) for v in values])
        proc.commit(result)
        return _decode(result.samples)

    shown = run(event("e1", "u1", "a", IMP, T0, request_id="r1", position=0, item={"category": "c1"}),
                event("e2", "u1", "b", IMP, T0, request_id="r1", position=1, item={"category": "c2"}))
    assert [(s.sample_id, s.emission, s.label_policy, s.emitted_ts_ms) for s in shown] == [
        ("e1", E_IMP, FN, T0), ("e2", E_IMP, FN, T0)]
    assert not any(any(_labels(s)) for s in shown), "a provisional emission has every label false"
    clicked = run(event("c1", "u1", "a", CLICK, T0 + 200, request_id="r1"))
    assert [(s.sample_id, s.emission, _labels(s), s.emitted_ts_ms) for s in clicked] == [
        ("e1", E_POS, (True, False, False), T0 + 200)]
    assert _features(clicked[0]) == _features(shown[0])
    assert run(event("c2", "u1", "a", CLICK, T0 + 300, request_id="r1")) == [], "a second click sets nothing new"
    bought = run(event("p1", "u1", "a", BUY, T0 + 400, request_id="r1"))
    assert [(s.emission, _labels(s)) for s in bought] == [(E_POS, (True, False, True))]
    closed = run(event("x", "u2", "z", CLICK, T0 + WINDOW + 5))  # passes the window's end in partition 0
    by_id = {s.sample_id: s for s in closed}
    assert {k: (s.emission, _labels(s)) for k, s in by_id.items()} == {
        "e1": (E_CLOSED, (True, False, True)), "e2": (E_CLOSED, (False, False, False))}
    assert by_id["e1"].label_policy == FN and by_id["e1"].emitted_ts_ms == T0 + WINDOW + 5
    assert _features(by_id["e1"]) == _features(shown[0]) and _features(by_id["e2"]) == _features(shown[1])
    store.close()


def test_the_window_policy_emits_once_at_the_close(tmp_path: Path) -> None:
    settings = make_settings()
    store = StateStore(tmp_path / "state")
    proc = BatchProcessor(settings, store, now_ms=NOW)
    feed = Feed(settings)
    result = proc.process([feed(event("e1", "u1", "a", IMP, T0, request_id="r1")),
                           feed(event("c1", "u1", "a", CLICK, T0 + 10, request_id="r1")),
                           feed(event("x", "u2", "z", CLICK, T0 + WINDOW + 5))])
    samples = _decode(result.samples)
    assert [(s.sample_id, s.emission, s.label_policy, _labels(s)) for s in samples] == [
        ("e1", E_CLOSED, features_pb2.LABEL_POLICY_WINDOW, (True, False, False))]
    store.close()


def test_a_restart_before_the_commit_re_emits_the_same_bytes(tmp_path: Path) -> None:
    """The worker sends a batch's outputs before committing its state: a crash in between replays the batch
    from the last durable state and sends the same emissions again (the trainer drops the copies)."""
    settings = make_settings(label_policy="fake_negative")
    topic = settings.topic("events")
    imp = Record(topic, 0, 0, None, event("e1", "u1", "a", IMP, T0, request_id="r1"))
    click = Record(topic, 0, 1, None, event("c1", "u1", "a", CLICK, T0 + 100, request_id="r1"))
    sent = []
    for n, crash_after in enumerate((imp, click)):
        store = StateStore(tmp_path / f"state{n}")
        proc = BatchProcessor(settings, store, now_ms=NOW)
        if crash_after is click:
            proc.commit(proc.process([imp]))
        before_crash = proc.process([crash_after])  # sent, then killed before commit()
        store.close()
        store = StateStore(tmp_path / f"state{n}")
        again = BatchProcessor(settings, store, now_ms=NOW).process([crash_after])
        store.close()
        assert again.samples == before_crash.samples and len(again.samples) == 1
        sent.append(features_pb2.TrainingSample.FromString(again.samples[0][1]))
    assert [s.emission for s in sent] == [E_IMP, E_POS] and _features(sent[0]) == _features(sent[1])


def _request_events(n: int, t0: int, clicks: bool) -> list[events_pb2.Event]:
    """n requests of 2 impressions each; with `clicks`, the first item of every other request clicked."""
    out = []
    for r in range(n):
        user = f"u{r % 37}"
        common = {"user_id": user, "session_id": f"{user}/s", "request_id": f"r{r}", "scenario": "web"}
        if clicks:
            if r % 2 == 0:
                out.append(events_pb2.Event(event_id=f"r{r}-clk", item_id=f"i{r % 11}", type=CLICK,
                                            ts_ms=t0 + r * 10 + 5, **common))
            continue
        for pos, item in enumerate((r % 11, (r + 3) % 11)):
            out.append(events_pb2.Event(event_id=f"r{r}-imp-{pos}", item_id=f"i{item}", type=IMP, position=pos,
                                        ts_ms=t0 + r * 10, item={"category": f"c{item % 3}"}, **common))
    return out


@pytest.mark.slow
def test_kill_9_between_the_impression_and_its_click_loses_neither(settings: Settings) -> None:
    """A real worker emits the provisional negatives, is killed with SIGKILL once it has processed them, the
    clicks arrive while it is down; the restarted worker emits every positive, with the impressions' features."""
    settings = settings.with_overrides(label_policy="fake_negative", batch_size=50)
    ensure_topics(settings)
    t0 = int(time.time() * 1000) - 60_000
    impressions = _request_events(400, t0, clicks=False)
    produce_events(settings, impressions, progress=False, strict=True)
    targets = end_offsets(settings, settings.topic("events"))
    worker = start_worker(settings, log_path(settings, "worker-1"))
    try:
        wait_caught_up(settings, targets, proc=worker)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    clicks = _request_events(400, t0, clicks=True)
    produce_events(settings, clicks, progress=False, strict=True)
    restarted = start_worker(settings, log_path(settings, "worker-2"))
    try:
        status = wait_caught_up(settings, end_offsets(settings, settings.topic("events")), proc=restarted)
    finally:
        assert stop_worker(restarted) == 0
    assert status["counters"]["dead_letters"] == 0
    assert processed_through(read_status(settings), settings.topic("events"))
    emitted: dict[tuple[str, int], features_pb2.TrainingSample] = {}
    for rec in read_topic(settings, "samples", end_offsets(settings, settings.topic("samples"))):
        s = features_pb2.TrainingSample.FromString(rec.value)
        key = (s.sample_id, s.emission)
        if key in emitted:  # a replayed batch re-sends the same emission: it must be the same
            assert _features(emitted[key]) == _features(s) and _labels(emitted[key]) == _labels(s)
        emitted[key] = s
    shown = {e.event_id for e in impressions}
    assert {sid for sid, kind in emitted if kind == E_IMP} == shown, "every impression emitted as a negative"
    clicked = {f"r{r}-imp-0" for r in range(0, 400, 2)}
    assert {sid for sid, kind in emitted if kind == E_POS} == clicked, "every click emitted as a positive"
    for sid in clicked:
        assert _features(emitted[(sid, E_POS)]) == _features(emitted[(sid, E_IMP)])
        assert _labels(emitted[(sid, E_POS)]) == (True, False, False)
