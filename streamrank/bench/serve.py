"""`streamrank bench serve`: the gRPC scorer under closed-loop load, side by side with the bare model.

The scorer runs as its own process (`streamrank serve`) against the broker, with the world of
`serve_setup` (ML-1M users with 50 behaviours in its replica, the ML-1M catalog, AW-MoE & CL, a
two-tower model with an index over the ML-1M catalog and one over 1M synthetic items). N asyncio clients
each send a call, wait for the answer and send the next (closed loop) for a fixed time after a warm-up:
Rank with 200 candidates, Retrieve with k=100. In the same run and process the bench times the bare
forward pass of the same requests (tensors prepared beforehand, same torch thread count as the scorer)
and the bare Retrieve work (user tower + index search), so end-to-end / bare is a like-for-like ratio.
Medians over --runs. Load generator and scorer share this machine's cores, as they would in any
single-machine test; the client's own CPU use is part of the end-to-end figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import torch

from streamrank.bench.serve_setup import World, candidates_of, prepare
from streamrank.bench.trainbench_common import percentile
from streamrank.broker import broker_for, free_port
from streamrank.config import Settings, load_settings
from streamrank.features.raw import RequestContext
from streamrank.pipeline import start_scorer
from streamrank.registry.store import Registry
from streamrank.runtime import tune_allocator
from streamrank.serve.models import load_ranker, load_retriever
from streamrank.v1 import ranking_pb2, ranking_pb2_grpc

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
CANDIDATES, K = 200, 100
RECALL_QUERIES = {"retrieval": "exact search: recall 1 by construction",
                  "retrieval-1m": "queries: 500 real users' user-tower vectors, tower trained on ML-1M"}


# ----------------------------------------------------------------------------------------- requests
def rank_requests(world: World, n: int, seed: int = 0) -> list[ranking_pb2.RankRequest]:
    """n Rank calls: a random ML-1M user (features from the replica) and 200 random catalog films."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        req = ranking_pb2.RankRequest(request_id=f"b{i}", user_id=world.users[rng.integers(len(world.users))],
                                      scenario="web")
        for c in candidates_of(world, rng, CANDIDATES):
            req.candidates.add(item_id=c.item_id)
        out.append(req)
    return out


def retrieve_requests(world: World, n: int, seed: int = 0) -> list[ranking_pb2.RetrieveRequest]:
    """n Retrieve calls for random ML-1M users, k=100, leaving out what they already rated."""
    rng = np.random.default_rng(seed)
    return [ranking_pb2.RetrieveRequest(request_id=f"b{i}", user_id=world.users[rng.integers(len(world.users))],
                                        k=K, exclude_seen=True) for i in range(n)]


# ------------------------------------------------------------------------------------------- bare work
def bare_rank_ms(settings: Settings, world: World, requests: list[ranking_pb2.RankRequest],
                 reps: int) -> dict[str, float]:
    """Median ms of the forward pass alone, and of tensorisation + forward, for the same requests.

    Runs on a thread set up like the scorer's forward threads (same torch threads, same allocator tuning).
    """
    tune_allocator()
    with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(settings.serve_torch_threads,)) as pool:
        return pool.submit(_bare_rank, settings, world, requests, reps).result()


