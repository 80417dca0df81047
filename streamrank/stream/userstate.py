"""Per-user state kept by the stream worker, and how one event changes it.

Everything here is pure and deterministic: the same events of a user in the same order give the same
state, whatever the batching, so a replay after a crash rebuilds exactly what was lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamrank.config import Settings
from streamrank.events.types import ADD_TO_CART, CLICK, PURCHASE

# Index of each interaction type in label / counter triples.
LABEL_INDEX: dict[int, int] = {CLICK: 0, ADD_TO_CART: 1, PURCHASE: 2}
# User-item and user-category click counters kept per user (the most recent keys are kept).
MAX_CROSS_KEYS = 500
# Event ids remembered per user for duplicate detection (the newest are kept past this bound).
MAX_SEEN_IDS = 4096
SEEN_IDS_PRUNE_AT = MAX_SEEN_IDS + MAX_SEEN_IDS // 4


@dataclass(slots=True)
class PendingImpression:
    """One shown item waiting for its attribution window to close."""

    event_id: str
    position: int
    category: str
    brand: str
    shop: str
    price: float | None
    counts: tuple[int, int, int, int, int]  # item imp/click/purchase, user-item clicks, user-category clicks
    labels: list[bool] = field(default_factory=lambda: [False, False, False])
    # The item counters are those of the events before `cut_ms` in effective time (stream/counters.py); they
    # are filled in (`answered`) once the frontier reaches the cut. Emissions wait for it in `held`.
    cut_ms: int = 0
    answered: bool = False
    # (emission, emitted_ts_ms, labels as of the emission) not sent yet
    held: list[tuple[int, int, tuple[bool, bool, bool]]] = field(default_factory=list)

    def __reduce__(self) -> tuple[type, tuple]:
        # Pickled as constructor arguments: several times faster than the slots protocol, and this is written
        # for every waiting request of every batch.
        return PendingImpression, (self.event_id, self.position, self.category, self.brand, self.shop, self.price,
                                   self.counts, self.labels, self.cut_ms, self.answered, self.held)


@dataclass(slots=True)
class PendingRequest:
    """A ranked request whose impressions are not labelled yet, with the user's sequence at that time."""

    ts_ms: int
    scenario: str  # the counters' key (with the item); session and query live in `template`
    # The sample fields shared by its impressions, with the behaviour sequence just before the request (the
    # newest `feature_sequence_length`): a serialized TrainingSample (stream/encode.py, request_template).
    template: bytes
    impressions: dict[str, PendingImpression] = field(default_factory=dict)
    # The partition watermark at which the window closed while an impression still waited for its counters
    # (-1: open). Such a request leaves its user (it takes no more labels) and is kept by the processor until
    # every impression is answered; its samples then go out with this emission time.
    closed_at: int = -1

    def __reduce__(self) -> tuple[type, tuple]:
        return PendingRequest, (self.ts_ms, self.scenario, self.template, self.impressions, self.closed_at)

    def all_answered(self) -> bool:
        """True when every impression has its item counters."""
        return all(imp.answered for imp in self.impressions.values())


