"""An offline data split tensorised once, so that an epoch is tensor work only.

`TensorDataset.build` runs a split (any `ExampleSource`) through the one `Tensorizer` in chunks, with frozen
vocabularies, and keeps every field of the resulting batches in one array per field, in compact dtypes
(int32 ids, bool masks, float32 dense features; about 13 bytes per behaviour slot). Above
`memmap_bytes` the arrays are memory-mapped files in a directory (given, or a temporary one removed with the
dataset), so a split larger than memory still trains. `batch(idx)` gathers rows and widens ids back to
int64: what `Tensorizer.encode(source.examples(idx))` returns, bit for bit (a test holds them equal), without
building a single Python object per example. `fit`, `predict` and the benchmarks take it wherever they take
an `ExampleSource`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from streamrank.features.batch import Batch, ItemSide, UserSide
from streamrank.features.raw import RawExample
from streamrank.features.tensorize import Tensorizer
from streamrank.train.offline import ExampleSource, ListSource

MEMMAP_BYTES = 2 << 30  # splits larger than this are memory-mapped


def _compact(dtype: torch.dtype) -> np.dtype:
    """Storage dtype of a tensor field: int64 ids as int32 (vocabularies stay far below 2^31)."""
    return np.dtype(np.int32) if dtype == torch.int64 else torch.empty(0, dtype=dtype).numpy().dtype


def row_bytes(*sides: UserSide | ItemSide) -> int:
    """Stored bytes per row of these tensor dataclasses' fields (compact dtypes)."""
    return sum(getattr(side, f.name)[:1].numel() * _compact(getattr(side, f.name).dtype).itemsize
               for side in sides for f in fields(side))


