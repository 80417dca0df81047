"""An offline, deliberately plain recomputation of the worker's state from a list of events.

Written independently of streamrank.stream (no shared code beyond the settings and the partitioner), so
that equality with the streamed state checks the worker's logic and its batching/recovery machinery.
"""

from __future__ import annotations

import bisect
import heapq
from collections import defaultdict
from dataclasses import dataclass, field

from streamrank.config import Settings
from streamrank.events.partitioning import partition_of
from streamrank.v1 import events_pb2

IMP, CLK, ATC, BUY = 1, 2, 3, 4


@dataclass
class RefUser:
    seq: list[tuple[str, int, int, str, str]] = field(default_factory=list)  # item, type, ts, cat, session
    totals: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    pending: dict[str, dict] = field(default_factory=dict)  # request_id -> {ts, imps: {item: [eid, labels]}}
    seen: set[str] = field(default_factory=set)
    max_ts: int = 0


@dataclass
class Reference:
    users: dict[str, RefUser]
    cooc: dict[str, dict[str, int]]
    scenario: dict[str, list[int]]
    scenario_item: dict[tuple[str, str], list[int]]
    samples: dict[str, tuple[bool, bool, bool]]  # sample_id -> labels
    # sample_id -> (item impressions, clicks, purchases): events of the item in the scenario whose effective
    # time is before the start of the impression's counter bucket (docs/design.md)
    sample_counts: dict[str, tuple[int, int, int]]
    # (scenario, item) -> counts of the events before the final frontier: what the item-stats topic carries
    sealed_item: dict[tuple[str, str], list[int]]


def compute(events: list[events_pb2.Event], settings: Settings, categories: dict[str, str]) -> Reference:
    """Replays events in log order, per the rules documented in docs/design.md."""
    users: dict[str, RefUser] = defaultdict(RefUser)
    cooc: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    scen: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    scen_item: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    samples: dict[str, tuple[bool, bool, bool]] = {}
    watermark: dict[int, int] = defaultdict(int)
    # effective time per counted event: its ts raised to its partition's newest event time before it
    stamped: list[tuple[int, tuple[str, str], int]] = []  # (effective ms, (scenario, item), type index)
    cuts: dict[str, tuple[int, tuple[str, str]]] = {}  # sample_id -> (cut, key)
    bucket = settings.counter_bucket_ms
    deadlines: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    retention = {CLK: settings.click_retention_ms, ATC: settings.add_to_cart_retention_ms,
                 BUY: settings.purchase_retention_ms}
    window = settings.attribution_window_ms
    for e in events:
        part = partition_of(e.user_id, settings.partitions)
        u = users[e.user_id]
        if e.event_id in u.seen:
            continue  # the dedupe horizon (1 day) exceeds any gap between copies in these tests
        u.seen.add(e.event_id)
        u.max_ts = max(u.max_ts, e.ts_ms)
        idx = {IMP: 0, CLK: 1, ATC: 2, BUY: 3}[e.type]
        eff = max(e.ts_ms, watermark[part])
        stamped.append((eff, (e.scenario, e.item_id), idx))
        u.totals[idx] += 1
        scen[e.scenario][idx] += 1
        scen_item[(e.scenario, e.item_id)][idx] += 1
        if e.type == IMP:
            rid = e.request_id or e.event_id
            if rid not in u.pending:
                heapq.heappush(deadlines[part], (e.ts_ms + window, e.user_id, rid))
            req = u.pending.setdefault(rid, {"ts": e.ts_ms, "imps": {}})
            if e.item_id not in req["imps"]:
                req["imps"][e.item_id] = [e.event_id, [False, False, False]]
                cuts[e.event_id] = (eff - eff % bucket, (e.scenario, e.item_id))
        else:
            # attribution: the named request, else the newest open request showing the item
            best = None  # newest open request (ties: the one opened last)
            for rid, r in u.pending.items():
                if (e.item_id in r["imps"] and r["ts"] <= e.ts_ms <= r["ts"] + window
                        and (not e.request_id or rid == e.request_id)
                        and (best is None or r["ts"] >= u.pending[best]["ts"])):
                    best = rid
            if best is not None:
                u.pending[best]["imps"][e.item_id][1][idx - 1] = True
            recent = u.seq[-settings.cooc_lookback:]
            in_window = [s for s in recent if e.ts_ms - s[2] < settings.cooc_window_ms
                         or (e.session_id and s[4] == e.session_id)]
            if all(s[0] != e.item_id for s in in_window):
                for other in {s[0] for s in in_window}:
                    cooc[e.item_id][other] += 1
                    cooc[other][e.item_id] += 1
            cat = e.item.category or categories.get(e.item_id, "")
            u.seq.append((e.item_id, e.type, e.ts_ms, cat, e.session_id))
            u.seq = [s for s in u.seq if u.max_ts - s[2] <= retention[s[1]]][-settings.max_sequence_length:]
        # close windows that ended before this partition's newest event time
        watermark[part] = max(watermark[part], e.ts_ms)
        heap = deadlines[part]
        while heap and heap[0][0] < watermark[part]:
            _, uid, rid = heapq.heappop(heap)
            for eid, labels in users[uid].pending.pop(rid)["imps"].values():
                samples[eid] = tuple(labels)
    # Counts before a cut: each key's effective times sorted, with running counts per type.
    by_key: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for eff, key, idx in stamped:
        by_key[key].append((eff, idx))
    running: dict[tuple[str, str], tuple[list[int], list[list[int]]]] = {}
    for key, series in by_key.items():
        series.sort()
        totals, counts = [[0, 0, 0, 0]], [0, 0, 0, 0]
        for _, idx in series:
            counts[idx] += 1
            totals.append(list(counts))
        running[key] = ([eff for eff, _ in series], totals)

    def before(key: tuple[str, str], cut: int) -> list[int]:
        stamps, totals = running.get(key, ([], [[0, 0, 0, 0]]))
        return totals[bisect.bisect_left(stamps, cut)]

    sample_counts = {}
    for sid, (cut, key) in cuts.items():
        if sid not in samples:
            continue  # its window never closed: no sample
        c = before(key, cut)
        sample_counts[sid] = (c[0], c[1], c[3])
    top = max(watermark.values(), default=0)
    frontier = top - top % bucket  # every partition idle at the end: the newest watermark sets it
    sealed = {key: before(key, frontier) for key in by_key}
    return Reference(dict(users), {k: dict(v) for k, v in cooc.items()}, dict(scen), dict(scen_item),
                     samples, sample_counts, {k: v for k, v in sealed.items() if any(v)})