@dataclass(slots=True)
class UserState:
    """Everything the worker remembers about one user."""

    user_id: str
    partition: int = -1  # events-topic partition of the user's events (for rebuilding deadlines)
    seq_items: list[str] = field(default_factory=list)
    seq_types: list[int] = field(default_factory=list)
    seq_ts: list[int] = field(default_factory=list)
    seq_cats: list[str] = field(default_factory=list)
    seq_sessions: list[str] = field(default_factory=list)
    # event_id -> ts_ms of recently seen events, for duplicate detection.
    seen: dict[str, int] = field(default_factory=dict)
    pending: dict[str, PendingRequest] = field(default_factory=dict)
    # impressions, clicks, add-to-carts, purchases
    totals: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    item_clicks: dict[str, int] = field(default_factory=dict)
    category_clicks: dict[str, int] = field(default_factory=dict)
    max_ts: int = 0
    oldest_ts: int = 0  # smallest ts in the sequence (kept so trimming need not scan it)

    # ---------------------------------------------------------------------------------------------
    def is_duplicate(self, event_id: str, ts_ms: int, settings: Settings) -> bool:
        """True when event_id was seen before; otherwise remembers it.

        Ids are remembered for at least dedupe_horizon_ms of event time, and the newest MAX_SEEN_IDS are kept
        at a prune. A prune scans the whole dict, so it runs only when the first id in the dict (the oldest
        arrival; dicts keep insertion order and are rebuilt by a prune) is more than 5/4 of the horizon old,
        or the dict holds 5/4 of MAX_SEEN_IDS: amortised a few steps per event, where a prune every 64 ids
        scanned up to 4,096 entries each time. An id older than one that arrived before it can outlive 5/4
        of the horizon, until the first id in the dict is old enough.
        """
        seen = self.seen
        if event_id in seen:
            return True
        seen[event_id] = ts_ms
        horizon_ms = settings.dedupe_horizon_ms
        cutoff = self.max_ts - horizon_ms
        if len(seen) > SEEN_IDS_PRUNE_AT or next(iter(seen.values())) < cutoff - horizon_ms // 4:
            kept = [(k, t) for k, t in seen.items() if t >= cutoff]
            self.seen = dict(kept[-MAX_SEEN_IDS:])
        return False

    def cooc_partners(self, ts_ms: int, session_id: str, item_id: str, settings: Settings) -> list[str]:
        """Items that newly co-occur with this interaction (MicRec: same session or within the window).

        The distinct other items among the user's latest `cooc_lookback` interactions that are in the same
        session or less than `cooc_window_ms` older. When the item itself is already among them (a purchase
        after its click, a repeat view) nothing new co-occurs and the list is empty.
        """
        partners: list[str] = []
        seen: set[str] = set()
        n = len(self.seq_items)
        lo = max(0, n - settings.cooc_lookback)
        window = settings.cooc_window_ms
        items, stamps, sessions = self.seq_items, self.seq_ts, self.seq_sessions
        for i in range(n - 1, lo - 1, -1):
            if ts_ms - stamps[i] < window or (session_id and sessions[i] == session_id):
                other = items[i]
                if other == item_id:
                    return []
                if other not in seen:
                    seen.add(other)
                    partners.append(other)
        return partners

    def append_behavior(self, item_id: str, etype: int, ts_ms: int, category: str, session_id: str,
                        settings: Settings) -> None:
        """Adds an interaction to the sequence, then trims it by length and by per-type retention."""
        self.seq_items.append(item_id)
        self.seq_types.append(etype)
        self.seq_ts.append(ts_ms)
        self.seq_cats.append(category)
        self.seq_sessions.append(session_id)
        if ts_ms < self.oldest_ts or len(self.seq_ts) == 1:
            self.oldest_ts = ts_ms
        self._trim(settings)

    def _trim(self, settings: Settings) -> None:
        """Drops behaviours past their type's retention, then the oldest beyond max_sequence_length."""
        newest = self.max_ts
        if newest - self.oldest_ts > settings.shortest_retention_ms:
            retention = settings.retention_by_type
            keep = [
                i for i, (t, ts) in enumerate(zip(self.seq_types, self.seq_ts, strict=True))
                if newest - ts <= retention[t]
            ]
            if len(keep) != len(self.seq_items):
                self.seq_items = [self.seq_items[i] for i in keep]
                self.seq_types = [self.seq_types[i] for i in keep]
                self.seq_ts = [self.seq_ts[i] for i in keep]
                self.seq_cats = [self.seq_cats[i] for i in keep]
                self.seq_sessions = [self.seq_sessions[i] for i in keep]
            self.oldest_ts = min(self.seq_ts) if self.seq_ts else 0
        excess = len(self.seq_items) - settings.max_sequence_length
        if excess > 0:
            dropped_oldest = min(self.seq_ts[:excess]) <= self.oldest_ts
            for column in (self.seq_items, self.seq_types, self.seq_ts, self.seq_cats, self.seq_sessions):
                del column[:excess]
            if dropped_oldest:
                self.oldest_ts = min(self.seq_ts)

    def snapshot(self, length: int) -> tuple[list[str], list[int], list[int], list[str]]:
        """The newest `length` behaviours as columnar lists (copies)."""
        return (self.seq_items[-length:], self.seq_types[-length:], self.seq_ts[-length:],
                self.seq_cats[-length:])

    def count_click(self, item_id: str, category: str) -> None:
        """Updates the user-item and user-category click counters (bounded)."""
        _bump(self.item_clicks, item_id)
        if category:
            _bump(self.category_clicks, category)

    def label_open(self, etype: int, item_id: str, request_id: str, ts_ms: int, settings: Settings
                   ) -> tuple[str, PendingRequest, bool] | None:
        """Labels the pending impression this interaction answers: (request id, request, whether the label
        was newly set), or None when no impression of the item is open for it.

        With a request_id the click must belong to that request; without one, the newest open
        impression of the same item within the attribution window gets it.
        """
        label = LABEL_INDEX[etype]
        window = settings.attribution_window_ms
        found: tuple[str, PendingRequest] | None = None
        if request_id:
            req = self.pending.get(request_id)
            if req is not None and item_id in req.impressions and req.ts_ms <= ts_ms <= req.ts_ms + window:
                found = (request_id, req)
        else:
            for rid, req in self.pending.items():
                if item_id in req.impressions and req.ts_ms <= ts_ms <= req.ts_ms + window and (
                    found is None or req.ts_ms >= found[1].ts_ms
                ):
                    found = (rid, req)
        if found is None:
            return None
        labels = found[1].impressions[item_id].labels
        new = not labels[label]
        labels[label] = True
        return found[0], found[1], new


def _bump(counter: dict[str, int], key: str) -> None:
    # Re-inserting moves the key to the end, so insertion order is recency of the last click.
    counter[key] = counter.pop(key, 0) + 1
    if len(counter) > MAX_CROSS_KEYS:
        # Drop the least recently clicked keys down to the bound.
        for old in list(counter)[: len(counter) - MAX_CROSS_KEYS]:
            del counter[old]
