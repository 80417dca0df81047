"""Growable string-to-index vocabularies with padding, out-of-vocabulary handling and time-based expiry.

Index 0 is padding / missing value (the empty string maps there; its embedding row is kept at zero),
index 1 is the out-of-vocabulary bucket shared by every id the vocabulary has not admitted, and real
ids start at 2. A vocabulary grows only when asked to (training); a frozen lookup (serving, evaluation)
maps unknown ids to OOV.

Ids can expire (see docs/vocabulary.md for the policy): lookups given a time (`now`, or the vocabulary's
`clock`) record when each id was last seen, `expire(older_than)` frees the indices of ids not seen since,
and `add` hands freed indices out again (lowest first) before appending. So the number of rows (`len`)
is bounded by the peak number of live ids (+2), indices of live ids never move, and the model only has to
append rows (growth) or re-initialise rows (recycling; `drain_recycled`, see
`streamrank.models.layers.FeatureEmbedder.sync`). Time is whatever the caller passes (the online trainer
passes the event time in ms of the samples it learns from, so replays are deterministic); there is no
wall clock in here.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

PAD = 0
OOV = 1
FIRST_ID = 2


class Vocab:
    """A growable vocabulary of string ids with optional expiry of ids not seen for a while.

    `max_size` (total rows, PAD and OOV included) bounds growth: once full and with no freed index to
    reuse, new ids go to OOV (counted in `oov_admissions`). `min_count` applies to `fit`: ids seen fewer
    times are left to OOV, so that the OOV row is trained on real rare ids rather than left at its random
    initialisation.

    Time: `lookup`/`lookup_many`/`add` record, for the admitted tokens they see, the time they were last
    seen: `now` when given; without it, growing lookups (training) use `clock` when set, and frozen
    lookups (serving, evaluation) record nothing. `clock` is the newest time the vocabulary has been told
    (`advance_clock`, or any explicit `now`); callers that cannot pass `now` through (the `Tensorizer`)
    set it before encoding with `advance_clock(spec, now)`. Times are kept per index (a list), so
    stamping costs one list assignment per token.
    """

    def __init__(self, name: str, tokens: Iterable[str] = (), max_size: int | None = None) -> None:
        self.name = name
        self.max_size = max_size
        self._index: dict[str, int] = {}
        self._tokens: list[str | None] = ["<pad>", "<oov>"]  # None marks a freed index (a hole)
        self._seen: list[int | None] = [None, None]  # last-seen time per index (None: unknown or free)
        self._free: list[int] = []  # min-heap of freed indices
        self._recycled: set[int] = set()
        self.oov_admissions = 0  # ids refused admission (vocabulary full, no free index) since creation
        self.clock: int | None = None
        for t in tokens:
            self.add(t)

    def __len__(self) -> int:
        """Number of rows an embedding table needs (PAD, OOV and free rows included)."""
        return len(self._tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    @property
    def num_live(self) -> int:
        """Ids currently admitted (holding a row of their own)."""
        return len(self._index)

    @property
    def num_free(self) -> int:
        """Rows freed by `expire` and not yet handed out again."""
        return len(self._free)

    # ------------------------------------------------------------------------------------------- time
    def advance_clock(self, now: int) -> None:
        """Move `clock` forward to `now` (never back): the default time of lookups given no `now`."""
        if self.clock is None or now > self.clock:
            self.clock = now

    def last_seen(self, token: str) -> int | None:
        """When `token` was last looked up with a time (None if never, or not admitted)."""
        idx = self._index.get(token)
        return None if idx is None else self._seen[idx]

    # --------------------------------------------------------------------------------------- growth
    def add(self, token: str, now: int | None = None) -> int:
        """Admit `token` if there is room and return its index (PAD for the empty string).

        A freed index is reused (lowest first) before the table is extended; with neither, the token maps
        to OOV and `oov_admissions` counts it. The new id is stamped with `now` (or `clock`) if known.
        """
        if not token:
            return PAD
        idx = self._index.get(token)
        if idx is not None:
            return idx
        if now is None:
            now = self.clock
        elif self.clock is None or now > self.clock:
            self.clock = now
        if self._free:
            idx = heapq.heappop(self._free)
            self._tokens[idx] = token
            self._seen[idx] = now
            self._recycled.add(idx)
        elif self.max_size is not None and len(self._tokens) >= self.max_size:
            self.oov_admissions += 1
            return OOV
        else:
            idx = len(self._tokens)
            self._tokens.append(token)
            self._seen.append(now)
        self._index[token] = idx
        return idx

    def fit(self, tokens: Iterable[str], min_count: int = 1) -> Vocab:
        """Admit every token seen at least `min_count` times, most frequent first (ties by name)."""
        counts = Counter(t for t in tokens if t)
        for tok, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if n >= min_count:
                self.add(tok)
        return self

    def lookup(self, token: str, grow: bool = False, now: int | None = None) -> int:
        """Index of `token`: PAD if empty, its own row if known, else a new row (grow) or OOV.

        An admitted token's last-seen time becomes `now` (or `clock` when growing; see the class doc).
        """
        if not token:
            return PAD
        idx = self._index.get(token)
        if idx is None:
            return self.add(token, now) if grow else OOV
        if now is None:
            now = self.clock if grow else None
            if now is None:
                return idx
        elif self.clock is None or now > self.clock:
            self.clock = now
        self._seen[idx] = now
        return idx

    def lookup_many(self, tokens: Iterable[str], grow: bool = False, now: int | None = None) -> list[int]:
        """`lookup` over a sequence: the hot path of tensorisation, so the common case runs at C speed.

        Every token is looked up with one `map` over the index (no Python frame per token); only the misses
        (the empty string, unseen ids) are resolved one by one. Stamping the time touches each distinct id
        once (a batch repeats most ids many times). Same result as `lookup` per token, in order.
        """
        if now is None:
            now = self.clock if grow else None
        elif self.clock is None or now > self.clock:
            self.clock = now
        if not isinstance(tokens, list | tuple):
            tokens = list(tokens)  # read twice below
        ids: list[Any] = list(map(self._index.get, tokens))
        if None in ids:
            add = self.add
            for i, idx in enumerate(ids):
                if idx is None:
                    t = tokens[i]
                    ids[i] = PAD if not t else add(t, now) if grow else OOV
        if now is not None:
            seen = self._seen
            for i in set(ids):
                seen[i] = now  # PAD and OOV get stamped too, harmlessly
        return ids

    # --------------------------------------------------------------------------------------- expiry
    def expire(self, older_than: int) -> list[int]:
        """Remove every id last seen before `older_than`; return the freed indices (ascending).

        Freed indices go on the free list and are handed out again by `add`, lowest first. Ids admitted
        without a time (fitted offline, or loaded from a dict that predates expiry) are stamped with
        `clock` on the first call after the vocabulary learnt a time, so they get one full TTL from then;
        a vocabulary that was never given a time expires nothing.
        """
        seen, toks, clock = self._seen, self._tokens, self.clock
        freed = []
        for idx in range(FIRST_ID, len(seen)):
            ts = seen[idx]
            if ts is None:  # a free index, or a live id never seen with a time: start its TTL now
                if clock is not None and toks[idx] is not None:
                    seen[idx] = clock
            elif ts < older_than:
                freed.append(idx)
        for idx in freed:
            del self._index[toks[idx]]  # type: ignore[arg-type]
            toks[idx] = None
            seen[idx] = None
            self._recycled.discard(idx)  # the row is unused again: nothing to reset until it is reused
            heapq.heappush(self._free, idx)
        return freed

    def drain_recycled(self) -> list[int]:
        """Indices handed out again (to a new id) since the last call, ascending; clears the record.

        The model resets these rows so that a new id never inherits an expired id's embedding (done by
        `FeatureEmbedder.sync` / `RankingModel.sync_vocab`: exactly one consumer per vocabulary).
        """
        out = sorted(self._recycled)
        self._recycled.clear()
        return out

    @property
    def recycled(self) -> list[int]:
        """Indices reused since the last `drain_recycled` (ascending), without clearing them."""
        return sorted(self._recycled)

    # ---------------------------------------------------------------------------------------- access
    def token(self, index: int) -> str | None:
        """The token stored at `index` (for debugging and reports); None for a freed index."""
        return self._tokens[index]

    def stats(self) -> dict[str, int]:
        """Memory report of this vocabulary: live ids, rows, free rows, refused admissions."""
        return {"live": len(self._index), "rows": len(self._tokens), "free": len(self._free),
                "oov_admissions": self.oov_admissions}

    # ----------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """JSON-serialisable state: tokens in index order (None for freed indices), their last-seen
        times (None where unknown), the clock, pending recycled indices and the refusal counter.

        The free list is exactly the set of holes, so it is not stored separately.
        """
        return {
            "name": self.name,
            "max_size": self.max_size,
            "tokens": self._tokens[FIRST_ID:],
            "last_seen": self._seen[FIRST_ID:],
            "clock": self.clock,
            "recycled": sorted(self._recycled),
            "oov_admissions": self.oov_admissions,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        """Inverse of `to_dict`: indices (holes included) are preserved exactly.

        Dicts written before expiry existed (only name, max_size and tokens) load as vocabularies without
        times or holes.
        """
        v = cls(d["name"], (), d.get("max_size"))
        tokens: list[str | None] = list(d["tokens"])
        stamps = d.get("last_seen") or [None] * len(tokens)
        if len(stamps) != len(tokens):
            raise ValueError(f"vocab {v.name!r}: {len(stamps)} last_seen entries for {len(tokens)} tokens")
        for idx, (tok, ts) in enumerate(zip(tokens, stamps, strict=True), start=FIRST_ID):
            if tok is None:
                v._free.append(idx)  # ascending, hence already a valid heap
                v._seen.append(None)
                continue
            if tok in v._index:
                raise ValueError(f"vocab {v.name!r}: token {tok!r} stored twice")
            v._index[tok] = idx
            v._seen.append(None if ts is None else int(ts))
        v._tokens.extend(tokens)
        v.clock = d.get("clock")
        v._recycled = set(d.get("recycled", ()))
        v.oov_admissions = int(d.get("oov_admissions", 0))
        return v


def _vocabs_of(spec: Any) -> Mapping[str, Vocab]:
    """The vocabularies of a `FeatureSpec` (anything with `.vocabs`) or of a name -> Vocab mapping."""
    return spec.vocabs if hasattr(spec, "vocabs") else spec


def advance_clock(spec: Any, now: int) -> None:
    """Set the time every vocabulary of `spec` stamps lookups with (moves forward only).

    The online trainer calls this with the event time (ms) of the batch it is about to encode, since
    `Tensorizer.encode` has no time argument.
    """
    for v in _vocabs_of(spec).values():
        v.advance_clock(now)


def expire_all(spec: Any, older_than: int) -> dict[str, list[int]]:
    """`expire(older_than)` on every vocabulary of `spec`; returns the freed indices per vocabulary."""
    return {name: v.expire(older_than) for name, v in _vocabs_of(spec).items()}


def vocab_stats(spec: Any, emb_dim: int | None = None, bytes_per_value: int = 4) -> dict[str, dict[str, int]]:
    """Vocabulary memory report of a `FeatureSpec` (or name -> Vocab mapping).

    Per vocabulary: `live` ids, `rows` (= embedding rows after `sync_vocab`), `free` rows awaiting reuse,
    `oov_admissions` (ids refused because the vocabulary was full). With `emb_dim`, also
    `embedding_bytes` (rows * emb_dim * bytes_per_value, the table alone, optimizer state not included).
    """
    out: dict[str, dict[str, int]] = {}
    for name, v in _vocabs_of(spec).items():
        s = v.stats()
        if emb_dim is not None:
            s["embedding_bytes"] = s["rows"] * emb_dim * bytes_per_value
        out[name] = s
    return out