def _bare_rank(settings: Settings, world: World, requests: list[ranking_pb2.RankRequest],
               reps: int) -> dict[str, float]:
    ranker = load_ranker(Registry(settings.registry_root(), world.ranker), 1)
    rng = np.random.default_rng(1)
    prepared = []
    for req in requests[:20]:
        ctx = RequestContext(req.user_id, world.histories[req.user_id], scenario=req.scenario)
        cands = candidates_of(world, rng, CANDIDATES)
        prepared.append((ctx, cands, ranker.tensorizer.encode_request(ctx, cands)))
    # four calls in one forward, as cross-request batching scores them: what batching can save at most
    fours = [ranker.tensorizer.encode_requests([(c, cs) for c, cs, _ in prepared[k:k + 4]])
             for k in range(0, len(prepared) - 3, 4)]
    forward, full, four = [], [], []
    for i in range(reps):
        ctx, cands, batch = prepared[i % len(prepared)]
        t = time.perf_counter()
        ranker.model.score_request(batch)
        forward.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        ranker.score(ctx, cands)
        full.append((time.perf_counter() - t) * 1000)
        if i % 4 == 0:
            t = time.perf_counter()
            ranker.model.score_request(fours[(i // 4) % len(fours)])
            four.append((time.perf_counter() - t) * 1000)
    return {"forward_ms": statistics.median(forward), "tensorize_forward_ms": statistics.median(full),
            "forward_4_calls_ms": statistics.median(four)}


def bare_retrieve_ms(settings: Settings, world: World, name: str, reps: int) -> dict[str, float]:
    """Median ms of the user tower + index search (k=100, seen items excluded), and the search alone."""
    retriever = load_retriever(Registry(settings.registry_root(), name), 1)
    users = world.users[:50]
    full, search = [], []
    for i in range(reps):
        user = users[i % len(users)]
        ctx = RequestContext(user, world.histories[user])
        t = time.perf_counter()
        vec = retriever.user_vector(ctx)
        t2 = time.perf_counter()
        retriever.index.search(vec, K, exclude=[set(ctx.behaviors.item_ids)])
        end = time.perf_counter()
        full.append((end - t) * 1000)
        search.append((end - t2) * 1000)
    return {"tower_search_ms": statistics.median(full), "search_ms": statistics.median(search),
            "index_kind": retriever.index.meta.kind, "index_recall": retriever.index.meta.recall_at_k,
            "index_params": retriever.index.meta.params}


# --------------------------------------------------------------------------------------------- load
async def closed_loop(port: int, method: str, requests: list, concurrency: int, warmup_s: float,
                      duration_s: float) -> dict[str, float]:
    """Runs `concurrency` clients for warmup + duration seconds; latency stats of the measured part."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = getattr(ranking_pb2_grpc.RankingServiceStub(channel), method)
        latencies: list[float] = []
        errors = 0
        start = time.perf_counter()
        measure_from, end = start + warmup_s, start + warmup_s + duration_s

        async def client(offset: int) -> None:
            nonlocal errors
            i = offset
            while True:
                t = time.perf_counter()
                if t >= end:
                    return
                try:
                    await call(requests[i % len(requests)], timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                done = time.perf_counter()
                if t >= measure_from:
                    latencies.append((done - t) * 1000)
                i += concurrency

        await asyncio.gather(*(client(c) for c in range(concurrency)))
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "rps": len(latencies) / duration_s, "calls": len(latencies), "errors": errors}


def start_scorer_for(settings: Settings, retrieval: str, log_path: Path,
                     batch_wait_ms: float = 0.0) -> tuple[subprocess.Popen[bytes], int]:
    """`streamrank serve` as a child process serving `retrieval` (batching off unless `batch_wait_ms`);
    returns it and its port once SERVING."""
    port = free_port()
    # its own data dir (the replica's RocksDB is locked by its scorer), the shared registry
    s = settings.with_overrides(serve_port=port, serve_retrieval=retrieval, serve_metrics_port=0,
                                serve_batch_wait_ms=batch_wait_ms, registry_dir=str(settings.registry_root()),
                                data_dir=str(Path(settings.data_dir) / f"scorer-{retrieval}-{batch_wait_ms:g}"))
    return start_scorer(s, log_path), port


def _median_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def run(args: argparse.Namespace) -> dict:
    """The whole benchmark; returns the results (also written as JSON)."""
    results: dict = {"rows": [], "bare": {}}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp, broker_for(args.bootstrap_servers) as bootstrap:
        settings = load_settings(bootstrap_servers=bootstrap, topic_prefix=f"bench-serve-{int(time.time())}.",
                                 data_dir=tmp, partitions=4, serve_models=args.model, serve_workers=args.workers,
                                 serve_torch_threads=args.torch_threads)
        print("preparing topics, models and indexes", flush=True)
        world = prepare(settings, args.model, synthetic_items=args.synthetic_items, limit_users=args.users,
                        tower_ratings=args.tower_ratings)
        ranks = rank_requests(world, 400)
        retrieves = retrieve_requests(world, 400)
        results["bare"]["rank"] = bare_rank_ms(settings, world, ranks, args.bare_reps)
        for name in world.retrieval_names:
            results["bare"][name] = bare_retrieve_ms(settings, world, name, args.bare_reps)
        print(f"  bare: {json.dumps(results['bare'])}", flush=True)
        # every call with batching off and on, side by side: two scorers up at once and their runs alternated,
        # so that the machine's drift over the minutes of the benchmark hits both alike
        for name in world.retrieval_names:
            scorers = {b: start_scorer_for(settings, name, Path(tmp) / f"scorer-{b}.log",
                                           args.batch_wait_ms if b else 0.0) for b in (False, True)}
            try:
                scenarios = [("Rank", "Rank", ranks)] if name == next(iter(world.retrieval_names)) else []
                scenarios.append((f"Retrieve {name}", "Retrieve", retrieves))
                for label, method, reqs in scenarios:
                    for conc in args.concurrency:
                        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
                        for _ in range(args.runs):
                            for b, (_, port) in scorers.items():
                                runs[b].append(asyncio.run(closed_loop(port, method, reqs, conc, args.warmup,
                                                                       args.duration)))
                        for batching, measured in runs.items():
                            row = {"call": label, "items": world.retrieval_names.get(name) if method == "Retrieve"
                                   else CANDIDATES, "concurrency": conc, "batching": batching,
                                   **_median_runs(measured)}
                            results["rows"].append(row)
                            print(f"  {label:<24} c={conc:<3} batching {batching!s:<5} p50 {row['p50_ms']:6.2f} ms  "
                                  f"p99 {row['p99_ms']:6.2f} ms  {row['rps']:7.1f} calls/s  "
                                  f"errors {row['errors']:.0f}", flush=True)
            finally:
                for proc, _ in scorers.values():
                    proc.terminate()
                for proc, _ in scorers.values():
                    proc.wait(30)
        rank_rps = {b: max((r["rps"] for r in results["rows"] if r["call"] == "Rank" and r["batching"] == b),
                           default=0.0) for b in (False, True)}
        results["rank_saturation_batching_ratio"] = rank_rps[True] / rank_rps[False] if rank_rps[False] else None
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
    results["settings"] = {k: getattr(args, k) for k in ("model", "workers", "torch_threads", "duration", "warmup",
                                                         "runs", "synthetic_items", "concurrency", "batch_wait_ms",
                                                         "tower_ratings")}
    return results


def write_report(results: dict, command: str, out: Path) -> None:
    """docs/benchmarks/serve.md and .json."""
    bare = results["bare"]
    lines = ["# Scorer latency and throughput", "", f"Command: `{command}`", "",
             f"Machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}, torch "
             f"{results['machine']['torch']}; scorer and load generator on the same machine. Medians of "
             f"{results['settings']['runs']} runs of {results['settings']['duration']} s after "
             f"{results['settings']['warmup']} s warm-up; batching off and on are two scorers up at once, their runs "
             "alternated.", "",
             "| call | items | clients | batching | p50 ms | p99 ms | calls/s | errors | p50 / bare | p99 / bare |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        name = "rank" if r["call"] == "Rank" else r["call"].split(" ", 1)[1]
        base = bare[name]["forward_ms"] if name == "rank" else bare[name]["tower_search_ms"]
        lines.append(f"| {r['call']} | {r['items']:,} | {r['concurrency']} | {'on' if r.get('batching') else 'off'} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | {r['errors']:.0f} | "
                     f"{r['p50_ms'] / base:.2f} | {r['p99_ms'] / base:.2f} |")
    ratio = results.get("rank_saturation_batching_ratio")
    if ratio:
        lines += ["", f"Rank at saturation (most calls/s over the client counts), batching on / off: **{ratio:.2f}**"
                  f" (wait {results['settings']['batch_wait_ms']} ms; measured side by side in this run)."]
    lines += ["", "Bare work in the bench process (same requests, same torch threads, idle scorer):", "",
              f"- Rank forward pass ({CANDIDATES} candidates, 50 behaviours): {bare['rank']['forward_ms']:.2f} ms; "
              f"tensorisation + forward: {bare['rank']['tensorize_forward_ms']:.2f} ms; four calls in one forward (as "
              f"batching scores them): {bare['rank']['forward_4_calls_ms']:.2f} ms, "
              f"{bare['rank']['forward_4_calls_ms'] / bare['rank']['forward_ms']:.2f}x one call"]
    for name, b in bare.items():
        if name != "rank":
            lines.append(f"- Retrieve `{name}`: user tower + search {b['tower_search_ms']:.2f} ms, search "
                         f"{b['search_ms']:.2f} ms; index {b['index_kind']} {b['index_params']}, recall@100 vs "
                         f"exact measured at build {b['index_recall']:.4f} ({RECALL_QUERIES[name]})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": command, **results}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point (`streamrank bench serve`)."""
    p = argparse.ArgumentParser(prog="streamrank bench serve", description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", default="", help="Kafka to use (default: an embedded broker)")
    p.add_argument("--model", default="aw_moe_cl")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="scorer forward threads")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--synthetic-items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, help="only the first N ML-1M users (default: all)")
    p.add_argument("--bare-reps", type=int, default=300)
    p.add_argument("--tower-ratings", type=int, default=1_000_209,
                   help="ML-1M ratings the two-tower model is trained on, 1 epoch (0: untrained)")
    p.add_argument("--batch-wait-ms", type=float, default=1.0, help="serve_batch_wait_ms of the batching-on rows")
    p.add_argument("--quick", action="store_true", help="small and short: a smoke test, not a measurement")
    p.add_argument("--out", default=str(DOCS / "serve.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.concurrency, args.duration, args.warmup, args.runs = [1, 4], 2.0, 0.5, 1
        args.synthetic_items, args.users, args.bare_reps = min(args.synthetic_items, 20_000), 300, 50
        args.tower_ratings = min(args.tower_ratings, 100_000)
    command = "streamrank bench serve " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run(args)
    write_report(results, command.strip(), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
