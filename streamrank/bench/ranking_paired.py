"""Before/after quality check of a change: `bench ranking --quick`'s fits, with per-session AUCs saved, so two
versions of the code can be compared by a paired test over the same test sessions.

    git worktree add /tmp/before <commit>
    python -m streamrank.bench.ranking_paired run --tree /tmp/before --out before.npz
    python -m streamrank.bench.ranking_paired run --tree . --out after.npz
    python -m streamrank.bench.ranking_paired compare before.npz after.npz

`run` imports streamrank from `--tree` (any checkout with `bench ranking --quick`), fits each model over
`--seeds` seeds (the quick protocol: ML-100K, 1 epoch, small models, fixed data split) and stores each
fit's per-session AUC. `compare` averages each model's sessions over seeds and runs a paired t-test
(scipy) of after against before across sessions.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

MODELS = ("dnn", "din", "category_moe", "aw_moe", "aw_moe_cl")


def run(tree: Path, out: Path, seeds: int, models: list[str], workers: int) -> None:
    """Fits the quick protocol's models with the code in `tree`; saves per-session AUCs to `out`."""
    sys.path.insert(0, str(tree.resolve()))
    for name in [m for m in sys.modules if m == "streamrank" or m.startswith("streamrank.")]:
        del sys.modules[name]  # this module's own import of streamrank must not shadow the tree's
    import streamrank
    from streamrank.bench import ranking as bench
    from streamrank.bench.parallel import run_jobs
    from streamrank.data.movielens import load_movielens
    from streamrank.train.metrics import session_metrics

    code = Path(streamrank.__file__).resolve().parent
    if code.parent != tree.resolve():
        raise RuntimeError(f"imported streamrank from {code}, not from {tree}")
    print(f"code: {code}", flush=True)
    args = bench.parse_args(["--quick", "--no-ablation", "--recbole-models", "", "--no-progress",
                             "--models", ",".join(models)])
    args.seed_list = list(range(seeds))
    bench._build_world(load_movielens(args.dataset), args)
    jobs = bench._jobs(args)
    results = run_jobs(jobs, partial(bench.run_job, args=args, sizes=bench.QUICK_SIZES), workers, 1, None,
                       progress=False, label=lambda j: j.key)
    test = bench._WORLD["chronological"]["protocol"].test
    arrays = {}
    for job, res in zip(jobs, results, strict=True):
        auc = session_metrics(res["probs"]["test"], test.labels, test.sessions).auc
        arrays[f"{job.key}/{job.seed}"] = auc
        print(f"{job.key} seed {job.seed}: session AUC {np.nanmean(auc):.4f}", flush=True)
    np.savez(out, **arrays)


def compare(before: Path, after: Path) -> list[dict]:
    """Per model: mean session AUC before and after, the difference and the paired t-test's p-value."""
    from scipy import stats

    a, b = np.load(before), np.load(after)
    rows = []
    for model in sorted({k.split("/")[0] for k in a.files} & {k.split("/")[0] for k in b.files},
                        key=lambda m: MODELS.index(m) if m in MODELS else len(MODELS)):
        seeds = sorted({k.split("/")[1] for k in a.files if k.startswith(model + "/")}
                       & {k.split("/")[1] for k in b.files if k.startswith(model + "/")})
        x = np.mean([a[f"{model}/{s}"] for s in seeds], axis=0)
        y = np.mean([b[f"{model}/{s}"] for s in seeds], axis=0)
        ok = ~(np.isnan(x) | np.isnan(y))
        test = stats.ttest_rel(y[ok], x[ok])
        rows.append({"model": model, "seeds": len(seeds), "sessions": int(ok.sum()), "before": float(x[ok].mean()),
                     "after": float(y[ok].mean()), "diff": float((y - x)[ok].mean()), "p": float(test.pvalue)})
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI (`python -m streamrank.bench.ranking_paired run|compare ...`)."""
    parser = argparse.ArgumentParser(prog="python -m streamrank.bench.ranking_paired", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="fit the quick protocol with one tree's code")
    r.add_argument("--tree", type=Path, default=Path("."))
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--models", default=",".join(MODELS))
    r.add_argument("--workers", type=int, default=2)
    c = sub.add_parser("compare", help="paired test of two runs")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        if args.seeds < 1 or args.workers < 1:
            parser.error("--seeds and --workers must be >= 1")
        if not (args.tree / "streamrank" / "bench" / "ranking.py").exists():
            parser.error(f"{args.tree} is not a streamrank checkout")
        run(args.tree, args.out, args.seeds, [m.strip() for m in args.models.split(",") if m.strip()],
            args.workers)
        return 0
    print("| model | seeds | sessions | before | after | after - before | p (paired t) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in compare(args.before, args.after):
        print(f"| {row['model']} | {row['seeds']} | {row['sessions']} | {row['before']:.4f} | {row['after']:.4f} "
              f"| {row['diff']:+.4f} | {row['p']:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
