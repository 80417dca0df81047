"""State slots: replicas sharing a folder each lock their own, and a dead replica's slot is free again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from streamrank.config import Settings
from streamrank.stream.slots import SlotError, claim_slot


def test_replicas_take_the_lowest_free_slots(tmp_path: Path) -> None:
    first, second = claim_slot(tmp_path), claim_slot(tmp_path)
    assert (first.number, second.number) == (0, 1)
    assert first.path == tmp_path / "slot-0" and second.path.is_dir()
    first.release()
    again = claim_slot(tmp_path)
    assert again.number == 0, "a released slot is taken again before a new one"
    with pytest.raises(SlotError, match="all 2 state slots"):
        claim_slot(tmp_path, max_slots=2)
    again.release()
    second.release()


def test_a_killed_replica_frees_its_slot(tmp_path: Path) -> None:
    """The kernel drops the lock of a process killed with -9: its successor finds the slot (and its state)."""
    ready = tmp_path / "ready"
    code = ("import sys, time; from pathlib import Path; from streamrank.stream.slots import claim_slot; "
            f"s = claim_slot(Path({str(tmp_path / 'slots')!r})); (s.path / 'state').write_text('kept'); "
            f"Path({str(ready)!r}).write_text(str(s.number)); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.read_text() == "0"
        held = claim_slot(tmp_path / "slots")
        assert held.number == 1, "slot 0 is held by the live child"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        successor = claim_slot(tmp_path / "slots")
        assert successor.number == 0
        assert (successor.path / "state").read_text() == "kept"
        held.release()
        successor.release()
    finally:
        if child.poll() is None:
            child.kill()


def test_two_worker_replicas_share_a_data_dir(settings: Settings) -> None:
    """`streamrank worker --state-slots` twice on one data dir: two slots, two states, both in the group, and
    each replica holds the whole catalog (its catalog agent consumes in a group of its own)."""
    from streamrank.events.producer import produce_items
    from streamrank.pipeline import read_status, settings_env, stop_worker
    from streamrank.topics import ensure_topics
    from streamrank.v1 import events_pb2

    ensure_topics(settings)
    items = [events_pb2.Item(item_id=f"item{i}", category=f"c{i % 3}") for i in range(40)]
    produce_items(settings, items, progress=False, strict=True)
    base = Path(settings.data_dir)
    files = [base / f"slot-file-{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "streamrank.cli", "worker", "--state-slots", "--slot-file",
                               str(f)], env=settings_env(settings), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for f in files]
    try:
        deadline = time.monotonic() + 90
        statuses: list[Path] = []
        while len(statuses) < 2 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), "a replica exited (its state folder was taken?)"
            statuses = sorted(base.glob(f"slot-*/worker/{settings.worker_id}/status.json"))
            time.sleep(0.3)
        assert [s.parts[-4] for s in statuses] == ["slot-0", "slot-1"]
        assert sorted(f.read_text().strip() for f in files) == [str(base / "slot-0"), str(base / "slot-1")]
        slots = [replace(settings, data_dir=str(base / f"slot-{k}")) for k in (0, 1)]
        catalogs: list[int] = []
        while time.monotonic() < deadline:
            catalogs = [(read_status(s) or {}).get("catalog_items", 0) for s in slots]
            if catalogs == [len(items)] * 2:
                break
            time.sleep(0.3)
        assert catalogs == [len(items)] * 2, "every replica reads the whole catalog"
    finally:
        assert [stop_worker(p) for p in procs] == [0, 0]
