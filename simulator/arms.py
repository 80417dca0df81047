"""A/B arms and the stable assignment of users to them.

An arm is what one group of users is served by: a ranking model of the scorer (registry name, optionally
pinned to a version — the pin is recorded and checked against the version the scorer answers with, the
scorer itself serves its live version) or a built-in ranker that needs no scorer:

- ``random``: a uniformly random order (seeded per request, so a run is reproducible);
- ``popularity``: items by the clicks the simulation has observed so far (a feedback loop of its own);
- ``oracle``: the synthetic environment's true click probability (only in the synthetic environment).

Assignment hashes ``salt + user_id`` (SHA-256) to a number in [0, 1) and walks the arms' cumulative
weights: stable across runs and processes, independent of arrival order, and changing the salt
re-randomises every user. Arms are written ``name=ranker`` on the command line, e.g.
``control=random``, ``treatment=model:aw_moe_cl``, ``pinned=model:din@3``, ``b=popularity:0.2`` (the
number after the last ``:`` of a built-in, or after ``@version:`` of a model, is the weight; default 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

BUILTINS: tuple[str, ...] = ("random", "popularity", "oracle")
MODEL_PREFIX = "model:"


# The model version recorded for a model arm's request that its fallback built-in served.
FALLBACK_VERSION = -1


@dataclass(frozen=True)
class Arm:
    """One arm: its name, what ranks for it (a built-in or a scorer model), and its traffic weight.

    `fallback` is the built-in used by a model arm while the scorer cannot answer (no version published
    yet, scorer down); such requests are recorded with model version `FALLBACK_VERSION` (-1).
    """

    name: str
    builtin: str | None = None
    model: str | None = None
    version: int | None = None
    weight: float = 1.0
    fallback: str = "random"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an arm needs a name")
        if (self.builtin is None) == (self.model is None):
            raise ValueError(f"arm {self.name!r}: give exactly one of builtin or model")
        if self.builtin is not None and self.builtin not in BUILTINS:
            raise ValueError(f"arm {self.name!r}: unknown built-in ranker {self.builtin!r}; "
                             f"expected one of {', '.join(BUILTINS)}")
        if self.fallback not in BUILTINS or self.fallback == "oracle":
            raise ValueError(f"arm {self.name!r}: fallback must be random or popularity, got {self.fallback!r}")
        if not self.weight > 0:
            raise ValueError(f"arm {self.name!r}: weight must be > 0, got {self.weight}")

    @property
    def uses_scorer(self) -> bool:
        """True when this arm's rankings come from the gRPC scorer."""
        return self.model is not None

    def describe(self) -> str:
        """Short human form, e.g. ``model:aw_moe_cl@3`` or ``random``."""
        if self.model is None:
            return str(self.builtin)
        return MODEL_PREFIX + self.model + (f"@{self.version}" if self.version is not None else "")


def parse_arm(spec: str) -> Arm:
    """Parses ``name=random``, ``name=popularity:0.5``, ``name=model:aw_moe_cl``, ``name=model:din@3:2``.

    ValueError with the expected form when the text is not an arm.
    """
    name, sep, rest = spec.partition("=")
    name, rest = name.strip(), rest.strip()
    if not sep or not name or not rest:
        raise ValueError(f"bad arm {spec!r}: expected NAME=RANKER, e.g. control=random or b=model:aw_moe_cl")
    weight = 1.0
    if rest.startswith(MODEL_PREFIX):
        body = rest[len(MODEL_PREFIX):]
        model, _, tail = body.partition("@")
        version: int | None = None
        if tail:
            version_text, _, weight_text = tail.partition(":")
            version = _number(int, version_text, spec)
            weight = _number(float, weight_text, spec) if weight_text else 1.0
        elif ":" in model:
            model, weight_text = model.rsplit(":", 1)
            weight = _number(float, weight_text, spec)
        return Arm(name=name, model=model, version=version, weight=weight)
    builtin, _, weight_text = rest.partition(":")
    if weight_text:
        weight = _number(float, weight_text, spec)
    return Arm(name=name, builtin=builtin, weight=weight)


def _number(kind: type, text: str, spec: str) -> float:
    try:
        return kind(text)
    except ValueError as exc:
        raise ValueError(f"bad arm {spec!r}: {text!r} is not a {kind.__name__}") from exc


def check_arms(arms: Sequence[Arm]) -> None:
    """ValueError unless there is at least one arm and arm names are unique."""
    if not arms:
        raise ValueError("at least one arm is needed")
    names = [a.name for a in arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"arm names must be unique; repeated: {', '.join(duplicates)}")


def unit_hash(user_id: str, salt: str) -> float:
    """A stable number in [0, 1) for a user (SHA-256 of salt and id, first 8 bytes)."""
    digest = hashlib.sha256(f"{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(user_id: str, arms: Sequence[Arm], salt: str = "streamrank-ab") -> Arm:
    """The arm a user belongs to: stable for (user, salt), proportional to the arms' weights."""
    check_arms(arms)
    total = sum(a.weight for a in arms)
    point = unit_hash(user_id, salt) * total
    acc = 0.0
    for arm in arms:
        acc += arm.weight
        if point < acc:
            return arm
    return arms[-1]  # rounding at the very top of the range
