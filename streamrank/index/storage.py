"""Serialising an item index: named files for the model registry, and a checksummed directory on disk.

Files (docs/index.md):

- ``index.faiss``: `faiss.serialize_index` of the CPU index (a GPU index is copied to CPU first).
- ``ids.json``: the item ids, a JSON list of strings; entry i names row i.
- ``index_meta.json``: ``{"format": 1, "meta": IndexMeta, "files": {name: {"sha256", "bytes"}}}`` — the
  metadata plus the checksums of the two files above, so `index_from_files` refuses a corrupted or swapped
  file even when the caller (the registry) has checked nothing.

`save_index` adds ``checksums.json`` (sha256 of all three files, written last) to a directory; `load_index`
verifies it before parsing anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from streamrank.index import backend
from streamrank.index.faiss_index import ItemIndex
from streamrank.index.meta import FORMAT_VERSION, IndexLoadError, IndexMeta, ItemIndexError

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"
META_FILE = "index_meta.json"
CHECKSUMS_FILE = "checksums.json"
FILES = (INDEX_FILE, IDS_FILE, META_FILE)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def index_files(index: ItemIndex) -> dict[str, bytes]:
    """The index as named files (index.faiss, ids.json, index_meta.json) for the registry to store.

    The faiss index is serialised from CPU (`index_gpu_to_cpu` for a GPU index), so any machine can load it.
    """
    cpu = backend.to_cpu(index.faiss_index, index.meta.device == "cuda")
    blob = faiss.serialize_index(cpu).tobytes()
    ids = json.dumps(index.ids, ensure_ascii=False).encode("utf-8")
    record = {"format": FORMAT_VERSION, "meta": dataclasses.replace(index.meta, device="cpu").to_dict(),
              "files": {INDEX_FILE: {"sha256": _sha256(blob), "bytes": len(blob)},
                        IDS_FILE: {"sha256": _sha256(ids), "bytes": len(ids)}}}
    return {INDEX_FILE: blob, IDS_FILE: ids, META_FILE: json.dumps(record, indent=2, sort_keys=True).encode()}


def _parse_json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndexLoadError(f"{name} is not valid UTF-8 JSON: {exc}") from exc


def _read_record(files: dict[str, bytes]) -> IndexMeta:
    """Parses index_meta.json and checks the other files against the sizes and checksums it records."""
    missing = [name for name in FILES if name not in files]
    if missing:
        raise IndexLoadError(f"index files missing: {missing}")
    record = _parse_json(files[META_FILE], META_FILE)
    if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
        fmt = record.get("format") if isinstance(record, dict) else None
        raise IndexLoadError(f"{META_FILE}: unsupported format {fmt!r} (expected {FORMAT_VERSION})")
    recorded = record.get("files")
    if not isinstance(recorded, dict):
        raise IndexLoadError(f"{META_FILE}: no file checksums")
    for name in (INDEX_FILE, IDS_FILE):
        entry = recorded.get(name)
        if not isinstance(entry, dict) or entry.get("sha256") != _sha256(files[name]):
            raise IndexLoadError(f"{name}: checksum does not match {META_FILE} (corrupt, truncated or swapped)")
    return IndexMeta.from_dict(record.get("meta"))


def _read_ids(data: bytes, count: int) -> list[str]:
    ids = _parse_json(data, IDS_FILE)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise IndexLoadError(f"{IDS_FILE} must be a JSON list of strings")
    if len(ids) != count:
        raise IndexLoadError(f"{IDS_FILE} lists {len(ids)} ids, metadata says count={count}")
    if len(set(ids)) != len(ids):
        raise IndexLoadError(f"{IDS_FILE} holds duplicate ids")
    return ids


def index_from_files(files: dict[str, bytes], use_gpu: bool | None = None) -> ItemIndex:
    """Rebuilds an `ItemIndex` from `index_files` output; IndexLoadError for anything inconsistent.

    Checks the recorded checksums, that count == len(ids) == the faiss index's ntotal, the dim, kind and
    metric, then re-applies the search parameters (efSearch/nprobe) and moves flat/IVF to a GPU when wanted.
    """
    meta = _read_record(files)
    ids = _read_ids(files[IDS_FILE], meta.count)
    try:
        cpu = faiss.deserialize_index(np.frombuffer(files[INDEX_FILE], dtype=np.uint8))
    except Exception as exc:  # faiss raises RuntimeError subclasses with C++ messages
        raise IndexLoadError(f"{INDEX_FILE} cannot be deserialised: {exc}") from exc
    backend.check_faiss_index(cpu, meta.kind, meta.metric, meta.dim, meta.count)
    try:
        gpu = backend.want_gpu(use_gpu) and meta.kind != "hnsw"
    except ItemIndexError as exc:
        raise IndexLoadError(str(exc)) from exc
    index, resources = backend.to_gpu(cpu) if gpu else (cpu, None)
    backend.apply_search_params(index, meta.kind, meta.params, gpu)
    return ItemIndex(index, ids, dataclasses.replace(meta, device="cuda" if gpu else "cpu"), resources)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_index(index: ItemIndex, path: str | os.PathLike[str]) -> Path:
    """Writes the index files and checksums.json (sha256 of each, written last) into directory `path`.

    Each file is written to a temporary name and renamed, so a crash leaves either the old manifest (whose
    checksums then refuse the half-new directory) or a complete new one.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    files = index_files(index)
    for name, data in files.items():
        _write_atomic(root / name, data)
    manifest = {"files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in files.items()}}
    _write_atomic(root / CHECKSUMS_FILE, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return root


def load_index(path: str | os.PathLike[str], use_gpu: bool | None = None) -> ItemIndex:
    """Loads a `save_index` directory after verifying every file against checksums.json (IndexLoadError if not)."""
    root = Path(path)
    try:
        manifest = _parse_json((root / CHECKSUMS_FILE).read_bytes(), CHECKSUMS_FILE)
    except OSError as exc:
        raise IndexLoadError(f"{root}: no readable {CHECKSUMS_FILE}: {exc}") from exc
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict) or any(name not in listed for name in FILES):
        raise IndexLoadError(f"{root / CHECKSUMS_FILE} does not list {list(FILES)}")
    files: dict[str, bytes] = {}
    for name in FILES:
        try:
            data = (root / name).read_bytes()
        except OSError as exc:
            raise IndexLoadError(f"{root / name}: cannot read: {exc}") from exc
        entry = listed[name]
        if not isinstance(entry, dict) or entry.get("sha256") != _sha256(data):
            raise IndexLoadError(f"{root / name}: sha256 does not match {CHECKSUMS_FILE} (corrupt or truncated)")
        files[name] = data
    return index_from_files(files, use_gpu)
