"""`streamrank bench index`: exact vs IVF vs HNSW item search — build time, latency, throughput, recall@k.

Datasets:

- ``synthetic``: `--items` (100,000, 300,000 and 1,000,000) clustered, L2-normalised vectors of `--dim` (64) dims from
  `streamrank.index.synthetic` (a 4,096-centre Gaussian mixture with log-normal weights); queries are fresh
  draws from the same mixture, not copies of items.
- ``ml-1m``: real MovieLens-1M embeddings. With `--embeddings X.npy --ids IDS` (JSON list or one id per line)
  those are used (`--query-embeddings Q.npy`, else noisy item embeddings); otherwise a rank-`--dim` truncated
  SVD (randomised, seeded) of the binary user x item "rated" matrix: items = V·sqrt(S), queries = the users'
  U·sqrt(S), so a query's inner product with an item approximates "this user rates this film".

For each index: build time; single-query latency p50/p99 at k (`--k`, 100), one query per call through
`ItemIndex.search` (the scorer's pattern, one OpenMP thread); batch throughput (all queries in one call, all
cores); recall@k against exact search on the same queries; speed-ups against exact measured in the same run.
Timings are medians over `--repeats` repeats. Writes `--out`/index.md and index.json.

    python -m streamrank.bench.index                  # full run (synthetic + ML-1M), writes docs/benchmarks
    python -m streamrank.bench.index --quick          # 50k-item smoke run, writes nothing unless --out
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from streamrank.index import ItemIndex, build_index
from streamrank.index.backend import (
    AUTO_CPU_KIND,
    AUTO_FLAT_MAX,
    HNSW_DEFAULTS,
    IVF_DEFAULT_NPROBE,
    all_threads,
    default_nlist,
    resolve_params,
)
from streamrank.index.recall import exact_neighbours, sample_queries
from streamrank.index.synthetic import clustered_embeddings

TARGET_RECALL = 0.95
TARGET_SPEEDUP = 10.0


@dataclass
class Dataset:
    """Item embeddings, their ids, query vectors and how they were made."""

    name: str
    items: np.ndarray
    ids: list[str]
    queries: np.ndarray
    source: str


def log(msg: str) -> None:
    """Progress line on stderr with a timestamp (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synthetic_dataset(n: int, dim: int, n_queries: int, seed: int) -> Dataset:
    """The clustered synthetic catalog and queries from the same mixture (different seeds)."""
    items = clustered_embeddings(n, dim, seed=seed + 1, centre_seed=seed)
    queries = clustered_embeddings(n_queries, dim, seed=seed + 2, centre_seed=seed)
    return Dataset(f"synthetic-{n:,}", items, [f"s{i}" for i in range(n)], queries,
                   f"Gaussian mixture, 4096 centres on the unit sphere, log-normal weights, spread 0.75, "
                   f"L2-normalised; {n:,} items x {dim} dims; {n_queries} queries drawn from the same mixture")


def randomized_svd(a: np.ndarray, rank: int, seed: int, oversample: int = 10, iters: int = 4) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """Rank-`rank` truncated SVD (U, S, Vt) of a dense matrix by randomised range finding (Halko et al.)."""
    rng = np.random.default_rng(seed)
    y = a @ rng.standard_normal((a.shape[1], rank + oversample)).astype(a.dtype)
    for _ in range(iters):  # power iterations, re-orthonormalised, sharpen the spectrum
        q, _ = np.linalg.qr(y)
        q, _ = np.linalg.qr(a.T @ q)
        y = a @ q
    q, _ = np.linalg.qr(y)
    u_small, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ u_small)[:, :rank], s[:rank], vt[:rank]


