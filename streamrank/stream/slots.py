"""A stable state folder per worker replica: the lowest free slot under a shared folder, held by a file lock.

Replicas of one worker group that share a volume (`docker compose up --scale worker=N`) each need their own
RocksDB, and a container that is recreated (a new hostname) should find the state its predecessor left
rather than rebuild its partitions from the events topic, which is bounded by that topic's retention. Each
replica takes the lowest slot whose lock no live process holds. The kernel drops a `flock` when its process
dies, even by kill -9, so a restarted replica finds a free slot again (its own, when it is the only one
restarting). A slot's state is consistent with its own stored offsets whichever partitions the group then
assigns: partitions the slot did not own are rebuilt as after any move (docs/design.md).

`flock` holds across containers that share a local volume (one kernel); it is not reliable on NFS.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

MAX_SLOTS = 64
LOCK_NAME = "slot.lock"


class SlotError(OSError):
    """No slot is free: every one is held by a running worker (an OSError: the CLI prints it in one line)."""


@dataclass
class StateSlot:
    """A claimed slot: its number, its folder (the worker's data dir) and the open lock file."""

    number: int
    path: Path
    _fd: int

    def release(self) -> None:
        """Gives the slot up (closing the lock file; a process exit does the same)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def claim_slot(base: Path, max_slots: int = MAX_SLOTS) -> StateSlot:
    """Locks and returns the lowest free slot `base/slot-<k>`; SlotError when all max_slots are held."""
    base.mkdir(parents=True, exist_ok=True)
    for number in range(max_slots):
        path = base / f"slot-{number}"
        path.mkdir(exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return StateSlot(number, path, fd)
    raise SlotError(f"all {max_slots} state slots under {base} are held by running workers")
