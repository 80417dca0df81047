"""Growable string-to-index vocabularies with explicit padding and out-of-vocabulary handling.

Index 0 is padding / missing value (the empty string maps there; its embedding row is kept at zero),
index 1 is the out-of-vocabulary bucket shared by every id the vocabulary has not admitted, and real
ids start at 2. A vocabulary grows only when asked to (training); a frozen lookup (serving, evaluation)
maps unknown ids to OOV. Growth appends indices, so existing rows of an embedding table stay valid and the
model only has to append rows (see `streamrank.models.layers.GrowableEmbedding`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

PAD = 0
OOV = 1
FIRST_ID = 2


class Vocab:
    """A growable vocabulary of string ids.

    `max_size` (total rows, PAD and OOV included) bounds growth: once full, new ids go to OOV.
    `min_count` applies to `fit`: ids seen fewer times are left to OOV, so that the OOV row is trained
    on real rare ids rather than left at its random initialisation.
    """

    def __init__(self, name: str, tokens: Iterable[str] = (), max_size: int | None = None) -> None:
        self.name = name
        self.max_size = max_size
        self._index: dict[str, int] = {}
        self._tokens: list[str] = ["<pad>", "<oov>"]
        for t in tokens:
            self.add(t)

    def __len__(self) -> int:
        """Number of rows an embedding table needs (PAD and OOV included)."""
        return len(self._tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def add(self, token: str) -> int:
        """Admit `token` if there is room and return its index (PAD for the empty string)."""
        if not token:
            return PAD
        idx = self._index.get(token)
        if idx is not None:
            return idx
        if self.max_size is not None and len(self._tokens) >= self.max_size:
            return OOV
        idx = len(self._tokens)
        self._index[token] = idx
        self._tokens.append(token)
        return idx

    def fit(self, tokens: Iterable[str], min_count: int = 1) -> Vocab:
        """Admit every token seen at least `min_count` times, most frequent first (ties by name)."""
        counts = Counter(t for t in tokens if t)
        for tok, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if n >= min_count:
                self.add(tok)
        return self

    def lookup(self, token: str, grow: bool = False) -> int:
        """Index of `token`: PAD if empty, its own row if known, else a new row (grow) or OOV."""
        if not token:
            return PAD
        idx = self._index.get(token)
        if idx is not None:
            return idx
        return self.add(token) if grow else OOV

    def lookup_many(self, tokens: Iterable[str], grow: bool = False) -> list[int]:
        """`lookup` over a sequence (the hot path of tensorisation, kept to one comprehension)."""
        if grow:
            return [self.lookup(t, True) for t in tokens]
        get = self._index.get
        return [get(t, OOV) if t else PAD for t in tokens]

    def token(self, index: int) -> str:
        """The token stored at `index` (for debugging and reports)."""
        return self._tokens[index]

    def to_dict(self) -> dict:
        """JSON-serialisable state (tokens in index order)."""
        return {"name": self.name, "max_size": self.max_size, "tokens": self._tokens[FIRST_ID:]}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        """Inverse of `to_dict`: indices are preserved exactly."""
        return cls(d["name"], d["tokens"], d.get("max_size"))
