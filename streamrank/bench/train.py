"""Online training benchmarks: samples/s per model, and freshness from an event to the first Rank answer
that learned it.

throughput  In-process `OnlineLearner.learn()` (test-then-train: tensorize, score, train step) on real
            TrainingSamples of a MovieLens request stream. The samples come from the stream worker's own
            logic (`BatchProcessor` over a RocksDB `StateStore`, records partitioned like the producer does),
            so they carry the behaviour sequences the trainer sees in production. For every repetition and
            every model (round-robin, so machine noise hits all models alike) a fresh learner learns
            `--warmup-batches` micro-batches untimed, then `--batches` timed ones, taken from the end of the
            stream (users with mature histories). samples/s = timed samples / time inside learn(); the
            median over the repetitions is reported, with a breakdown of where a batch's time goes.
freshness   The embedded broker, `streamrank worker`, `streamrank train` and `streamrank serve` as child
            processes, a live synthetic request stream (impressions, then a click on one of them a moment
            later) produced at a fixed rate with event time = produce time, and a Rank probe every 50 ms.
            Per label policy and attribution window: every sample of the measured interval is read back from
            the samples topic; its served freshness is the first Rank answer of the first registry version
            whose offsets cover it (meta offsets[partition] > the sample's offset), or of a later one, minus
            the impression's time (every sample) or the click's (positives). p50 / p95 per case, with the
            time to the version's creation and the scorer's pick-up beside it (bench/freshness.py).

Results go to docs/benchmarks/train-throughput.{md,json} and docs/benchmarks/freshness.{md,json}.

    python -m streamrank.bench.train                          # both parts (about 20 minutes on 2 CPUs)
    python -m streamrank.bench.train --only throughput        # samples/s per model
    python -m streamrank.bench.train --only freshness         # event -> served version, per label policy
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamrank.bench.freshness import CASES, run_freshness
from streamrank.bench.freshness_report import add_derived_window_hour, write_freshness
from streamrank.bench.throughput import run_throughput, write_throughput
from streamrank.bench.trainbench_common import DOCS, MODELS


def main(argv: list[str] | None = None) -> int:
    """CLI of the benchmark (`python -m streamrank.bench.train ...`)."""
    parser = argparse.ArgumentParser(prog="python -m streamrank.bench.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["throughput", "freshness"], help="run one part (default: both)")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the .md/.json files go")
    parser.add_argument("--no-write", action="store_true", help="print only")
    g = parser.add_argument_group("throughput")
    g.add_argument("--models", default=",".join(MODELS), help="comma-separated presets")
    g.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"])
    g.add_argument("--ratings", type=int, help="ratings replayed into samples (default: all)")
    g.add_argument("--reps", type=int, default=3)
    g.add_argument("--warmup-batches", type=int, default=3)
    g.add_argument("--batches", type=int, default=20, help="timed micro-batches per model and repetition")
    g.add_argument("--batch-size", type=int, help="micro-batch size (default: settings.train_batch_size)")
    g.add_argument("--threads", type=int, help="torch threads (default: torch's own default)")
    g.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    g.add_argument("--before", type=Path, help="train-throughput.json of the previous code, run beside this one "
                   "with replay off (its figures go beside this run's replay-paused ones)")
    g.add_argument("--before-replay", type=Path, help="the same with the previous code's replay defaults (beside "
                   "this run's replay figures)")
    g.add_argument("--notes", type=Path, help="a markdown file appended to train-throughput.md")
    g = parser.add_argument_group("freshness")
    g.add_argument("--model", default="din", help="the model the trainer learns")
    g.add_argument("--runs", type=int, default=2, help="runs per (label policy, window) case")
    g.add_argument("--policies", default="fake_negative,window",
                   help="label policies measured (fake_negative: 1 h and 2 s windows; window: 2 s, 1 h derived)")
    g.add_argument("--rate", type=float, default=800.0, help="events/s of the live stream")
    g.add_argument("--warmup", type=float, default=30.0, help="minimum seconds of traffic before measuring")
    g.add_argument("--duration", type=float, default=60.0, help="seconds of measured traffic per run")
    g.add_argument("--drain", type=float, default=30.0, help="longest wait for versions after the traffic")
    g.add_argument("--guardrail-margin", type=float, help="override settings.guardrail_margin")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if min(args.reps, args.batches, args.runs) < 1 or args.warmup_batches < 0 or args.duration <= 0 or args.rate <= 0:
        parser.error("--reps, --batches, --runs must be >= 1, --duration and --rate > 0")
    command = ("python -m streamrank.bench.train " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    if args.only in (None, "throughput"):
        result = run_throughput(models, args.dataset, args.ratings, args.reps, args.warmup_batches, args.batches,
                                args.batch_size, args.threads, args.device)
        print(json.dumps({m: round(r["median"]) for m, r in result["models"].items()}, indent=1))
        if not args.no_write:
            before = json.loads(args.before.read_text()) if args.before else None
            before_replay = json.loads(args.before_replay.read_text()) if args.before_replay else None
            notes = args.notes.read_text() if args.notes else ""
            print(f"wrote {write_throughput(result, command, args.out, before, notes, before_replay)}")
    if args.only in (None, "freshness"):
        cases = [(p, w) for p, w in CASES if p in args.policies.split(",")]
        result = run_freshness(args.model, args.runs, args.rate, args.warmup, args.duration, args.drain,
                               args.guardrail_margin, cases)
        add_derived_window_hour(result)
        print(json.dumps({p: {w: {k: v for k, v in c.items() if k.endswith("_s")} for w, c in cases.items()}
                          for p, cases in result["policies"].items()}, indent=1))
        if not args.no_write:
            print(f"wrote {write_freshness(result, command, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

