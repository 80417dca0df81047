"""Resumable benchmark runs: every fit's result is saved as a *part* the moment it finishes.

A converged benchmark on this 2-core machine takes hours per seed, longer than one working session. Each
fit (protocol, run key, seed) therefore writes `<root>/<fit id>.json` (its summary metrics and fit info,
plus the settings that produced it) and `<fit id>.npz` (its per-session metric arrays, what the paired
tests need). A later run with the same settings skips the fits already stored and reports over all of
them, so seeds can be added one session at a time and a killed run loses only the fits in flight. A fit's
id carries a digest of its model's whole configuration (`config_tag`), so a changed default refits.

A part whose recorded settings differ from the run's is never mixed in: it is ignored with a one-line
note. One setting may be an epoch cap (`cap_key`): a fit that early stopping ended after E epochs is the
same fit under any cap >= E (nothing in training depends on the cap), so it is reused; a fit its cap ended
is refitted, and continues from the epoch checkpoint it kept (`train.fit_checkpoint`).
Arrays load with `allow_pickle=False`, so nothing read back can execute code.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from streamrank.bench.parallel import run_jobs

J = TypeVar("J")

FORMAT = 1


@dataclass
class Part:
    """One fit's stored result: JSON-ready `meta` and named numpy arrays."""

    meta: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    early_stopped_at: int | None = None  # epochs run when early stopping ended the fit; None: its cap did


def _normalise(settings: dict) -> dict:
    """The settings as JSON would give them back (tuples as lists, paths as strings), for comparison."""
    return json.loads(json.dumps(settings, default=str, sort_keys=True))


def fit_id(*fields: object) -> str:
    """A file-name-safe id for a fit, e.g. fit_id("chronological", "aw_moe[gate=user only]", 2)."""
    raw = ".".join(str(f) for f in fields)
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", raw)


def config_tag(config: dict) -> str:
    """A short digest of a model's full configuration, for its fit id: when a code change alters a preset
    or a default, the stored fits of the old configuration are no longer picked up (a new id is refitted)."""
    text = json.dumps(_normalise(config), sort_keys=True)
    return "c" + hashlib.sha1(text.encode()).hexdigest()[:8]


def default_root(out: Path, bench: str, dataset_label: str, quick: bool) -> Path:
    """Where a benchmark keeps its parts unless told: <out>/parts/<bench>-<dataset>[-quick]."""
    return Path(out) / "parts" / f"{bench}-{dataset_label}{'-quick' if quick else ''}"


class PartStore:
    """The parts of one benchmark under `root`, valid for one settings dict (see the module docstring)."""

    def __init__(self, root: Path, settings: dict, cap_key: str | None = None) -> None:
        self.root = Path(root)
        self.settings = _normalise(settings)
        self.cap_key = cap_key
        self.ignored: list[str] = []

    def _same_fit(self, doc: dict) -> bool:
        """Whether a stored part is this run's fit: equal settings, or equal but for an epoch cap that the
        stored fit's early stopping stayed within."""
        stored = doc.get("settings")
        if doc.get("format") != FORMAT or not isinstance(stored, dict):
            return False
        if stored == self.settings or self.cap_key is None:
            return stored == self.settings
        cap, stopped = self.settings.get(self.cap_key), doc.get("early_stopped_at")
        others_equal = ({k: v for k, v in stored.items() if k != self.cap_key}
                        == {k: v for k, v in self.settings.items() if k != self.cap_key})
        return others_equal and isinstance(stopped, int) and isinstance(cap, int) and stopped <= cap

    def checkpoint(self, fid: str) -> Path:
        """Where fit `fid` keeps its epoch checkpoint: the name carries a digest of the settings but the cap,
        so a run with other settings (another lr) never resumes this one's, while a larger cap does."""
        kept = {k: v for k, v in self.settings.items() if k != self.cap_key}
        return self.root / f"{fid}.{config_tag(kept)}.ckpt"

    def _paths(self, fid: str) -> tuple[Path, Path]:
        return self.root / f"{fid}.json", self.root / f"{fid}.npz"

    def load(self, fid: str) -> Part | None:
        """The stored part of fit `fid`, or None if there is none for these settings."""
        meta_path, arr_path = self._paths(fid)
        if not meta_path.exists():
            return None
        stored = json.loads(meta_path.read_text())
        if not self._same_fit(stored):
            if fid not in self.ignored:
                self.ignored.append(fid)
            return None
        arrays: dict[str, np.ndarray] = {}
        if arr_path.exists():
            with np.load(arr_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        return Part(stored["meta"], arrays, stored.get("early_stopped_at"))

    def save(self, fid: str, part: Part) -> None:
        """Writes fit `fid`'s part (arrays first, then the JSON that marks it complete)."""
        self.root.mkdir(parents=True, exist_ok=True)
        meta_path, arr_path = self._paths(fid)
        if part.arrays:
            tmp = arr_path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **part.arrays)
            tmp.replace(arr_path)
        doc = {"format": FORMAT, "settings": self.settings, "meta": part.meta,
               "early_stopped_at": part.early_stopped_at}
        tmp_json = meta_path.with_suffix(".json.tmp")
        tmp_json.write_text(json.dumps(doc, indent=1, default=str))
        tmp_json.replace(meta_path)

    def note(self) -> str | None:
        """A one-line note on parts ignored for differing settings, if any."""
        if not self.ignored:
            return None
        return (f"{len(self.ignored)} stored part(s) in {self.root} were made with other settings and are not "
                f"used (e.g. {self.ignored[0]})")


def run_resumable(jobs: Sequence[J], store: PartStore, run: Callable[[J], Part], workers: int, threads: int,
                  device: str | None, fid: Callable[[J], str], progress: bool = True,
                  prepare: Callable[[list[J]], None] | None = None) -> list[Part]:
    """Every job's part, in the jobs' order: loaded from `store` where one is kept for these settings, else
    fitted (`bench.parallel.run_jobs`) and saved the moment it finishes. `prepare(todo)` runs first with the
    jobs that must be fitted (e.g. to build only the data they need)."""
    stored = [store.load(fid(j)) for j in jobs]
    todo = [j for j, part in zip(jobs, stored, strict=True) if part is None]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} fits already in {store.root}; {len(todo)} to run", flush=True)
    if store.note():
        print(store.note(), flush=True)
    if prepare is not None:
        prepare(todo)
    fresh = iter(run_jobs(todo, run, workers, threads, device, progress=progress, label=fid,
                          on_result=lambda job, part: store.save(fid(job), part)))
    return [part if part is not None else next(fresh) for part in stored]
