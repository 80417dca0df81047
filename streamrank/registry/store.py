"""A versioned, file-system model registry with atomic publication.

Layout under `<root>/<model>/`:
    versions/v00000012/      one immutable directory per version: its files + MANIFEST.json
    CURRENT                  the name of the live version (replaced atomically with os.replace)
    labels.json              named versions, e.g. {"stable": 12, "canary": 15} (`set_label`; optional)
    .staging-*/              a version being written (never visible to readers)

Publishing writes a complete version into a staging directory, fsyncs it, renames it into versions/ (an
atomic rename on one file system) and then swaps CURRENT. A reader therefore sees either the old or the new
version, never a half-written one; it verifies every file against the manifest's sha256 before use.
Pruning keeps the live version, every labelled version and the newest `keep` others, so rollback has
somewhere to go and a scorer serving a label never loses it.

Names are confined: a model name and every file name a manifest lists must be a plain name (letters,
digits, `._-`, not starting with a dot), checked on publish, read and verify, so a hand-edited manifest
cannot make a reader open a file outside its version's directory.

Signing (optional, docs/security.md): with signing keys, publish writes `MANIFEST.sig`, an HMAC-SHA256 of
the manifest's bytes under the first key (`hmac-sha256:<key id>:<hex>`, the key id being the first 12 hex
digits of the key's sha256), and reading refuses a version that is unsigned or whose signature no key
verifies. Checksums alone give integrity against accidents; the signature gives authenticity against
anyone who can write the registry but does not hold the key. Several keys verify (rotation).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "MANIFEST.json"
SIGNATURE = "MANIFEST.sig"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LIVE_READ_ATTEMPTS = 5  # a live version replaced and pruned mid-read is read again, this often at most
CURRENT = "CURRENT"
LABELS = "labels.json"
_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class RegistryError(RuntimeError):
    """A version is missing, corrupt or cannot be made current."""


@dataclass(frozen=True)
class VersionInfo:
    """What the manifest says about one published version."""

    model: str
    version: int
    path: Path
    checksum: str
    created_ms: int
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version_name(version: int) -> str:
    return f"v{version:08d}"


def check_name(name: object, what: str = "file name") -> str:
    """`name` when it is a plain name (no separator, no `..`, not absolute, not hidden); else RegistryError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise RegistryError(f"invalid {what} {name!r}: letters, digits and ._- only, not starting with a dot")
    return name


def key_id(key: bytes) -> str:
    """The public name of a signing key: the first 12 hex digits of its sha256."""
    return hashlib.sha256(key).hexdigest()[:12]


def sign(manifest: bytes, key: bytes) -> str:
    """The signature line of a manifest under a key."""
    return f"hmac-sha256:{key_id(key)}:{hmac.new(key, manifest, hashlib.sha256).hexdigest()}"


def signature_ok(manifest: bytes, line: str, keys: Sequence[bytes]) -> bool:
    """Whether a signature line verifies the manifest under one of the keys (constant-time compare)."""
    scheme, _, rest = line.strip().partition(":")
    kid = rest.partition(":")[0]
    if scheme != "hmac-sha256":
        return False
    return any(key_id(k) == kid and hmac.compare_digest(sign(manifest, k), line.strip()) for k in keys)


