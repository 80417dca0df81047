"""Loaded, verified model versions and the watcher that swaps them in while the scorer serves.

A version is read from the registry (every file checked against its manifest sha256), rebuilt, checked
for compatibility with what the scorer can supply, and given a smoke request; only then does the watcher
replace the live reference. A request takes the reference once and uses nothing else, so every response
comes from one version and says which. A version that fails is remembered and not retried; the live one
keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from streamrank.features.raw import Candidate, RequestContext
from streamrank.features.spec import FeatureSpec
from streamrank.features.tensorize import Tensorizer
from streamrank.models.factory import Ranker
from streamrank.models.ranking.artifact import model_from_files
from streamrank.registry.store import Registry, RegistryError
from streamrank.serve.versions import VersionPolicy
from streamrank.train.losses import fnc_probability

log = logging.getLogger(__name__)
T = TypeVar("T")


class IncompatibleVersion(RuntimeError):
    """A published version the scorer cannot serve (wrong kind, needs inputs it cannot supply, bad output)."""


@dataclass(frozen=True)
class LoadedRanker:
    """One ranking model version, ready to score."""

    name: str
    version: int
    preset: str
    model: Ranker
    tensorizer: Tensorizer
    checksum: str
    loaded_at: float = field(default_factory=time.time)
    # "fnc": the model learned fake negatives by plain log loss, so its outputs b become p = b / (1 - b)
    calibration: str = ""

    def score(self, context: RequestContext, candidates: list[Candidate]) -> np.ndarray:
        """Click probabilities of the candidates for one request (user side and gate computed once)."""
        return self.score_many([(context, candidates)])[0]

    def score_many(self, requests: Sequence[tuple[RequestContext, Sequence[Candidate]]]) -> list[np.ndarray]:
        """Each request's click probabilities from one tensorisation and one forward: one user row per request,
        its user side and gate shared by its own candidates only (`serve.batching`)."""
        batch = self.tensorizer.encode_requests(requests, grow=False)
        probs = self.model.score_request(batch)
        if self.calibration == "fnc":
            probs = fnc_probability(probs)
        return np.split(probs.numpy(), np.cumsum([len(c) for _, c in requests])[:-1])


@dataclass(frozen=True)
class LoadedRetriever:
    """A retrieval model version and the FAISS index built from its item tower, published together."""

    name: str
    version: int
    model_name: str
    model_version: int
    model: Any  # streamrank.models.retrieval TwoTowerModel
    index: Any  # streamrank.index ItemIndex
    checksum: str
    loaded_at: float = field(default_factory=time.time)

    def user_vector(self, context: RequestContext) -> np.ndarray:
        """The user tower's vector (1, d) for one request (float32, contiguous: what the index searches)."""
        return self.model.encode_users([context])

    def retrieve_many(self, requests: Sequence[tuple[RequestContext, int, bool]]) -> list[tuple[list[float],
                                                                                                  list[str]]]:
        """(scores, item ids) of each (context, k, exclude_seen) request, best first, from one user-tower pass
        and one index search (the largest k, each answer cut to its own; `serve.batching`)."""
        vectors = self.model.encode_users([ctx for ctx, _, _ in requests])
        exclude = [set(ctx.behaviors.item_ids) if seen else set() for ctx, _, seen in requests]
        scores, ids = self.index.search(vectors, max(k for _, k, _ in requests),
                                        exclude=exclude if any(exclude) else None)
        return [(scores[i, :len(ids[i][:k])].tolist(), ids[i][:k]) for i, (_, k, _) in enumerate(requests)]


def smoke_context() -> tuple[RequestContext, list[Candidate]]:
    """A cold-start request with two unknown items: every servable model must score it finitely."""
    return RequestContext("__smoke_user__"), [Candidate("__smoke_a__"), Candidate("__smoke_b__")]


def _rebuild(registry: Registry, version: int, what: str, build: Callable[[dict[str, bytes]], T]) -> tuple[T, Any]:
    """Reads a verified version and rebuilds it; any failure to rebuild makes it IncompatibleVersion."""
    info, files = registry.read(version)
    try:
        return build(files), info
    except Exception as exc:  # torch.load, state-dict, spec or index errors of any kind: not servable
        raise IncompatibleVersion(f"{registry.model} v{version}: not a loadable {what}: {exc}") from exc


def _check_inputs(registry: Registry, version: int, spec: FeatureSpec) -> None:
    if spec.user_fields:
        raise IncompatibleVersion(
            f"{registry.model} v{version}: needs user profile fields {list(spec.user_fields)} that the scorer has "
            "no source for (train it on stream samples, or without user_fields)")


def load_ranker(registry: Registry, version: int) -> LoadedRanker:
    """Reads, verifies and rebuilds a ranking version; raises RegistryError / IncompatibleVersion."""
    (model, preset), info = _rebuild(registry, version, "ranking model", model_from_files)
    _check_inputs(registry, version, model.spec)
    calibration = info.meta.get("calibration", "")
    if calibration not in ("", "fnc"):
        raise IncompatibleVersion(f"{registry.model} v{version}: unknown score calibration {calibration!r}")
    loaded = LoadedRanker(registry.model, version, preset, model, Tensorizer(model.spec), info.checksum,
                          calibration=calibration)
    scores = loaded.score(*smoke_context())
    if scores.shape != (2,) or not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise IncompatibleVersion(f"{registry.model} v{version}: smoke request gave {scores!r}")
    return loaded


