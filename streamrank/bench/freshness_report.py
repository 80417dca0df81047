"""docs/benchmarks/freshness.{md,json}: the freshness benchmark's tables (streamrank.bench.freshness)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from streamrank.bench.trainbench_common import DOCS

HOUR_MS = 3_600_000
SHIFTED = ("served_p50_s", "served_p95_s", "positives_served_p50_s", "positives_served_p95_s", "p50_s", "p95_s")


def add_derived_window_hour(result: dict[str, Any], measured_ms: int = 2_000) -> None:
    """Adds the window policy with the default 1 h window, derived from its measured short-window case.

    Under the window policy nothing is learnable before the window closes, so a run would have to last over an
    hour per sample; every figure is the measured one plus (1 h - the measured window): a sample's window
    closes that much later, the rest of the path is the same. Marked `derived`."""
    window = result["policies"].get("window", {})
    short = window.get(f"window_{measured_ms / 1000:g}s")
    if short is None or "window_3600s" in window:
        return
    shift = (HOUR_MS - measured_ms) / 1000
    derived = {k: v for k, v in copy.deepcopy(short).items() if k != "runs"}
    for key in SHIFTED:
        derived[key] = short[key] + shift
    derived.update({"attribution_window_ms": HOUR_MS, "derived": True,
                    "derived_from": f"window_{measured_ms / 1000:g}s"})
    window["window_3600s"] = derived


def _s(value: float) -> str:
    return "-" if value != value else (f"{value:,.0f} s" if value >= 100 else f"{value:.2f} s")


def write_freshness(result: dict, command: str, out_dir: Path = DOCS) -> Path:
    """Writes freshness.md and .json into out_dir; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "freshness.json").write_text(json.dumps({**result, "command": command}, indent=1) + "\n")
    s, m = result["settings"], result["machine"]
    lines = [
        "# Freshness: from an event to the first Rank answer of a version that learned it",
        "",
        f"Command: `{command}`  ",
        f"Embedded broker (tansu), `streamrank worker`, `streamrank train --model {result['model']}` and "
        f"`streamrank serve` as child processes on CPU, {m['cpus']} CPUs shared by all of them, the producer and a "
        f"Rank probe; Python {m['python']}, torch {m['torch']}, {result['date']}.",
        "",
        f"Traffic: a live synthetic request stream at {result['rate']:,.0f} events/s (3 impressions per request, at "
        "most one click 0.1-1.5 s later; clicks depend on the item's category and the user's favourite ones, see "
        "`LiveTraffic`), event time = produce time. A probe calls Rank every 50 ms and records which version "
        f"answered. After a warm-up (at least {result['warmup_s']:.0f} s and until a version answers), the "
        f"samples of the next {result['duration_s']:.0f} s are measured: **served** = the first Rank answer by "
        "the first version whose consumed offsets cover the sample (or a later one) minus the impression time "
        "(every sample) or the click time (positives). Every sample = its first learnable emission (fake_negative: "
        "the provisional negative at impression time; window: the sample at the window's close); positives = the "
        "emission that first carries the click.",
        "",
        "| label policy | attribution window | served p50 | served p95 | positives served p50 | **positives served "
        "p95** | first version p50 | scorer pick-up p50 | events/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for policy, cases in result["policies"].items():
        for c in sorted(cases.values(), key=lambda case: -case["attribution_window_ms"]):
            window = f"{c['attribution_window_ms'] / 1000:g} s" + (" (derived)" if c.get("derived") else "")
            lines.append(
                f"| {policy} | {window} | {_s(c['served_p50_s'])} | {_s(c['served_p95_s'])} | "
                f"{_s(c['positives_served_p50_s'])} | **{_s(c['positives_served_p95_s'])}** | {_s(c['p50_s'])} | "
                f"{_s(c['pickup_p50_s'])} | {c['events_per_s']:,.0f} |")
    lines += [
        "",
        f"Medians over {result['runs']} runs per case. *First version*: the creation of the first registry "
        "version that learned the sample (what this benchmark measured before it measured the served score). "
        "*Scorer pick-up*: from that version's creation to the first Rank answer with it. The window policy with "
        "the default 1 h window is **derived**, not run: nothing is learnable before a window closes, so every "
        "figure is the 2 s case's plus 3,598 s.",
        "",
        "| label policy | window | run | samples | not covered | positives | served p50 | served p95 | positives p95 "
        "| versions (blocked) | probes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for policy, cases in result["policies"].items():
        for c in cases.values():
            for r in c.get("runs", []):
                lines.append(
                    f"| {policy} | {c['attribution_window_ms'] / 1000:g} s | {r['run']} | {r['samples']:,} | "
                    f"{r['not_covered']:,} | {r['positives']:,} | {_s(r['served_p50_ms'] / 1000)} | "
                    f"{_s(r['served_p95_ms'] / 1000)} | {_s(r['positives_served_p95_ms'] / 1000)} | "
                    f"{r['versions']} ({r['blocked']}) | {r['probes']:,} |")
    lines += [
        "",
        "Where the time goes, from the settings below: the worker's micro-batch (up to "
        f"{s['batch_within_s']} s) and its send; the trainer's micro-batch (up to {s['train_batch_within_s']} s or "
        f"{s['train_batch_size']} samples) and its step; the checkpoint and publication interval "
        f"({s['checkpoint_every_s']} s / {s['publish_every_s']} s: a version is published at a checkpoint, so a "
        "learned sample waits about half of it, plus writing the checkpoint and the version); the scorer's "
        f"registry poll ({s['serve_poll_s']} s) and its load of the version (sha256 of every file, rebuild, a "
        "smoke request); the probe's interval (50 ms). Under the window policy the attribution window comes "
        "first. A version the guardrail blocks is never served: its samples count from the next one.",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in s.items()],
        "",
    ]
    path = out_dir / "freshness.md"
    path.write_text("\n".join(lines))
    return path
