"""Vocabulary growth and expiry: new ids get their own rows without moving old ones, expired ids' rows are
reused and re-initialised, state round-trips with holes, and memory stays bounded over a long stream."""

from __future__ import annotations

import json
import random

import pytest
import torch

from streamrank.bench.ranking import QUICK_SIZES
from streamrank.features import Behaviors, FeatureSpec, ItemAttrs, Labels, RawExample, Tensorizer
from streamrank.features.vocab import OOV, PAD, Vocab, advance_clock, expire_all, vocab_stats
from streamrank.models.layers import FeatureEmbedder
from streamrank.models.ranking import build_model
from streamrank.train import train_step

torch.set_num_threads(1)
DAY = 86_400_000  # event time is in ms


def test_growth_keeps_existing_indices_and_rows() -> None:
    spec = FeatureSpec(max_seq_len=4, dense=())
    v = spec.vocabs["item"]
    old = v.lookup_many(["a", "b", "c"], grow=True)
    emb = FeatureEmbedder(spec, 4)
    before = emb.table("item").weight.detach().clone()
    new = v.lookup_many(["a", "d", "e", "b"], grow=True)
    assert old == [2, 3, 4] and new == [2, 5, 6, 3]  # new ids appended, old ones where they were
    assert emb.sync() and emb.table("item").num == len(v) == 7
    w = emb.table("item").weight.detach()
    assert torch.equal(w[:5], before) and not torch.equal(w[5], w[6]) and not emb.sync()


def test_expired_row_is_reused_and_reinitialised() -> None:
    spec = FeatureSpec(max_seq_len=4, dense=())
    v = spec.vocabs["item"]
    assert v.lookup_many(["old", "keep"], grow=True, now=0) == [2, 3]
    emb = FeatureEmbedder(spec, 4)
    table = emb.table("item")
    with torch.no_grad():
        table.weight[2:] = 7.0  # "trained" values an expired id must not pass on
    param = table.weight
    v.lookup("keep", now=5 * DAY)  # a frozen lookup given a time refreshes last_seen
    assert v.expire(older_than=DAY) == [2] and "old" not in v and v.lookup("old") == OOV
    assert v.stats() == {"live": 1, "rows": 4, "free": 1, "oov_admissions": 0}
    assert v.lookup("new", grow=True, now=6 * DAY) == 2 and v.recycled == [2]  # lowest free index first
    assert not emb.sync()  # no shape change: the optimizer stays valid
    assert table.weight is param and v.recycled == []
    w = table.weight.detach()
    assert torch.all(w[3] == 7.0) and not torch.any(w[2] == 7.0)  # "keep" untouched, "new" re-initialised
    assert 0 < w[2].abs().max() < 1.0 and torch.all(w[0] == 0)  # like a new row; PAD stays zero
    assert v.lookup("other", grow=True) == 4 and emb.sync() and emb.table("item").num == 5  # then append


def test_reset_rows_zeroes_optimizer_moments() -> None:
    spec = FeatureSpec(max_seq_len=2, dense=())
    v = spec.vocabs["item"]
    v.lookup_many(["a", "b", "c"], grow=True, now=0)
    emb = FeatureEmbedder(spec, 4)
    table = emb.table("item")
    opt = torch.optim.AdamW(emb.parameters(), lr=0.1)
    table(torch.tensor([2, 3, 4])).sum().backward()
    opt.step()
    v.lookup_many(["b", "c"], now=2 * DAY)
    assert v.expire(DAY) == [2] and v.lookup("z", grow=True, now=2 * DAY) == 2
    assert not emb.sync(opt)
    st = opt.state[table.weight]
    assert torch.all(st["exp_avg"][2] == 0) and torch.all(st["exp_avg_sq"][2] == 0)
    assert torch.all(st["exp_avg"][3:] != 0) and int(st["step"]) == 1


def test_clock_frozen_lookups_and_untimed_ids() -> None:
    v = Vocab("item").fit(["a", "b"])  # fitted offline: no times yet
    assert v.expire(10**15) == []  # never told a time: nothing expires
    advance_clock({"item": v}, 10 * DAY)
    advance_clock({"item": v}, 3 * DAY)  # the clock never goes back
    assert v.clock == 10 * DAY and v.lookup("c", grow=True) == 4 and v.last_seen("c") == 10 * DAY
    v.lookup_many(["a"], now=9 * DAY)  # explicit time: stamped
    v.lookup_many(["c"])  # frozen, no time: not stamped
    assert v.last_seen("a") == 9 * DAY and v.last_seen("b") is None
    assert v.expire(9 * DAY) == [] and v.last_seen("b") == 10 * DAY  # untimed ids start their TTL now
    assert v.expire(10 * DAY) == [2] and v.expire(11 * DAY) == [3, 4]