def load_retriever(registry: Registry, version: int) -> LoadedRetriever:
    """Reads, verifies and rebuilds a retrieval model + index version; raises on any inconsistency."""
    from streamrank.index import index_from_files
    from streamrank.models.retrieval.artifact import retrieval_from_files

    (model, index), info = _rebuild(registry, version, "retrieval model + index",
                                    lambda files: (retrieval_from_files(files)[0], index_from_files(files)))
    _check_inputs(registry, version, model.spec)
    meta = info.meta
    loaded = LoadedRetriever(registry.model, version, str(meta.get("model", "")), int(meta.get("model_version", 0)),
                             model, index, info.checksum)
    vec = loaded.user_vector(smoke_context()[0])
    if vec.shape != (1, index.meta.dim) or not np.all(np.isfinite(vec)):
        raise IncompatibleVersion(
            f"{registry.model} v{version}: user vector {vec.shape} does not fit the index (dim {index.meta.dim})")
    return loaded


class ModelWatcher:
    """Polls the registry for new current versions and swaps them in (see the module docstring).

    For each ranking model it keeps the versions its `VersionPolicy` wants loaded (`versions`), the live one
    (`rankers`, what a request naming no version gets) and the model's labels (`labels`); the retrieval
    pair is one live version. Every mapping is replaced, never changed in place, so a reader that took one
    sees a consistent state.
    """

    def __init__(self, registry_root: str, rankers: list[str], retriever: str | None, poll_s: float,
                 on_change: Callable[[str, int], None] | None = None,
                 on_failure: Callable[[str, int, str], None] | None = None,
                 signing_keys: Sequence[bytes] = (), policy: VersionPolicy | None = None) -> None:
        self.root = registry_root
        self.signing_keys = tuple(signing_keys)  # set: unsigned or wrongly signed versions are not served
        self.ranker_names = list(rankers)
        self.retriever_name = retriever
        self.poll_s = poll_s
        self.policy = policy or VersionPolicy()
        self.rankers: dict[str, LoadedRanker] = {}
        self.versions: dict[str, dict[int, LoadedRanker]] = {}
        self.labels: dict[str, dict[str, int]] = {}
        self.retriever: LoadedRetriever | None = None
        self.failed: dict[str, dict[int, str]] = {}
        self._on_change = on_change
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def refresh(self) -> list[str]:
        """Loads every name whose current version differs from the live one; returns what changed."""
        changed = []
        with self._lock:  # one refresher at a time (the thread, or a caller forcing a refresh)
            for name in self.ranker_names:
                if self._refresh_ranker(name):
                    changed.append(name)
            if self.retriever_name:
                live_r = self.retriever
                loaded_r = self._maybe_load(self.retriever_name, live_r.version if live_r else None, load_retriever)
                if loaded_r is not None:
                    self.retriever = loaded_r
                    changed.append(self.retriever_name)
        return changed

    def _refresh_ranker(self, name: str) -> bool:
        """Loads the versions the policy wants, drops the others, swaps the live one; whether it changed."""
        try:
            registry = Registry(self.root, name, self.signing_keys)
            current, labels = registry.current_version(), registry.labels()
            wanted = self.policy.wanted(current, registry.list_versions(), labels)
        except RegistryError as exc:
            log.warning("%s", exc)
            return False
        live = self.rankers.get(name)
        have = self.versions.get(name, {})
        kept = {v: r for v, r in have.items() if v in wanted}
        for version in sorted(wanted - set(have)):
            loaded = self._load(name, registry, version, load_ranker)
            if loaded is not None:
                kept[version] = loaded
        if live is not None and (current not in kept):
            kept[live.version] = live  # the new live version failed (or is not there): the old one keeps serving
        self.versions = {**self.versions, name: kept}
        self.labels = {**self.labels, name: labels}
        if current not in kept or (live is not None and live.version == current):
            return False
        self.rankers = {**self.rankers, name: kept[current]}  # a new dict: readers never see it change
        log.info("serving %s v%s (was %s); loaded %s", name, current, live.version if live else None, sorted(kept))
        if self._on_change:
            self._on_change(name, current)
        return True

    def _load(self, name: str, registry: Registry, version: int, loader: Callable[[Registry, int], T]) -> T | None:
        """One version loaded, or None (remembered as failed, logged and counted, never retried)."""
        if version in self.failed.get(name, {}):
            return None
        try:
            return loader(registry, version)
        except (RegistryError, IncompatibleVersion, OSError) as exc:
            self.failed.setdefault(name, {})[version] = str(exc)
            log.error("not serving %s v%s: %s", name, version, exc)
            if self._on_failure:
                self._on_failure(name, version, str(exc))
            return None

    def _maybe_load(self, name: str, live: int | None, loader: Callable[[Registry, int], Any]) -> Any:
        try:
            registry = Registry(self.root, name, self.signing_keys)
            current = registry.current_version()
        except RegistryError as exc:
            log.warning("%s", exc)
            return None
        if current is None or current == live:
            return None
        loaded = self._load(name, registry, current, loader)
        if loaded is None:
            return None
        log.info("serving %s v%s (was %s)", name, current, live)
        if self._on_change:
            self._on_change(name, current)
        return loaded

    def start(self) -> None:
        """Starts polling in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # never let a bad version stop the watcher
                log.exception("registry refresh failed")

    def stop(self) -> None:
        """Stops polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