class Registry:
    """Versions of one model under root/model; safe for one writer and any number of readers."""

    def __init__(self, root: str | Path, model: str, signing_keys: Sequence[bytes] = ()) -> None:
        self.model = check_name(model, "model name")
        self.signing_keys = tuple(signing_keys)
        self.base = Path(root) / model
        self.versions_dir = self.base / "versions"  # created by the first writer: readers create nothing

    # -- writing ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        with open(self.base / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(self, files: dict[str, bytes], meta: dict[str, Any], make_current: bool = True) -> VersionInfo:
        """Writes a new version with these files and metadata; makes it current unless told not to."""
        if not files:
            raise RegistryError("a version needs at least one file")
        for name in files:
            if name in (MANIFEST, SIGNATURE):
                raise RegistryError(f"invalid file name {name!r}: reserved")
            check_name(name)
        with self._lock():
            version = (self.latest_version() or 0) + 1
            staging = self.base / f".staging-{version}-{os.getpid()}"
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            entries = {}
            for name, data in files.items():
                path = staging / name
                with open(path, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                entries[name] = {"sha256": _sha256(data), "size": len(data)}
            manifest = {
                "model": self.model, "version": version, "created_ms": int(time.time() * 1000),
                "files": entries, "meta": meta,
            }
            raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
            with open(staging / MANIFEST, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            if self.signing_keys:
                with open(staging / SIGNATURE, "w") as fh:
                    fh.write(sign(raw, self.signing_keys[0]) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            _fsync_dir(staging)
            final = self.versions_dir / _version_name(version)
            os.rename(staging, final)
            _fsync_dir(self.versions_dir)
            if make_current:
                self._set_current(version)
        return self.info(version)

    def _set_current(self, version: int) -> None:
        tmp = self.base / f".{CURRENT}.tmp"
        with open(tmp, "w") as fh:
            fh.write(_version_name(version) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.base / CURRENT)
        _fsync_dir(self.base)

    def rollback(self, to: int | None = None) -> VersionInfo:
        """Makes `to` (default: the newest version older than the live one) current again; returns it."""
        with self._lock():
            live = self.current_version()
            if to is None:
                older = [v for v in self.list_versions() if live is None or v < live]
                if not older:
                    raise RegistryError(f"{self.model}: no version older than the live one ({live}) to roll back to")
                to = older[-1]
            info = self.info(to)
            self.verify(info)
            self._set_current(to)
        return info

    def set_label(self, label: str, version: int | None) -> None:
        """Points `label` (e.g. stable, canary) at `version`, or removes it (None); scorers pick the change
        up at their next poll. A labelled version is never pruned."""
        if not _LABEL.fullmatch(label):
            raise RegistryError(f"invalid label {label!r}: 1-32 of a-z, 0-9, _ and -, starting with a letter")
        with self._lock():
            labels = self.labels()
            if version is None:
                if label not in labels:
                    raise RegistryError(f"{self.model} has no label {label!r} (labels: {sorted(labels) or 'none'})")
                del labels[label]
            else:
                self.info(version)  # exists, and is signed where keys are set
                labels[label] = version
            tmp = self.base / f".{LABELS}.tmp"
            with open(tmp, "w") as fh:
                json.dump(labels, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.base / LABELS)
            _fsync_dir(self.base)

    def prune(self, keep: int) -> list[int]:
        """Deletes all but the live version, the labelled ones and the newest `keep` others; returns the
        deleted versions."""
        if keep < 0:
            raise RegistryError("keep must be >= 0")
        with self._lock():
            live = self.current_version()
            kept = {live, *self.labels().values()}
            others = [v for v in self.list_versions() if v not in kept]
            doomed = others[: max(0, len(others) - keep)]
            for v in doomed:
                shutil.rmtree(self.versions_dir / _version_name(v), ignore_errors=True)
            for stale in self.base.glob(".staging-*"):
                shutil.rmtree(stale, ignore_errors=True)
        return doomed

    # -- reading ------------------------------------------------------------------------------------
    def list_versions(self) -> list[int]:
        """Published versions, oldest first."""
        out = []
        for p in self.versions_dir.glob("v*"):
            if p.is_dir() and p.name[1:].isdigit() and (p / MANIFEST).exists():
                out.append(int(p.name[1:]))
        return sorted(out)

    def latest_version(self) -> int | None:
        """The highest published version number (live or not)."""
        versions = self.list_versions()
        return versions[-1] if versions else None

    def current_version(self) -> int | None:
        """The live version, or None before the first publication."""
        try:
            name = (self.base / CURRENT).read_text().strip()
        except FileNotFoundError:
            return None
        if not name.startswith("v") or not name[1:].isdigit():
            raise RegistryError(f"{self.base / CURRENT} is corrupt: {name!r}")
        return int(name[1:])

    def labels(self) -> dict[str, int]:
        """Label -> version ({} when no label was ever set)."""
        try:
            raw = (self.base / LABELS).read_text()
        except FileNotFoundError:
            return {}
        try:
            labels = json.loads(raw)
            if not isinstance(labels, dict) or not all(
                    isinstance(k, str) and _LABEL.fullmatch(k) and type(v) is int for k, v in labels.items()):
                raise ValueError("not an object of label: version")
        except ValueError as exc:
            raise RegistryError(f"{self.base / LABELS} is corrupt: {exc}") from exc
        return labels

    def info(self, version: int) -> VersionInfo:
        """The manifest of one version (file names checked, signature checked when keys are set; no file
        verification)."""
        path = self.versions_dir / _version_name(version)
        try:
            raw = (path / MANIFEST).read_bytes()
        except FileNotFoundError as exc:
            raise RegistryError(f"{self.model}: version {version} does not exist") from exc
        if self.signing_keys:
            try:
                line = (path / SIGNATURE).read_text()
            except FileNotFoundError as exc:
                raise RegistryError(f"{self.model} v{version} is not signed, and signing keys are set") from exc
            if not signature_ok(raw, line, self.signing_keys):
                raise RegistryError(f"{self.model} v{version}: the manifest's signature does not verify under any "
                                    "configured key (tampered, or signed with a key not configured here)")
        try:
            manifest = json.loads(raw)
            files = manifest["files"]
            if not isinstance(files, dict):
                raise TypeError("files is not an object")
            for name, entry in files.items():
                check_name(name)
                if name in (MANIFEST, SIGNATURE) or not isinstance(entry, dict):
                    raise RegistryError(f"invalid manifest entry {name!r}")
            created = int(manifest["created_ms"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{self.model} v{version}: unreadable manifest ({exc})") from exc
        return VersionInfo(self.model, version, path, _sha256(raw), created, files, manifest.get("meta", {}))

    def current(self) -> VersionInfo | None:
        """The live version's manifest, or None."""
        version = self.current_version()
        return None if version is None else self.info(version)

    def _read_checked(self, info: VersionInfo, name: str) -> bytes:
        check_name(name)  # VersionInfo can be built by hand: confine again where the file is opened
        entry = info.files[name]
        try:
            data = (info.path / name).read_bytes()
        except FileNotFoundError as exc:
            raise RegistryError(f"{self.model} v{info.version}: {name} is missing (pruned while reading?)") from exc
        if len(data) != entry["size"] or _sha256(data) != entry["sha256"]:
            raise RegistryError(f"{self.model} v{info.version}: {name} does not match its checksum")
        return data

    def verify(self, info: VersionInfo) -> None:
        """Raises RegistryError unless every file of the version matches its manifest checksum."""
        for name in info.files:
            self._read_checked(info, name)

    def read(self, version: int | None = None) -> tuple[VersionInfo, dict[str, bytes]]:
        """A verified version's manifest and file contents (default: the live one).

        Reading the live version retries when a newer publication made it current and pruning removed the
        one being read (a slow reader beside a fast publisher); a named version is read once.
        """
        if version is not None:
            info = self.info(version)
            return info, {name: self._read_checked(info, name) for name in info.files}
        for attempt in range(_LIVE_READ_ATTEMPTS):
            live = self.current_version()
            if live is None:
                raise RegistryError(f"{self.model}: nothing published yet")
            try:
                info = self.info(live)
                return info, {name: self._read_checked(info, name) for name in info.files}
            except RegistryError:
                if attempt == _LIVE_READ_ATTEMPTS - 1 or self.current_version() == live:
                    raise  # the live version itself is broken, not replaced
        raise AssertionError("unreachable")


def read_signing_keys(path: str) -> tuple[bytes, ...]:
    """Signing keys from a key file: one key per non-empty line (the first signs, all verify); a key is
    the line's bytes, at least 32 characters (e.g. `openssl rand -hex 32`)."""
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise RegistryError(f"cannot read the registry signing key file {path}: {exc.strerror or exc}") from exc
    if not lines:
        raise RegistryError(f"the registry signing key file {path} is empty")
    short = [n for n, line in enumerate(lines, 1) if len(line) < 32]
    if short:
        raise RegistryError(f"{path}: key on line {short[0]} is shorter than 32 characters")
    return tuple(line.encode() for line in lines)


def open_registry(settings: Any, model: str) -> Registry:
    """The registry of one model as the settings configure it (root, signing keys)."""
    keys = read_signing_keys(settings.registry_signing_key_file) if settings.registry_signing_key_file else ()
    return Registry(settings.registry_root(), model, keys)
