"""faiss-level plumbing for the item index: index construction, parameters, threads and the GPU path.

Index kinds (all store the full float32 vectors, so returned scores are exact inner products / distances):

- ``flat``: `IndexFlatIP` / `IndexFlatL2`, exact brute force.
- ``ivf``:  `IndexIVFFlat` over a flat coarse quantizer (k-means with `nlist` cells); searches `nprobe` cells.
- ``hnsw``: `IndexHNSWFlat(dim, M, metric)` — with ``metric="ip"`` faiss's own inner-product HNSW
  (`METRIC_INNER_PRODUCT`); vectors are not normalised, so the score stays the two-tower dot product.

Threads: OpenMP's thread count is a *per-thread* setting in the libgomp that faiss wheels link (a value set
on the main thread does not reach the scorer's worker threads), so every search sets it on the calling thread:
one OpenMP thread for batches of up to SMALL_BATCH queries (the scorer's case: concurrency comes from serving
threads, and a parallel region per single query only adds wake-up latency and oversubscription), all cores for
larger batches and for builds.

GPU: taken only when faiss reports GPUs (`faiss.get_num_gpus() > 0`, i.e. a faiss-gpu build on a CUDA machine).
Flat and IVF indexes are copied to GPU 0 with `index_cpu_to_gpu`; HNSW has no GPU implementation and stays on
CPU. This path is not exercised here (faiss-cpu, no GPU): the CPU path is the tested one.
"""

from __future__ import annotations

import math
import os
from typing import Any

import faiss

from streamrank.index.meta import IndexBuildError, IndexLoadError

AUTO_FLAT_MAX = 250_000  # kind="auto": exact search up to this many items (docs/index.md, "Why")
AUTO_CPU_KIND = "ivf"  # kind="auto" above AUTO_FLAT_MAX on CPU (docs/benchmarks/index.md)
AUTO_GPU_KIND = "ivf"  # ... on GPU (faiss has no GPU HNSW)
SMALL_BATCH = 16  # batches up to this size search with one OpenMP thread
GPU_MAX_K = 2048  # faiss GPU k-selection limit

HNSW_DEFAULTS: dict[str, int] = {"M": 32, "efConstruction": 80, "efSearch": 200}
IVF_DEFAULT_NPROBE = 64
IVF_POINTS_PER_CELL = 256  # k-means training rows per cell (faiss's own cap); fewer triggers its warning at 39


def all_threads() -> int:
    """Cores this process may use (affinity-aware), for builds and large batches."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def set_threads_for_batch(batch: int) -> None:
    """Sets the calling thread's OpenMP thread count for a search of `batch` queries (see module docstring)."""
    faiss.omp_set_num_threads(1 if batch <= SMALL_BATCH else all_threads())


def gpu_available() -> bool:
    """True when this faiss build can use a GPU: a faiss-gpu build that sees at least one device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def want_gpu(use_gpu: bool | None) -> bool:
    """Resolves the `use_gpu` argument: None means "if there is one"; True without a GPU is an error."""
    if use_gpu is None:
        return gpu_available()
    if use_gpu and not gpu_available():
        raise IndexBuildError("use_gpu=True but this faiss build has no GPU (install faiss-gpu on a CUDA machine)")
    return bool(use_gpu)


def auto_kind(count: int, gpu: bool) -> str:
    """The kind `kind="auto"` picks: flat up to AUTO_FLAT_MAX items, else the benchmark's choice (IVF on GPU)."""
    if count <= AUTO_FLAT_MAX:
        return "flat"
    return AUTO_GPU_KIND if gpu else AUTO_CPU_KIND