def ml1m_dataset(args: argparse.Namespace) -> Dataset:
    """ML-1M item embeddings: from --embeddings/--ids if given, else the SVD of the user x item matrix."""
    if args.embeddings:
        items = np.load(args.embeddings).astype(np.float32)
        raw = Path(args.ids).read_text(encoding="utf-8")
        ids = json.loads(raw) if raw.lstrip().startswith("[") else raw.splitlines()
        queries = (np.load(args.query_embeddings).astype(np.float32) if args.query_embeddings
                   else sample_queries(items, args.queries, args.seed))
        return Dataset("ml-1m", items, [str(i) for i in ids], queries,
                       f"embeddings from {args.embeddings} ({items.shape[0]:,} x {items.shape[1]})")
    from streamrank.data.movielens import load_movielens

    ratings = load_movielens("ml-1m").ratings
    matrix = np.zeros((len(ratings.user_vocab), len(ratings.item_vocab)), dtype=np.float32)
    matrix[ratings.user_code, ratings.item_code] = 1.0
    u, s, vt = randomized_svd(matrix, args.dim, args.seed)
    root = np.sqrt(s).astype(np.float32)
    items = np.ascontiguousarray((vt.T * root).astype(np.float32))
    users = (u * root).astype(np.float32)
    pick = np.random.default_rng(args.seed).choice(users.shape[0], size=min(args.queries, users.shape[0]),
                                                   replace=False)
    return Dataset("ml-1m", items, list(ratings.item_vocab), np.ascontiguousarray(users[np.sort(pick)]),
                   f"rank-{args.dim} randomised SVD of the binary ML-1M user x item matrix "
                   f"({matrix.shape[0]:,} users x {matrix.shape[1]:,} rated items, {len(ratings):,} ratings); "
                   f"items = V*sqrt(S), queries = {len(pick)} random users' U*sqrt(S)")


def time_single(index: ItemIndex, queries: np.ndarray, k: int, repeats: int) -> tuple[float, float]:
    """Median over repeats of the p50 and p99 (ms) of one-query `search` calls, after one untimed warm-up pass."""
    for i in range(queries.shape[0]):  # touch the index's memory once: a fresh build is cold in cache
        index.search(queries[i:i + 1], k)
    p50s, p99s = [], []
    for _ in range(repeats):
        lat = np.empty(queries.shape[0])
        for i in range(queries.shape[0]):
            started = time.perf_counter()
            index.search(queries[i:i + 1], k)
            lat[i] = time.perf_counter() - started
        p50s.append(float(np.percentile(lat, 50)) * 1e3)
        p99s.append(float(np.percentile(lat, 99)) * 1e3)
    return float(np.median(p50s)), float(np.median(p99s))


def time_batch(index: ItemIndex, queries: np.ndarray, k: int, repeats: int) -> tuple[float, list[list[str]]]:
    """Median queries/s of one `search` call over all queries, and the answers (for recall)."""
    qps, answers = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        _, answers = index.search(queries, k)
        qps.append(queries.shape[0] / (time.perf_counter() - started))
    return float(np.median(qps)), answers


def recall_vs(answers: list[list[str]], exact: list[list[str]]) -> float:
    """Mean share of each query's exact top-k that the answer contains."""
    return float(np.mean([len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(answers, exact, strict=True)]))


def configs(args: argparse.Namespace, n: int) -> list[tuple[str, dict[str, int], str, list[int]]]:
    """(kind, build params, search parameter name, its values) for every index of the run."""
    nlist = args.nlist or default_nlist(n)
    return [("flat", {}, "", [0]),
            ("ivf", {"nlist": nlist}, "nprobe", [p for p in args.nprobe if p <= nlist]),
            ("hnsw", {"M": args.hnsw_m, "efConstruction": args.ef_construction}, "efSearch", args.ef_search)]