def test_max_size_counts_refused_ids_and_reuses_freed_rows() -> None:
    v = Vocab("user", max_size=4)
    assert v.lookup_many(["a", "b", "c", "d", ""], grow=True, now=0) == [2, 3, OOV, OOV, PAD]
    assert v.oov_admissions == 2 and v.lookup("c", grow=True, now=DAY) == OOV and v.oov_admissions == 3
    assert v.last_seen("c") is None and v.lookup("c", now=DAY) == OOV  # refused ids leave no trace
    v.lookup("b", now=DAY)
    assert v.expire(1) == [2] and v.lookup("c", grow=True, now=DAY) == 2 and len(v) == 4  # full, reused
    stats = vocab_stats({"user": v}, emb_dim=8)
    assert stats == {"user": {"live": 2, "rows": 4, "free": 0, "oov_admissions": 3, "embedding_bytes": 128}}


def test_round_trip_with_holes() -> None:
    v = Vocab("item", max_size=100)
    v.lookup_many([f"i{k}" for k in range(8)], grow=True, now=0)
    v.lookup_many(["i1", "i4", "i6"], grow=True, now=5)
    v.expire(3)  # frees i0 i2 i3 i5 i7 -> indices 2 4 5 7 9
    v.lookup("n1", grow=True, now=6)  # reuses 2 (pending in `recycled`)
    v.add("zz")  # stamped with the clock (6)
    v.oov_admissions = 4
    d = json.loads(json.dumps(v.to_dict()))
    assert d["tokens"][:4] == ["n1", "i1", "zz", None]
    w = Vocab.from_dict(d)
    assert w.to_dict() == v.to_dict()
    assert [w.token(i) for i in range(len(w))] == [v.token(i) for i in range(len(v))]
    assert all(w.lookup(t) == v.lookup(t) for t in ["n1", "i1", "i4", "i6", "zz", "i0"])
    assert (w.recycled, w.num_free, w.oov_admissions, w.clock, w.max_size) == ([2, 4], 3, 4, 6, 100)
    assert w.last_seen("zz") == 6 and w.last_seen("i4") == 5
    assert [w.add(t) for t in ("p", "q", "r", "s")] == [5, 7, 9, 10]  # holes first, lowest first
    spec = FeatureSpec()
    spec.vocabs["item"] = v
    loaded = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert loaded.vocabs["item"].to_dict() == v.to_dict()
    # a vocabulary written before expiry existed (tokens only) still loads, index for index
    old = Vocab.from_dict({"name": "item", "max_size": None, "tokens": ["a", "b"]})
    assert (old.lookup("b"), old.num_free, old.clock, old.last_seen("a"), len(old)) == (3, 0, None, None, 4)


def _stream_day(day: int, rng: random.Random, per_day: int, new_per_day: int, evergreen: int) -> list[str]:
    """One day of lookups: 20% over a fixed head of ids, 80% over the ids born that day (a drifting tail)."""
    return [f"h{rng.randrange(evergreen)}" if rng.random() < 0.2 else f"d{day}-{rng.randrange(new_per_day)}"
            for _ in range(per_day)]


def _run_stream(ttl_days: int | None, days: int = 40, per_day: int = 5_000, new_per_day: int = 1_000,
                evergreen: int = 200, batch: int = 500) -> tuple[Vocab, int, int, dict[str, int]]:
    """200k lookups over `days`, in time order, expiring once a day; returns the vocab, the peak rows of
    vocab and embedding table, and the index of every head id when first admitted."""
    spec = FeatureSpec(max_seq_len=2, dense=())
    v = spec.vocabs["item"]
    emb = FeatureEmbedder(spec, 4)
    rng = random.Random(0)
    head_index: dict[str, int] = {}
    peak_rows = peak_table = 0
    for day in range(days):
        if ttl_days is not None and day:
            expire_all(spec, day * DAY - ttl_days * DAY)  # daily, at the day boundary
        tokens = _stream_day(day, rng, per_day, new_per_day, evergreen)
        for s in range(0, per_day, batch):
            chunk = tokens[s:s + batch]
            now = day * DAY + (s + batch - 1) * DAY // per_day  # event time of the batch's last sample
            ids = v.lookup_many(chunk, grow=True, now=now)
            for t, i in zip(chunk, ids, strict=True):
                if t[0] == "h":
                    assert head_index.setdefault(t, i) == i  # a live id never changes index
            emb.sync()
            peak_rows, peak_table = max(peak_rows, len(v)), max(peak_table, emb.table("item").num)
    return v, peak_rows, peak_table, head_index


