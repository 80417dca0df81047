"""A human-readable summary of a worker's durable state (`streamrank state`, the demo's output)."""

from __future__ import annotations

from typing import Any

from streamrank.config import Settings
from streamrank.events.types import NAME_BY_TYPE
from streamrank.stream.app import worker_dir
from streamrank.stream.store import StateStore


def summarize(state: dict[str, Any]) -> dict[str, Any]:
    """Headline figures of a state snapshot (StateStore.snapshot_state())."""
    users = state["users"].values()
    lengths = sorted(len(u.seq_items) for u in users)
    requests = [r for u in users for r in u.pending.values()] + list(state["closed_requests"].values())
    pending = sum(len(r.impressions) for r in requests)
    waiting = sum(not imp.answered for r in requests for imp in r.impressions.values())
    pairs = sum(len(v) for v in state["cooc"].values())
    return {
        "users": len(lengths),
        "sequence_length_median": lengths[len(lengths) // 2] if lengths else 0,
        "sequence_length_max": lengths[-1] if lengths else 0,
        "behaviours_by_type": _types(users),
        "pending_impressions": pending,
        "impressions_waiting_for_counters": waiting,
        "counter_frontier_ms": state["counter_frontier"],
        "cooc_items": len(state["cooc"]),
        "cooc_pairs": pairs,
        "scenarios": {k: dict(zip(("impressions", "clicks", "add_to_carts", "purchases"), v, strict=True))
                      for k, v in sorted(state["scenario"].items())},
        "catalog_items": len(state["catalog"]),
        "events_offsets": sum(o + 1 for o in state["offsets"].values()),
    }


def _types(users: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for u in users:
        for t in u.seq_types:
            name = NAME_BY_TYPE.get(t, str(t))
            counts[name] = counts.get(name, 0) + 1
    return counts


def top_cooc(state: dict[str, Any], k: int = 5) -> list[tuple[str, str, int]]:
    """The k most frequent co-occurring pairs (each pair once)."""
    pairs = [(a, b, n) for a, nb in state["cooc"].items() for b, n in nb.items() if a < b]
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))[:k]


def print_summary(settings: Settings) -> int:
    """Prints the summary of the worker named in settings; 1 if it has no state."""
    try:
        store = StateStore(worker_dir(settings) / "state", read_only=True)
    except FileNotFoundError as exc:
        print(exc)
        return 1
    try:
        state = store.snapshot_state()
    finally:
        store.close()
    summary = summarize(state)
    print(f"state of worker {settings.worker_id} ({worker_dir(settings)})")
    print(f"  events folded in          {summary['events_offsets']:>12,}")
    print(f"  users                     {summary['users']:>12,}")
    print(f"  sequence length median/max {summary['sequence_length_median']:>6} / "
          f"{summary['sequence_length_max']}")
    print(f"  behaviours by type        {summary['behaviours_by_type']}")
    print(f"  impressions pending       {summary['pending_impressions']:>12,}")
    print(f"    waiting for counters    {summary['impressions_waiting_for_counters']:>12,}"
          f"  (item counters complete below event time {summary['counter_frontier_ms']:,} ms)")
    print(f"  co-occurrence items/pairs {summary['cooc_items']:>8,} / {summary['cooc_pairs']:,}")
    print(f"  catalog items             {summary['catalog_items']:>12,}")
    print("  scenarios (impressions / clicks / add-to-carts / purchases):")
    for name, row in summary["scenarios"].items():
        print(f"    {name or '(default)':<16} {row['impressions']:>9,} {row['clicks']:>9,} "
              f"{row['add_to_carts']:>9,} {row['purchases']:>9,}")
    catalog = state["catalog"]
    print("  most frequent co-occurring pairs:")
    for a, b, n in top_cooc(state):
        ta = catalog[a].title if a in catalog else a
        tb = catalog[b].title if b in catalog else b
        print(f"    {n:>6,}  {ta}  <->  {tb}")
    return 0
