"""Evidence that the A/B machinery is right: a known-better arm wins, and A/A shows no difference.

For each seed (one synthetic world and request stream per seed), three online experiments with built-in
arms, users split 50/50 by hash:
- ``oracle vs random``: the ground-truth ranker against a random order — must win, significantly;
- ``popularity vs random``: observed-click popularity (a feedback loop) against random;
- ``A/A``: popularity against popularity (two arm names, the same ranker) — should be significant in
  about 5% of seeds at alpha = 0.05.

Writes ``<out>.md``, ``<out>.json`` and ``<out>.png`` (per-seed CTR differences with their 95% CIs):

    python -m simulator.ab_check --seeds 20 --requests 20000 --out docs/benchmarks/synthetic-ab
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from simulator.analysis import comparisons, online_metrics
from simulator.arms import Arm
from simulator.environment import Environment, EnvParams
from simulator.online import run_online

EXPERIMENTS: dict[str, tuple[Arm, Arm]] = {
    "oracle vs random": (Arm("random", builtin="random"), Arm("oracle", builtin="oracle")),
    "popularity vs random": (Arm("random", builtin="random"), Arm("popularity", builtin="popularity")),
    "A/A (popularity vs popularity)": (Arm("A1", builtin="popularity"), Arm("A2", builtin="popularity")),
}


def run_experiment(seed: int, arms: tuple[Arm, Arm], n_requests: int, n_boot: int = 1000, n_perm: int = 1000,
                   base: EnvParams | None = None) -> list[dict[str, Any]]:
    """One online A/B in the world of `seed`; the comparisons (arm 2 vs arm 1) of every online metric."""
    params = replace(base or EnvParams(), seed=seed)
    result = run_online(Environment(params), list(arms), n_requests, salt=f"ab-check-{seed}")
    metrics = online_metrics(result.hit_k, params.slate_size)
    return comparisons(result.columns(), metrics, arms[0].name, [a.name for a in arms], n_boot, n_perm, seed)


def summarise(runs: dict[str, list[list[dict[str, Any]]]], alpha: float = 0.05) -> dict[str, Any]:
    """Per experiment and metric: seeds, how many significant, how many of those with B > A."""
    out: dict[str, Any] = {}
    for name, per_seed in runs.items():
        metrics: dict[str, Any] = {}
        for comps in per_seed:
            for c in comps:
                m = metrics.setdefault(c["metric"], {"seeds": 0, "significant": 0, "significant_b_better": 0,
                                                     "b_better": 0})
                m["seeds"] += 1
                m["b_better"] += int(c["diff"] > 0)
                if c["p_value"] < alpha:
                    m["significant"] += 1
                    m["significant_b_better"] += int(c["diff"] > 0)
        out[name] = metrics
    return out


def _plot(runs: dict[str, list[list[dict[str, Any]]]], seeds: Sequence[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4), sharey=False)
    for ax, (name, per_seed) in zip(axes, runs.items(), strict=True):
        ctr = [next(c for c in comps if c["metric"] == "CTR") for comps in per_seed]
        diffs = [c["diff"] for c in ctr]
        low = [c["diff"] - c["diff_ci"][0] for c in ctr]
        high = [c["diff_ci"][1] - c["diff"] for c in ctr]
        colors = ["tab:red" if c["p_value"] < 0.05 else "tab:blue" for c in ctr]
        for x, d, lo, hi, col in zip(seeds, diffs, low, high, colors, strict=True):
            ax.errorbar([x], [d], yerr=[[lo], [hi]], fmt="o", color=col, capsize=2)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{name}: CTR difference (B - A)", fontsize=9)
        ax.set_xlabel("seed (red: p < 0.05)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(summary: dict[str, Any], runs: dict[str, list[list[dict[str, Any]]]], seeds: Sequence[int],
              command: str, seconds: float, n_requests: int, png: str) -> str:
    lines = ["# Synthetic A/B: a known-better arm wins, A/A does not", "",
             f"Command: `{command}` ({seconds:.0f} s on the 2-core development machine).", "",
             f"Each seed is one synthetic world (`simulator/environment.py`, default parameters) and one stream of "
             f"{n_requests} requests; users are split 50/50 between the two arms by a salted hash. p-values: "
             "two-sided permutation test of the arm labels of users (1000 permutations, so the smallest is "
             "0.001); CIs: user-level bootstrap (1000). Significant = p < 0.05.", "",
             f"![per-seed CTR differences]({png})", "",
             "| experiment | metric | seeds | significant | significant with B > A | B > A (any p) |",
             "|---|---|---|---|---|---|"]
    for name, metrics in summary.items():
        for metric, m in metrics.items():
            lines.append(f"| {name} | {metric} | {m['seeds']} | {m['significant']} | {m['significant_b_better']} | "
                         f"{m['b_better']} |")
    lines += ["", "## CTR per seed", "", "| experiment | seed | CTR A | CTR B | diff [95% CI] | p |",
              "|---|---|---|---|---|---|"]
    for name, per_seed in runs.items():
        for seed, comps in zip(seeds, per_seed, strict=True):
            c = next(x for x in comps if x["metric"] == "CTR")
            lines.append(f"| {name} | {seed} | {c['value_a']:.4f} | {c['value_b']:.4f} | {c['diff']:+.4f} "
                         f"[{c['diff_ci'][0]:+.4f}, {c['diff_ci'][1]:+.4f}] | {c['p_value']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the experiments over seeds and writes the markdown, JSON and PNG results."""
    parser = argparse.ArgumentParser(prog="python -m simulator.ab_check", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--out", default="docs/benchmarks/synthetic-ab")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    started = time.monotonic()
    runs: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in EXPERIMENTS}
    for seed in seeds:
        for name, arms in EXPERIMENTS.items():
            runs[name].append(run_experiment(seed, arms, args.requests))
        print(f"seed {seed} done ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    seconds = time.monotonic() - started
    summary = summarise(runs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    _plot(runs, seeds, png)
    command = "python -m simulator.ab_check " + " ".join(sys.argv[1:] if argv is None else argv)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "seconds": seconds, "seeds": seeds,
                                                    "requests": args.requests, "summary": summary, "runs": runs},
                                                   indent=1))
    out.with_suffix(".md").write_text(_markdown(summary, runs, seeds, command, seconds, args.requests, png.name))
    for name, metrics in summary.items():
        ctr = metrics["CTR"]
        print(f"{name}: CTR significant in {ctr['significant']}/{ctr['seeds']} seeds "
              f"({ctr['significant_b_better']} with B > A)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