def test_long_stream_memory_is_bounded_by_expiry() -> None:
    days, new_per_day, evergreen = 40, 1_000, 200
    v, rows, table_rows, heads = _run_stream(ttl_days=3, days=days)
    # A live id was seen within TTL + expiry interval = 4 days: at most 4 days of new ids + the head.
    assert rows == table_rows <= 4 * new_per_day + evergreen + 2 <= int(4.5 * new_per_day) + 2
    assert rows >= 3 * new_per_day  # and expiry did not throw away ids still in use
    assert len(heads) == evergreen and v.num_live <= 4 * new_per_day + evergreen
    grown, rows_no_ttl, table_no_ttl, _ = _run_stream(ttl_days=None, days=days)
    assert rows_no_ttl == table_no_ttl == len(grown) >= 0.95 * days * new_per_day + evergreen  # linear
    assert rows_no_ttl > 8 * rows


def _examples(day: int, n: int, rng: random.Random) -> list[RawExample]:
    out = []
    for _ in range(n):
        items = [f"d{day}-i{rng.randrange(40)}" for _ in range(3)]
        cats = [f"c{rng.randrange(5)}" for _ in items]
        beh = Behaviors(items, [2] * 3, [0, 1, 2], cats)
        target = f"c{rng.randrange(5)}"
        out.append(RawExample(f"d{day}-u{rng.randrange(20)}", f"d{day}-i{rng.randrange(40)}", beh,
                              ItemAttrs(target), labels=Labels(click=target in cats), ts_ms=day * DAY))
    return out


@pytest.mark.parametrize("zero_moments", [False, True])
def test_model_trains_after_recycling(zero_moments: bool) -> None:
    torch.manual_seed(0)
    rng = random.Random(0)
    spec = FeatureSpec(max_seq_len=4, dense=())
    tz = Tensorizer(spec)
    model = build_model("aw_moe", spec, **QUICK_SIZES)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for day in range(4):
        expire_all(spec, day * DAY - DAY)  # TTL one day: yesterday's ids survive, older ones go
        for _ in range(3):
            advance_clock(spec, day * DAY)
            batch = tz.encode(_examples(day, 64, rng), grow=True)
            if model.sync_vocab(opt if zero_moments else None):
                opt = torch.optim.AdamW(model.parameters(), lr=3e-3)  # shapes changed: rebuild
            logs = train_step(model, batch, opt)
            assert torch.isfinite(torch.tensor(logs["loss_rank"]))
    stats = vocab_stats(spec)
    assert stats["item"]["rows"] == model.embed.table("item").num <= 2 * 40 + 2  # two days of items at most
    assert stats["user"]["free"] >= 0 and stats["category"]["live"] == 5
    scores = model.score_request(tz.encode(_examples(3, 32, rng)))
    assert torch.isfinite(scores).all() and torch.all(model.embed.table("item").weight[0] == 0)


def test_lookup_many_equals_lookup_token_by_token() -> None:
    """The C-speed batch lookup gives what `lookup` gives one token at a time: ids in order, growth order,
    last-seen stamps, refusals of a full vocabulary, frozen lookups of unseen ids."""
    rng = random.Random(7)
    pool = [f"t{i}" for i in range(60)] + [""]
    one, many = Vocab("one", max_size=40), Vocab("many", max_size=40)
    for step in range(30):
        tokens = [rng.choice(pool) for _ in range(rng.randint(0, 80))]
        grow = step % 3 != 2
        now = None if step % 4 == 0 else step * 10
        expected = [one.lookup(t, grow=grow, now=now) for t in tokens]
        assert many.lookup_many(tokens, grow=grow, now=now) == expected
        assert many._tokens == one._tokens and many._seen[2:] == one._seen[2:]  # PAD/OOV stamps are moot
        assert many.oov_admissions == one.oov_admissions
        one.clock = many.clock  # the batch call advances the clock to `now` even when no token is admitted
        if step == 15:
            assert one.expire(100) == many.expire(100)
