"""Freshness to the served score: which version first learned each sample, and when Rank first answered
with it (or a later one). Used by streamrank.bench.freshness; pure bookkeeping plus one probing thread."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def first_covering(samples: Sequence[tuple[int, int]],
                   versions: Iterable[tuple[Mapping[Any, int], int, int]]) -> list[tuple[int, int] | None]:
    """For each (partition, offset) of a samples-topic record: (created_ms, number) of the first version, in
    creation order, whose consumed offsets cover it, or None. versions: (offsets, created_ms, number), where
    offsets maps partition (int or str, as JSON leaves it) to the next offset of that partition the version
    had consumed: a version covers a record when offsets[partition] > its offset."""
    covers: dict[int, tuple[list[int], list[tuple[int, int]]]] = {}
    for offsets, created, number in sorted(versions, key=lambda v: v[1]):
        for part, next_offset in offsets.items():
            marks, found = covers.setdefault(int(part), ([], []))
            # A running maximum, so that bisect finds the first version (in time) past the offset.
            marks.append(max(int(next_offset), marks[-1] if marks else -1))
            found.append((int(created), int(number)))
    out: list[tuple[int, int] | None] = []
    for part, offset in samples:
        entry = covers.get(int(part))
        if entry is None:
            out.append(None)
            continue
        marks, found = entry
        i = bisect.bisect_right(marks, offset)  # first index whose mark > offset
        out.append(found[i] if i < len(marks) else None)
    return out


class ServedAt:
    """When Rank first answered with a version at least v, from probe responses (received_ms, version)."""

    def __init__(self, responses: Iterable[tuple[int, int]]) -> None:
        self.times: list[int] = []
        self.highest: list[int] = []  # running maximum of the versions answered, in time order
        for received, version in sorted(responses):
            self.times.append(received)
            self.highest.append(max(version, self.highest[-1] if self.highest else 0))

    def __call__(self, version: int) -> int | None:
        """The first response time whose version is >= `version` (versions only grow), or None."""
        i = bisect.bisect_left(self.highest, version)
        return self.times[i] if i < len(self.times) else None


class RankProbe(threading.Thread):
    """Calls Rank every `interval_s` as a user would, recording (received_ms, model_version) of each answer.

    Answers before the first version (UNAVAILABLE) and failures are counted, not recorded."""

    def __init__(self, target: str, model: str, interval_s: float = 0.05, tls_ca: str = "") -> None:
        super().__init__(name="rank-probe", daemon=True)
        self.target, self.model, self.interval_s, self.tls_ca = target, model, interval_s, tls_ca
        self.responses: list[tuple[int, int]] = []
        self.failures = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        """The probing loop (until `stop_event`)."""
        import grpc

        from streamrank.serve.tls import channel as tls_channel
        from streamrank.v1 import ranking_pb2, ranking_pb2_grpc

        request = ranking_pb2.RankRequest(request_id="probe", user_id="probe-user", scenario="web", model=self.model)
        for n in range(3):
            item = request.candidates.add(item_id=f"i{n}")
            item.attributes.category = f"c{n}"
        with tls_channel(self.target, self.tls_ca) as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            while not self.stop_event.is_set():
                try:
                    answer = stub.Rank(request, timeout=2.0)
                    self.responses.append((int(time.time() * 1000), answer.model_version))
                except grpc.RpcError:
                    self.failures += 1
                self.stop_event.wait(self.interval_s)

    def stop(self) -> None:
        """Ends the loop and waits for the thread."""
        self.stop_event.set()
        self.join(timeout=5)

    @property
    def newest_version(self) -> int:
        """The newest version answered so far (0: none yet)."""
        return max((v for _, v in self.responses[-50:]), default=0)