def alloc_fields(side: UserSide | ItemSide, n: int, directory: str | Path | None, prefix: str) -> dict[str, np.ndarray]:
    """One (n, ...) array per field of `side`, in memory or as .npy files memory-mapped in `directory`."""
    out = {}
    for f in fields(side):
        t = getattr(side, f.name)
        shape, dtype = (n, *t.shape[1:]), _compact(t.dtype)
        if directory is None:
            out[f.name] = np.empty(shape, dtype=dtype)
        else:
            path = Path(directory) / f"{prefix}.{f.name}.npy"
            out[f.name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    return out


def fill_fields(store: dict[str, np.ndarray], side: UserSide | ItemSide, start: int) -> None:
    """Copy a chunk's tensors into the store at rows start.."""
    for name, arr in store.items():
        t = getattr(side, name)
        arr[start:start + len(t)] = t.numpy()


def gather_fields(store: dict[str, np.ndarray], rows: np.ndarray,
                  device: torch.device | str) -> dict[str, torch.Tensor]:
    """Rows of every stored field as tensors on `device`, ids widened back to int64."""
    out = {}
    for name, arr in store.items():
        t = torch.from_numpy(np.ascontiguousarray(arr[rows]))
        out[name] = (t.long() if t.dtype == torch.int32 else t).to(device)
    return out


@dataclass
class TensorDataset:
    """A split as stored arrays: one per UserSide / ItemSide field, plus labels and per-row user keys."""

    users: dict[str, np.ndarray]
    items: dict[str, np.ndarray]
    labels: np.ndarray  # the source's labels (evaluation)
    targets: np.ndarray  # the encoded training labels (the spec's label), float32
    user_keys: np.ndarray  # small integer id of each row's user (CL keeps same-user rows out of negatives)
    sessions: np.ndarray | None
    source: ExampleSource = field(repr=False)
    _tmpdir: str | None = field(default=None, repr=False)
    _owner_pid: int = field(default_factory=os.getpid, repr=False)  # forked readers must not delete the files

    def __len__(self) -> int:
        return len(self.labels)

    def __del__(self) -> None:
        if self._tmpdir and os.getpid() == self._owner_pid:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored arrays."""
        return sum(a.nbytes for a in (*self.users.values(), *self.items.values()))

    @classmethod
    def build(cls, source: ExampleSource, tensorizer: Tensorizer, chunk: int = 16_384,
              directory: str | Path | None = None, memmap_bytes: int = MEMMAP_BYTES,
              progress: bool = False, desc: str = "tensorise") -> TensorDataset:
        """Tensorise `source` once (frozen vocabularies: unseen ids map to OOV, as in evaluation)."""
        n = len(source)
        if n == 0:
            raise ValueError("cannot tensorise an empty split")
        first = tensorizer.encode(source.examples(np.arange(min(chunk, n))), grow=False)
        tmpdir = None
        if directory is None and n * row_bytes(first.users, first.items) > memmap_bytes:
            directory = tmpdir = tempfile.mkdtemp(prefix="streamrank-tensors-")
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        users = alloc_fields(first.users, n, directory, "users")
        items = alloc_fields(first.items, n, directory, "items")
        keys = np.empty(n, dtype=np.int64)
        targets = np.empty(n, dtype=np.float32)
        key_of: dict[str, int] = {}
        batch: Batch | None = first
        for start in tqdm(range(0, n, chunk), desc=desc, disable=not progress, leave=False):
            idx = np.arange(start, min(start + chunk, n))
            examples: list[RawExample] = source.examples(idx)
            if batch is None:
                batch = tensorizer.encode(examples, grow=False)
            fill_fields(users, batch.users, start)
            fill_fields(items, batch.items, start)
            assert batch.labels is not None
            targets[start:start + len(idx)] = batch.labels.numpy()
            keys[start:start + len(idx)] = [key_of.setdefault(e.user_id, len(key_of)) for e in examples]
            batch = None
        return cls(users, items, source.labels, targets, keys, source.sessions, source, tmpdir)

    def subset(self, rows: np.ndarray) -> TensorDataset:
        """The rows selected by a boolean mask or index array, in memory (e.g. one scenario's rows)."""
        if hasattr(self.source, "subset"):
            src = self.source.subset(rows)  # type: ignore[attr-defined]
        else:
            idx = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
            src = ListSource(self.source.examples(idx), None if self.sessions is None else self.sessions[rows])
        return TensorDataset({k: v[rows] for k, v in self.users.items()}, {k: v[rows] for k, v in self.items.items()},
                             np.asarray(self.labels)[rows], self.targets[rows], self.user_keys[rows],
                             None if self.sessions is None else self.sessions[rows], src)

    def examples(self, idx: np.ndarray | list[int]) -> list[RawExample]:
        """The source's examples (for code that needs them; training and prediction use `batch`)."""
        return self.source.examples(idx)

    def batch(self, idx: np.ndarray | list[int], device: torch.device | str = "cpu") -> Batch:
        """Rows `idx` as a training-layout Batch (one user row per example), ids widened to int64."""
        rows = np.asarray(idx, dtype=np.int64)
        labels = torch.from_numpy(self.targets[rows]).to(device)
        return Batch(UserSide(**gather_fields(self.users, rows, device)),
                     ItemSide(**gather_fields(self.items, rows, device)),
                     torch.arange(len(rows), device=device), labels)

    def keys(self, idx: np.ndarray | list[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """User keys of rows `idx`."""
        return torch.from_numpy(self.user_keys[np.asarray(idx, dtype=np.int64)]).to(device)


@dataclass
class TensorContexts:
    """The user side of a split tensorised once (the retrieval trainer's users: `RetrievalProtocol.contexts`),
    so that its epochs and validations gather rows instead of encoding behaviour sequences again."""

    users: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.users.values())))

    @classmethod
    def build(cls, encode_rows: Callable[[np.ndarray], UserSide], n: int, chunk: int = 16_384) -> TensorContexts:
        """`encode_rows(rows)` gives the UserSide of split rows `rows`; it is called once per chunk."""
        if n == 0:
            raise ValueError("cannot tensorise an empty split")
        store: dict[str, np.ndarray] | None = None
        for start in range(0, n, chunk):
            side = encode_rows(np.arange(start, min(start + chunk, n)))
            if store is None:
                store = alloc_fields(side, n, None, "users")
            fill_fields(store, side, start)
        assert store is not None
        return cls(store)

    def rows(self, idx: np.ndarray | list[int], device: torch.device | str = "cpu") -> UserSide:
        """User rows `idx`, ids widened to int64."""
        return UserSide(**gather_fields(self.users, np.asarray(idx, dtype=np.int64), device))
