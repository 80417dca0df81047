"""Helpers for the stream integration tests: run a replay through a worker process, read topics back."""

from __future__ import annotations

from pathlib import Path

from streamrank.config import Settings
from streamrank.stream.app import worker_dir
from streamrank.stream.store import StateStore
from streamrank.v1 import events_pb2, features_pb2
from tests.reference import Reference


def load_state(settings: Settings) -> dict:
    """The stopped worker's state as plain Python."""
    store = StateStore(worker_dir(settings) / "state", read_only=True)
    try:
        return store.snapshot_state()
    finally:
        store.close()


def assert_state_matches(state: dict, ref: Reference) -> None:
    """Field-by-field equality of streamed state and the offline reference, with readable failures."""
    users = state["users"]
    assert set(users) == set(ref.users), "different user sets"
    for uid, r in ref.users.items():
        u = users[uid]
        assert u.totals == r.totals, f"user {uid}: totals {u.totals} != {r.totals}"
        got = list(zip(u.seq_items, u.seq_types, u.seq_ts, u.seq_cats, u.seq_sessions, strict=True))
        assert got == r.seq, f"user {uid}: behaviour sequence differs"
        assert set(u.pending) == set(r.pending), f"user {uid}: pending requests differ"
    assert state["cooc"] == ref.cooc, "co-occurrence counts differ"
    assert state["scenario"] == ref.scenario, "scenario totals differ"
    assert state["scenario_item"] == ref.scenario_item, "(scenario, item) totals differ"


def samples_by_id(records: list) -> dict[str, tuple[bool, bool, bool]]:
    """sample_id -> labels from samples-topic records (duplicates from replays must agree)."""
    out: dict[str, tuple[bool, bool, bool]] = {}
    for rec in records:
        s = features_pb2.TrainingSample()
        s.ParseFromString(rec.value)
        labels = (s.labels.click, s.labels.add_to_cart, s.labels.purchase)
        assert out.setdefault(s.sample_id, labels) == labels, f"sample {s.sample_id} re-emitted differently"
    return out


def sample_counts_by_id(records: list) -> dict[str, tuple[int, int, int]]:
    """sample_id -> the item counters a sample carries (impressions, clicks, purchases)."""
    out: dict[str, tuple[int, int, int]] = {}
    for rec in records:
        sample = features_pb2.TrainingSample.FromString(rec.value)
        c = sample.counts
        out[sample.sample_id] = (c.item_impressions, c.item_clicks, c.item_purchases)
    return out


def assert_resent_identical(records: list) -> int:
    """Every copy of a sample (same sample id, emission and emission time: fake_negative emits a positive at
    a click and again at a purchase) has the same bytes; returns the copies beyond the first (what a restart
    re-sent)."""
    first: dict[tuple[str, int, int], bytes] = {}
    resent = 0
    for rec in records:
        s = features_pb2.TrainingSample.FromString(rec.value)
        key = (s.sample_id, s.emission, s.emitted_ts_ms)
        if key in first:
            resent += 1
            if first[key] != rec.value:
                a = features_pb2.TrainingSample.FromString(first[key])
                fields = [f"{f.name}: {getattr(a, f.name)} != {getattr(s, f.name)}".replace("\n", " ")
                          for f in a.DESCRIPTOR.fields if getattr(a, f.name) != getattr(s, f.name)]
                raise AssertionError(f"sample {key} was re-sent with other bytes: {'; '.join(fields)}")
        else:
            first[key] = rec.value
    return resent


def categories_of(items: list[events_pb2.Item]) -> dict[str, str]:
    """item_id -> category from catalog entries."""
    return {i.item_id: i.category for i in items}


def log_path(settings: Settings, name: str) -> Path:
    """Where a test keeps a worker's log (inside its data dir)."""
    path = Path(settings.data_dir) / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