def default_nlist(count: int) -> int:
    """IVF cells for `count` items: about 4·sqrt(count), but at least 39 training rows per cell."""
    return max(1, min(round(4 * math.sqrt(count)), count // 39))


def resolve_params(kind: str, count: int, params: dict[str, Any]) -> dict[str, int]:
    """The full parameter set of a kind (defaults filled in), or IndexBuildError for unknown/invalid values.

    Unknown names are refused rather than ignored, so a typo (``ef_search``) cannot silently build the default.
    """
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise IndexBuildError(f"{kind} parameter {name}={value!r} must be a positive integer")
    if kind == "flat":
        defaults: dict[str, int] = {}
    elif kind == "hnsw":
        defaults = dict(HNSW_DEFAULTS)
    elif kind == "ivf":
        nlist = min(params.get("nlist", default_nlist(count)), count)
        defaults = {"nlist": nlist, "nprobe": min(IVF_DEFAULT_NPROBE, nlist),
                    "train_size": min(count, nlist * IVF_POINTS_PER_CELL)}
    else:
        raise IndexBuildError(f"unknown index kind {kind!r}; expected flat, ivf, hnsw or auto")
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise IndexBuildError(f"unknown parameter(s) {unknown} for a {kind} index; accepted: {sorted(defaults)}")
    out = {**defaults, **{k: v for k, v in params.items() if k != "nlist"}}
    if kind == "ivf":
        out["nprobe"] = min(out["nprobe"], out["nlist"])
        out["train_size"] = min(max(out["train_size"], out["nlist"]), count)
    return out


def faiss_metric(metric: str) -> int:
    """The faiss metric constant for "ip" or "l2"."""
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def new_cpu_index(kind: str, metric: str, dim: int, params: dict[str, int]) -> faiss.Index:
    """An empty (untrained, for IVF) CPU index of `kind`."""
    if kind == "flat":
        return faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["M"], faiss_metric(metric))
        index.hnsw.efConstruction = params["efConstruction"]
        return index
    quantizer = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss_metric(metric))
    index.referenced_objects = [quantizer]  # keep the Python quantizer alive as long as the index
    return index


def search_params_of(kind: str, params: dict[str, Any]) -> dict[str, int]:
    """The search-time subset of a kind's parameters (what must be re-applied after loading)."""
    names = {"hnsw": ("efSearch",), "ivf": ("nprobe",)}.get(kind, ())
    return {n: int(params[n]) for n in names if n in params}


def apply_search_params(index: faiss.Index, kind: str, params: dict[str, Any], gpu: bool) -> None:
    """Sets efSearch / nprobe on a faiss index (CPU or GPU). Call before serving; not while searching."""
    space = faiss.GpuParameterSpace() if gpu else faiss.ParameterSpace()
    for name, value in search_params_of(kind, params).items():
        space.set_index_parameter(index, name, value)


def escalated_params(kind: str, index: faiss.Index, scale: int, fetch: int) -> tuple[Any, bool]:
    """faiss SearchParameters `scale` times wider than the index's own, and whether that is exhaustive.

    Used when filtering left a query short of k results: IVF probes more cells (up to all of them), HNSW widens
    its beam (up to the catalog size). Flat search is always exhaustive.
    """
    if kind == "ivf":
        ivf = ivf_of(index)
        nprobe = min(ivf.nlist, ivf.nprobe * scale)
        return faiss.SearchParametersIVF(nprobe=nprobe), nprobe >= ivf.nlist
    if kind == "hnsw":
        ef = min(index.ntotal, max(index.hnsw.efSearch, fetch) * scale)
        return faiss.SearchParametersHNSW(efSearch=ef), ef >= index.ntotal
    return None, True


def ivf_of(index: faiss.Index) -> Any:
    """The IVF part of an IVF index (it has `nlist`, `nprobe` and the k-means parameters `cp`), CPU or GPU."""
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, TypeError):  # a GPU IVF index is not a faiss.IndexIVF but carries the same fields
        return index


def to_gpu(index: faiss.Index) -> tuple[faiss.Index, Any]:
    """A GPU copy of a CPU index on device 0 and the resources object that must outlive it (untested here)."""
    resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(resources, 0, index), resources


def to_cpu(index: faiss.Index, gpu: bool) -> faiss.Index:
    """A CPU index for serialisation: `index_gpu_to_cpu` for GPU indexes, the index itself otherwise."""
    return faiss.index_gpu_to_cpu(index) if gpu else index


def check_faiss_index(index: faiss.Index, kind: str, metric: str, dim: int, count: int) -> None:
    """IndexLoadError unless a deserialised faiss index is of `kind` and `metric` with `dim` and `count` rows."""
    expected = {"flat": faiss.IndexFlat, "ivf": faiss.IndexIVFFlat, "hnsw": faiss.IndexHNSWFlat}[kind]
    if not isinstance(index, expected):
        raise IndexLoadError(f"index file holds a {type(index).__name__}, metadata says {kind}")
    if index.metric_type != faiss_metric(metric):
        raise IndexLoadError(f"index file metric {index.metric_type} does not match metadata metric {metric!r}")
    if index.d != dim:
        raise IndexLoadError(f"index file has dim {index.d}, metadata says {dim}")
    if index.ntotal != count:
        raise IndexLoadError(f"index file holds {index.ntotal} vectors, metadata says {count}")
