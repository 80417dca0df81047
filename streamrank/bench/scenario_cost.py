"""Serving cost of the multi-scenario models: one Rank request (C candidates, T behaviours) per model.

SAML evaluates every branch on every candidate at serving time (the mutual unit mixes branch k's hidden
output with the others'), runs the behaviour transformer twice (global and scenario weights) and adds the
scenario-specific embeddings; this measures what that costs against BST and the other baselines, with the
model sizes of `streamrank bench scenario`. Cases run interleaved (round robin), one torch thread.

    python -m streamrank.bench.scenario_cost            # writes docs/benchmarks/scenario-serving-cost.{md,json}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

from streamrank.bench.scenario import DIN_SIZES, SIZES
from streamrank.bench.trainbench_common import machine, percentile
from streamrank.features import Tensorizer
from streamrank.models.factory import DISPLAY_NAMES, build_model, is_scenario_preset
from streamrank.models.ranking.serving_cost import synthetic_request, time_ms

MODELS = ("din", "bst", "mmoe", "saml_no_gate_mutual", "saml_no_gate", "saml")
SCENARIOS = ("age:1", "age:18", "age:25", "age:35", "age:45", "age:50", "age:56")  # ML-1M's 7 buckets


def measure(models: list[str], candidates: int, behaviours: int, repeats: int) -> list[dict]:
    """Median / p90 milliseconds of `score_request` per model, and the ratio of medians to BST's."""
    torch.set_num_threads(1)
    spec, _, ctx, cands = synthetic_request(candidates, behaviours)
    spec = replace(spec, scenarios=SCENARIOS)
    req = Tensorizer(spec).encode_request(replace(ctx, scenario="age:25"), cands)
    built = []
    for name in models:
        torch.manual_seed(0)
        model = build_model(name, spec, **(SIZES if is_scenario_preset(name) else DIN_SIZES)).eval()
        built.append((name, model))
    with torch.inference_mode():
        times = time_ms([lambda m=m: m.score_request(req) for _, m in built], repeats)
    rows = [{"model": name, "params": sum(p.numel() for p in model.parameters()),
             "p50_ms": statistics.median(t), "p90_ms": percentile(t, 90)}
            for (name, model), t in zip(built, times, strict=True)]
    ref = next((r["p50_ms"] for r in rows if r["model"] == "bst"), None)
    for r in rows:
        r["vs_bst"] = r["p50_ms"] / ref if ref else float("nan")
    return rows


def render(result: dict) -> str:
    """The markdown page."""
    a = result["settings"]
    lines = ["# Serving cost of the multi-scenario models", "",
             f"Command: `{result['command']}`  ",
             f"One Rank request: {a['candidates']} candidates, {a['behaviours']} behaviours, scenario `age:25` of "
             f"{len(SCENARIOS)} listed (8 branches with 'other'); `score_request` in eval mode, 1 torch thread, "
             f"{a['repeats']} timed calls per model, interleaved. Machine: {result['machine']}.", "",
             "| model | parameters | p50 ms | p90 ms | p50 / BST |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {DISPLAY_NAMES.get(r['model'], r['model'])} | {r['params']:,} | {r['p50_ms']:.2f} | "
                     f"{r['p90_ms']:.2f} | {r['vs_bst']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, prog: str = "python -m streamrank.bench.scenario_cost") -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--behaviours", type=int, default=50)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = p.parse_args(argv)
    if args.candidates < 1 or args.behaviours < 1 or args.repeats < 1:
        raise SystemExit("--candidates, --behaviours and --repeats must be >= 1")
    rows = measure([m for m in args.models.split(",") if m], args.candidates, args.behaviours, args.repeats)
    result = {"command": " ".join([prog, *argv]).strip(), "machine": machine(),
              "settings": {"candidates": args.candidates, "behaviours": args.behaviours, "repeats": args.repeats},
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scenario-serving-cost.json").write_text(json.dumps(result, indent=1))
    text = render(result)
    (args.out / "scenario-serving-cost.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