def bench_dataset(ds: Dataset, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every index of `configs` on one dataset: a list of result rows (exact first)."""
    log(f"{ds.name}: {ds.items.shape[0]:,} items x {ds.items.shape[1]}, {ds.queries.shape[0]} queries; exact ...")
    k = min(args.k, ds.items.shape[0])
    truth = exact_neighbours(ds.items, ds.queries, k, "ip")
    exact_ids = [[ds.ids[r] for r in row] for row in truth.tolist()]
    single = ds.queries[:args.single_queries]
    rows: list[dict[str, Any]] = []
    for kind, params, knob, values in configs(args, ds.items.shape[0]):
        log(f"{ds.name}: building {kind} {params} ...")
        started = time.perf_counter()
        index = build_index(ds.items, ds.ids, kind=kind, metric="ip", recall_k=k, seed=args.seed, **params)
        total_build = time.perf_counter() - started
        log(f"{ds.name}: {kind} built in {index.meta.build_seconds:.1f} s "
            f"(+{total_build - index.meta.build_seconds:.1f} s recall check: {index.meta.recall_at_k:.4f})")
        for value in values:
            if knob:
                faiss.ParameterSpace().set_index_parameter(index.faiss_index, knob, value)
            p50, p99 = time_single(index, single, k, args.repeats)
            qps, answers = time_batch(index, ds.queries, k, args.repeats)
            row_params = {**index.meta.params, **({knob: value} if knob else {})}
            row = {"index": kind, "params": row_params,
                   "is_default": row_params == resolve_params(kind, ds.items.shape[0], {}),
                   "build_s": index.meta.build_seconds, "build_recall_noisy_items": index.meta.recall_at_k,
                   "recall": recall_vs(answers, exact_ids), "p50_ms": p50, "p99_ms": p99, "batch_qps": qps}
            rows.append(row)
            log(f"{ds.name}: {label(row)}: recall@{k} {row['recall']:.4f}, p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
                f"batch {qps:,.0f} q/s")
        del index
    exact = rows[0]
    for row in rows:
        row["speedup_p50"] = exact["p50_ms"] / row["p50_ms"]
        row["speedup_batch"] = row["batch_qps"] / exact["batch_qps"]
        row["meets_target"] = bool(row["index"] != "flat" and row["recall"] >= TARGET_RECALL
                                   and row["speedup_p50"] >= TARGET_SPEEDUP)
    return rows


def label(row: dict[str, Any]) -> str:
    """Short name of a result row: the kind and its distinguishing parameters."""
    p = row["params"]
    if row["index"] == "ivf":
        name = f"IVF nlist={p['nlist']} nprobe={p['nprobe']}"
    elif row["index"] == "hnsw":
        name = f"HNSW M={p['M']} efC={p['efConstruction']} efSearch={p['efSearch']}"
    else:
        name = "exact (flat)"
    return name + (" *" if row.get("is_default") and row["index"] != "flat" else "")


def table(rows: list[dict[str, Any]], k: int) -> str:
    """A markdown table of the result rows."""
    head = (f"| index | build s | recall@{k} | p50 ms | p99 ms | speed-up (p50) | batch q/s | speed-up (batch) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(
        f"| {label(r)} | {r['build_s']:.1f} | {r['recall']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
        f"{r['speedup_p50']:.1f}x | {r['batch_qps']:,.0f} | {r['speedup_batch']:.1f}x |\n" for r in rows)


def verdict(rows: list[dict[str, Any]], k: int, n: int) -> str:
    """One sentence on the target, from the measured rows: the fastest index meeting it, or that none does."""
    met = [r for r in rows if r["meets_target"]]
    auto = f" At {n:,} items kind=\"auto\" uses exact search." if n <= AUTO_FLAT_MAX else ""
    if not met:
        best = max((r for r in rows if r["index"] != "flat"), key=lambda r: r["recall"])
        return (f"No index met recall@{k} >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:.0f}x exact; the most accurate "
                f"approximate one, {label(best)}, reached {best['recall']:.4f} at {best['speedup_p50']:.1f}x.{auto}")
    best = max(met, key=lambda r: r["speedup_p50"])
    return (f"Target met by {len(met)} configuration(s); fastest: {label(best)} with recall@{k} "
            f"{best['recall']:.4f} at {best['speedup_p50']:.1f}x exact (p50, single query).{auto}")


def machine() -> dict[str, Any]:
    """Cores, CPU model, library versions: what the timings depend on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cores": all_threads(), "cpu": cpu, "faiss": faiss.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "gpus": faiss.get_num_gpus(),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def write_docs(out: Path, command: str, info: dict[str, Any], results: dict[str, dict[str, Any]], k: int) -> None:
    """Writes index.md (tables, verdicts, method) and index.json (every number) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text(json.dumps({"command": command, "machine": info, "k": k,
                                                "datasets": results}, indent=2) + "\n")
    lines = ["# Item index benchmark: exact vs IVF vs HNSW (faiss, CPU)", "", "```", command, "```", "",
             f"Machine: {info['cores']} cores ({info['cpu']}), faiss {info['faiss']}, numpy {info['numpy']}, "
             f"Python {info['python']}, GPUs seen by faiss: {info['gpus']}; {info['date']}. Other jobs shared "
             "the machine, so timings are indicative.", "",
             f"Method: recall@{k} is the mean share of the exact top-{k} (inner product, faiss flat search) found "
             f"by the index on the same queries. Latency: one query per `ItemIndex.search` call, k={k}, one "
             "OpenMP thread (what the scorer does), p50/p99 over the single-query set. Batch: all queries in "
             "one call, all cores. Speed-ups are against exact search in the same run; every timing is the "
             "median of the repeats. Build time is training + adding (the build-time recall check is extra). "
             f"Target: recall@{k} >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:.0f}x exact (p50).", ""]
    for name, res in results.items():
        lines += [f"## {name}", "", res["source"] + ".", "",
                  f"{res['items']:,} items, {res['queries']} queries ({res['single_queries']} for single-query "
                  f"latency), {res['repeats']} repeats.", "", table(res["rows"], k),
                  verdict(res["rows"], k, res["items"]), ""]
    lines += ["`*` marks `build_index`'s default parameters for that kind and catalog size; `kind=\"auto\"` builds "
              f"exact search up to {AUTO_FLAT_MAX:,} items and the default {AUTO_CPU_KIND} index above on CPU "
              "(docs/index.md).", "",
              "`build_recall_noisy_items` in index.json is the recall `build_index` stored in the index metadata "
              "(its own query sample: noisy item embeddings), next to the benchmark's recall on real queries.", ""]
    (out / "index.md").write_text("\n".join(lines))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(prog="streamrank bench index", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=("synthetic", "ml-1m", "all"), default="all")
    p.add_argument("--items", type=int, nargs="+", default=[100_000, 300_000, 1_000_000],
                   help="synthetic catalog sizes")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000, help="queries for recall and batch throughput")
    p.add_argument("--single-queries", type=int, default=500, help="queries timed one at a time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nlist", type=int, default=0, help="IVF cells (0: 4*sqrt(items))")
    p.add_argument("--nprobe", type=int, nargs="+", default=sorted({16, 32, IVF_DEFAULT_NPROBE, 128}))
    p.add_argument("--hnsw-m", type=int, default=HNSW_DEFAULTS["M"])
    p.add_argument("--ef-construction", type=int, default=HNSW_DEFAULTS["efConstruction"])
    p.add_argument("--ef-search", type=int, nargs="+", default=sorted({100, HNSW_DEFAULTS["efSearch"], 400}))
    p.add_argument("--embeddings", help="ML-1M item embeddings (.npy) instead of the SVD")
    p.add_argument("--ids", help="item ids for --embeddings (JSON list or one per line)")
    p.add_argument("--query-embeddings", help="query vectors (.npy) for --embeddings")
    p.add_argument("--quick", action="store_true", help="50k synthetic items, 200 queries, 1 repeat")
    p.add_argument("--out", default=None, help="directory for index.md/json (default docs/benchmarks; "
                                               "--quick writes only when given)")
    args = p.parse_args(argv)
    if args.embeddings and not args.ids:
        p.error("--embeddings needs --ids")
    if args.quick:
        args.items, args.queries, args.single_queries, args.repeats = [50_000], 200, 200, 1
    if args.out is None and not args.quick:
        args.out = "docs/benchmarks"
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark, prints the tables and writes the docs; returns the process exit code."""
    args = parse_args(argv)
    command = "python -m streamrank.bench.index " + shlex.join(sys.argv[1:] if argv is None else argv)
    info = machine()
    log(f"machine: {info}")
    makers = [(f"synthetic {n:,}", lambda n=n: synthetic_dataset(n, args.dim, args.queries, args.seed))
              for n in args.items if args.dataset in ("synthetic", "all")]
    if args.dataset in ("ml-1m", "all"):
        makers.append(("ml-1m", lambda: ml1m_dataset(args)))
    results: dict[str, dict[str, Any]] = {}
    for name, make in makers:
        log(f"{name}: preparing data ...")
        ds = make()
        rows = bench_dataset(ds, args)
        results[ds.name] = {"source": ds.source, "items": ds.items.shape[0], "dim": ds.items.shape[1],
                            "queries": ds.queries.shape[0], "repeats": args.repeats, "rows": rows,
                            "single_queries": min(args.single_queries, ds.queries.shape[0])}
        print(f"\n## {ds.name}\n\n{table(rows, args.k)}{verdict(rows, args.k, ds.items.shape[0])}\n", flush=True)
    if args.out:
        write_docs(Path(args.out), command.strip(), info, results, args.k)
        log(f"wrote {args.out}/index.md and index.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
