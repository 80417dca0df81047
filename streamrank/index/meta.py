"""The item index's error type, its metadata record and the input checks shared by build and load.

Kept free of faiss so that code which only reads index metadata (a registry listing, the scorer's status page)
does not import it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")
METRICS: tuple[str, ...] = ("ip", "l2")
FORMAT_VERSION = 1


class ItemIndexError(RuntimeError):
    """An item index cannot be built, searched or loaded: bad input, corrupt file, checksum or shape mismatch."""


class IndexBuildError(ItemIndexError):
    """`build_index` was given input it cannot index (empty catalog, NaN, duplicate ids, unknown kind ...)."""


class IndexLoadError(ItemIndexError):
    """Serialised index files are missing, corrupt, truncated or inconsistent with each other."""


@dataclass(frozen=True)
class IndexMeta:
    """What an index is and how good it is: recorded at build time, saved with the index, never recomputed on load.

    `recall_at_k` is the mean share of the exact top-`recall_k` found by this index, over `recall_queries`
    query vectors (see `streamrank.index.recall`), with the index's own search parameters.
    """

    kind: str
    metric: str
    dim: int
    count: int
    params: dict[str, Any] = field(default_factory=dict)
    recall_at_k: float = 1.0
    recall_k: int = 0
    recall_queries: int = 0
    build_seconds: float = 0.0
    model: str = ""
    model_version: int = 0
    created_ms: int = 0
    device: str = "cpu"
    # the recall the search parameter was tuned for (0: not tuned) and the [value, recall] steps measured
    target_recall: float = 0.0
    tuning: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values (for index_meta.json and registry metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> IndexMeta:
        """Parses a record written by `to_dict`; IndexLoadError if a field is missing or of the wrong type.

        Unknown keys are refused too: a file written by a newer format must not be half-understood.
        """
        if not isinstance(raw, dict):
            raise IndexLoadError(f"index metadata must be a JSON object, got {type(raw).__name__}")
        types: dict[str, tuple[type, ...]] = {
            "kind": (str,), "metric": (str,), "dim": (int,), "count": (int,), "params": (dict,),
            "recall_at_k": (float, int), "recall_k": (int,), "recall_queries": (int,),
            "build_seconds": (float, int), "model": (str,), "model_version": (int,), "created_ms": (int,),
            "device": (str,), "target_recall": (float, int), "tuning": (list,),
        }
        optional = {"target_recall", "tuning"}  # absent from indexes built before tuning existed
        unknown = sorted(set(raw) - set(types))
        missing = sorted(set(types) - set(raw) - optional)
        if unknown or missing:
            raise IndexLoadError(f"index metadata: missing fields {missing}, unknown fields {unknown}")
        for name, accepted in types.items():
            value = raw.get(name, 0.0 if name == "target_recall" else [])
            if isinstance(value, bool) or not isinstance(value, accepted):
                raise IndexLoadError(f"index metadata: {name}={value!r} is not {accepted[0].__name__}")
        meta = cls(**{k: raw[k] for k in types if k in raw})
        if meta.kind not in KINDS or meta.metric not in METRICS:
            raise IndexLoadError(f"index metadata: unknown kind {meta.kind!r} or metric {meta.metric!r}")
        if meta.dim <= 0 or meta.count <= 0:
            raise IndexLoadError(f"index metadata: dim={meta.dim}, count={meta.count} must be positive")
        return meta

    def to_json(self) -> str:
        """Pretty JSON of `to_dict`, sorted keys, so the file diffs and hashes stably."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def as_matrix(values: Any, what: str, dim: int | None = None,
              error: type[ItemIndexError] = ItemIndexError) -> np.ndarray:
    """`values` as a C-contiguous float32 (rows, dim) matrix, or `error` saying what is wrong.

    A 1-D vector is one row. Values must be finite after the float32 conversion (a float64 above ~3.4e38
    overflows to inf, which faiss would silently rank first or last).
    """
    try:
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused below with a clearer message
            matrix = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise error(f"{what}: not convertible to float32: {exc}") from exc
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise error(f"{what}: expected a 2-D (rows, dim) array, got shape {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise error(f"{what}: expected dim {dim}, got {matrix.shape[1]} (shape {matrix.shape})")
    if matrix.size and not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise error(f"{what}: row {bad} holds NaN or inf")
    return np.ascontiguousarray(matrix)


def check_ids(ids: Sequence[Any], rows: int) -> list[str]:
    """The ids as plain Python strings, one per row and unique; IndexBuildError otherwise."""
    if isinstance(ids, str | bytes):
        raise IndexBuildError("ids must be a sequence of item ids, not a single string")
    out = [str(i) for i in ids]
    if len(out) != rows:
        raise IndexBuildError(f"{len(out)} ids for {rows} embedding rows")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(i for i in out if i in seen or seen.add(i))
        raise IndexBuildError(f"duplicate item id {dup!r}: ids must be unique")
    return out
