"""Which versions of a ranking model the scorer keeps loaded: its version policy (TF-Serving's
model_version_policy, with labels as its version labels).

- `current` (default): the registry's CURRENT version;
- `latest:N`: the N newest published versions;
- `specific:V1,V2`: those versions (the ones still published).

Whatever the policy, CURRENT and every labelled version (`streamrank registry label`) are loaded too: CURRENT
answers requests that name no version, a label answers requests that name it (stable, canary). A Rank request
may name a version or a label; one that is not loaded is NOT_FOUND, never silently another version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class VersionPolicy:
    """A parsed `serve_version_policy` (see the module docstring)."""

    kind: str = "current"
    count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """The policy `text` names; ValueError with the accepted forms otherwise."""
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "current" and not arg:
                return cls()
            if kind == "latest" and int(arg) >= 1:
                return cls("latest", count=int(arg))
            if kind == "specific" and arg:
                versions = tuple(sorted({int(v) for v in arg.split(",")}))
                if min(versions) >= 1:
                    return cls("specific", versions=versions)
        except ValueError:
            pass
        raise ValueError(f"serve_version_policy {text!r}: expected current, latest:N (N >= 1) or "
                         "specific:V1,V2,...")

    def wanted(self, current: int | None, published: Iterable[int], labels: Mapping[str, int]) -> set[int]:
        """The versions to keep loaded, among the published ones."""
        published = set(published)
        out = {current} & published if current is not None else set()
        if self.kind == "latest":
            out |= set(sorted(published)[-self.count:])
        elif self.kind == "specific":
            out |= set(self.versions) & published
        return out | (set(labels.values()) & published)

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        return "current"
