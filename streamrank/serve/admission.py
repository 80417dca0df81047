"""Admission of calls by what is already in flight: the scorer's memory bound, enforced before decoding.

A call holds its request bytes while it waits and runs, and its decoded form (at most a few times its
wire size once the limits have passed) while it runs. Refusing a call when `max_calls` calls or
`max_bytes` request bytes are already in flight therefore bounds the memory all calls can hold, whatever
their sizes; the refusal is RESOURCE_EXHAUSTED, answered and counted by the servicer (gRPC's own
concurrency limit, set above this one as a backstop, answers before any handler and could not be counted).
One call is always admitted when nothing is in flight, so the largest valid request is never refused on an
idle scorer. Used from the asyncio loop only: no lock.
"""

from __future__ import annotations

from dataclasses import dataclass

# A decoded request within the limits takes about 6x its wire size (7.6 MB of tiny candidates took 47 MB);
# with the wire bytes themselves and some slack, 8x.
DECODE_FACTOR = 8


def memory_bound(max_calls: int, max_bytes: int, receive_limit: int, backstop_calls: int) -> int:
    """Bytes all calls' requests can hold at once: every call gRPC accepts (`backstop_calls`) receiving a
    message of up to `receive_limit` bytes, plus the decoded form of the admitted calls' `max_bytes`. The
    figure docs/serving.md states and the burst test checks the scorer's resident memory against."""
    return backstop_calls * receive_limit + DECODE_FACTOR * max_bytes


@dataclass
class CallLabels:
    """The model and version a call is counted under, filled in as the call learns them."""

    model: str = ""
    version: str = ""


class Admission:
    """Calls and request bytes in flight, against their budgets (see the module docstring)."""

    def __init__(self, max_calls: int, max_bytes: int) -> None:
        self.max_calls = max_calls
        self.max_bytes = max_bytes
        self.calls = 0
        self.bytes = 0

    def enter(self, size: int) -> str | None:
        """Admits a call of `size` request bytes (returns None) or says why not (the refusal's message)."""
        if self.calls and self.calls >= self.max_calls:
            return f"{self.calls} calls in flight (serve_max_inflight {self.max_calls}); retry with backoff"
        if self.calls and self.bytes + size > self.max_bytes:
            return (f"{self.bytes + size:,} request bytes would be in flight (serve_max_inflight_bytes "
                    f"{self.max_bytes:,}); retry with backoff")
        self.calls += 1
        self.bytes += size
        return None

    def leave(self, size: int) -> None:
        """Releases an admitted call."""
        self.calls -= 1
        self.bytes -= size
