"""The feature path: vocabularies (growth, OOV), spec persistence, tensorisation and protobuf input."""

from __future__ import annotations

import math

import pytest
import torch

from streamrank.features import (
    CLICK,
    OOV,
    PAD,
    PURCHASE,
    Behaviors,
    Candidate,
    Counts,
    FeatureSpec,
    ItemAttrs,
    Labels,
    RawExample,
    RequestContext,
    Tensorizer,
    Vocab,
)
from streamrank.models.layers import GrowableEmbedding


def _example(user: str, n_beh: int, item: str = "i1", click: bool = True) -> RawExample:
    beh = Behaviors([f"b{k}" for k in range(n_beh)], [CLICK] * n_beh, list(range(n_beh)),
                    [f"c{k % 3}" for k in range(n_beh)])
    return RawExample(user, item, beh, ItemAttrs("c1", "brand", "shop", 9.0, ["t1", "t2"], {"year": "1999"}),
                      counts=Counts(10, 3, 1, 2, 5), labels=Labels(click=click), user_fields={"age": "25"})


def test_vocab_pad_oov_and_growth() -> None:
    v = Vocab("item")
    assert v.lookup("") == PAD and v.lookup("x") == OOV and len(v) == 2  # frozen lookup does not grow
    a = v.lookup("a", grow=True)
    b = v.lookup("b", grow=True)
    assert (a, b) == (2, 3) and v.lookup("a") == a and len(v) == 4
    assert v.lookup_many(["a", "", "zzz"]) == [a, PAD, OOV]
    capped = Vocab("c", max_size=3)
    assert capped.lookup("p", grow=True) == 2 and capped.lookup("q", grow=True) == OOV  # full -> OOV


def test_vocab_fit_min_count_and_roundtrip() -> None:
    v = Vocab("item").fit(["a", "b", "a", "c", "a", "b"], min_count=2)
    assert "a" in v and "b" in v and "c" not in v
    assert v.lookup("a") == 2  # most frequent first
    w = Vocab.from_dict(v.to_dict())
    assert [w.lookup(t) for t in "abc"] == [v.lookup(t) for t in "abc"]


def test_spec_roundtrip(tmp_path) -> None:
    spec = FeatureSpec(max_seq_len=7, user_fields=("age",), item_fields=("year",), max_tags=2)
    spec.fit([_example("u1", 4), _example("u2", 2, item="i9")])
    spec.save(tmp_path / "spec.json")
    loaded = FeatureSpec.load(tmp_path / "spec.json")
    assert loaded.vocab_sizes() == spec.vocab_sizes()
    assert loaded.vocabs["item"].lookup("i9") == spec.vocabs["item"].lookup("i9")
    with pytest.raises(ValueError):
        FeatureSpec(dense=("nope",))


def test_tensorize_shapes_padding_and_truncation() -> None:
    spec = FeatureSpec(max_seq_len=5, user_fields=("age",), item_fields=("year",), max_tags=3)
    tz = Tensorizer(spec)
    batch = tz.encode([_example("u1", 8), _example("u2", 2), _example("u3", 0)], grow=True)
    u, it = batch.users, batch.items
    assert u.hist_item.shape == (3, 5) and u.hist_mask.dtype == torch.bool
    assert it.tags.shape == (3, 3) and it.item_fields.shape == (3, 1)
    assert it.dense.shape == (3, len(spec.dense))
    assert u.hist_mask.sum(1).tolist() == [5, 2, 0]
    # the 5 most recent behaviours, oldest first, right-padded
    assert [spec.vocabs["item"].token(i) for i in u.hist_item[0].tolist()] == ["b3", "b4", "b5", "b6", "b7"]
    assert u.hist_item[1, 2:].eq(PAD).all() and u.hist_type[1, :2].eq(CLICK + 2).all()
    assert batch.owner.tolist() == [0, 1, 2] and batch.labels.tolist() == [1.0, 1.0, 1.0]
    assert it.tags[0, 2].item() == PAD  # two tags, third slot padded


def test_unknown_ids_map_to_oov_when_frozen() -> None:
    spec = FeatureSpec(max_seq_len=4)
    tz = Tensorizer(spec)
    tz.encode([_example("u1", 2)], grow=True)
    size = spec.vocab_sizes()
    batch = tz.encode([_example("new-user", 3, item="new-item")])
    assert spec.vocab_sizes() == size  # nothing admitted
    assert batch.items.item.item() == OOV and batch.users.user.item() == OOV
    assert batch.users.hist_item[0, 2].item() == OOV  # b2 never seen


def test_dense_features() -> None:
    spec = FeatureSpec(max_seq_len=4, dense=("item_clicks", "price", "price_missing", "history_len"))
    b = Tensorizer(spec).encode([_example("u", 6)], grow=True)
    assert b.items.dense[0].tolist() == pytest.approx([math.log1p(3), math.log1p(9.0), 0.0, math.log1p(6)])


def test_every_dense_feature_over_mixed_candidates() -> None:
    """The vectorised dense columns against their definitions, with unknown prices and zero counters."""
    from streamrank.features.raw import Candidate, Counts, ItemAttrs, RequestContext

    spec = FeatureSpec(max_seq_len=4)
    cands = [Candidate("a", ItemAttrs(price=None), Counts(0, 0, 0, 0, 0)),
             Candidate("b", ItemAttrs(price=12.5), Counts(40, 4, 1, 2, 7)),
             Candidate("c", ItemAttrs(price=0.0), Counts(-3, 0, 0, 0, 0))]
    dense = Tensorizer(spec).encode_request(RequestContext("u"), cands).items.dense.tolist()
    lg = math.log1p
    expected = [
        [0, 0, 0, 0, 0, 0, 0, 1, 0],
        [lg(40), lg(4), lg(1), 5 / 50, lg(2), lg(7), lg(12.5), 0, 0],
        [0, 0, 0, (0 + 1) / (-3 + 10), 0, 0, 0, 0, 0],
    ]
    assert list(spec.dense) == ["item_impressions", "item_clicks", "item_purchases", "item_ctr", "user_item_clicks",
                                "user_category_clicks", "price", "price_missing", "history_len"]
    for got, want in zip(dense, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)


def test_request_encoding_shares_the_user_row() -> None:
    spec = FeatureSpec(max_seq_len=6, user_fields=("age",))
    tz = Tensorizer(spec)
    ex = _example("u1", 4)
    cands = [Candidate(f"i{k}", ItemAttrs(category="c1"), Counts(item_clicks=k)) for k in range(7)]
    req = tz.encode_request(ex.context(), cands, grow=True)
    assert len(req.users) == 1 and len(req.items) == 7 and req.owner.tolist() == [0] * 7
    flat = tz.encode([RawExample(ex.user_id, c.item_id, ex.behaviors, c.item, counts=c.counts,
                                 user_fields=ex.user_fields) for c in cands])
    per = req.per_candidate()
    for name in ("hist_item", "hist_mask", "user", "user_fields"):
        assert torch.equal(getattr(per.users, name), getattr(flat.users, name))
    assert torch.equal(req.items.dense, flat.items.dense) and torch.equal(req.items.item, flat.items.item)


def test_from_training_sample_protobuf() -> None:
    from streamrank.v1 import events_pb2, features_pb2

    msg = features_pb2.TrainingSample(
        sample_id="e1", user_id="u7", item_id="i3", request_id="r1", scenario="app", query="shoes",
        impression_ts_ms=123,
        labels=features_pb2.Labels(click=True, purchase=True),
        behaviors=features_pb2.BehaviorSequence(
            item_ids=["a", "b"], types=[events_pb2.CLICK, events_pb2.PURCHASE], ts_ms=[1, 2],
            categories=["x", "y"]),
        item=events_pb2.ItemAttributes(category="x", brand="nike", shop="s1", price=59.0),
        counts=features_pb2.ContextCounts(item_impressions=100, item_clicks=7, user_category_clicks=2),
    )
    ex = RawExample.from_sample(msg)
    assert ex.behaviors == Behaviors(["a", "b"], [CLICK, PURCHASE], [1, 2], ["x", "y"])
    assert (ex.item.brand, ex.item.price, ex.query, ex.scenario) == ("nike", 59.0, "shoes", "app")
    assert ex.counts.item_clicks == 7 and ex.labels.click and ex.labels.purchase and ex.ts_ms == 123
    no_price = RawExample.from_sample(features_pb2.TrainingSample(user_id="u", item_id="i"))
    assert no_price.item.price is None and len(no_price.behaviors) == 0
    batch = Tensorizer(FeatureSpec(max_seq_len=3)).encode([ex, no_price], grow=True)
    assert batch.users.hist_mask.sum(1).tolist() == [2, 0]


def test_growable_embedding_keeps_rows() -> None:
    emb = GrowableEmbedding(4, 3)
    before = emb.weight.detach().clone()
    assert emb.grow_to(6) and emb.num == 6 and not emb.grow_to(5)
    assert torch.equal(emb.weight[:4].detach(), before) and emb(torch.tensor([0])).abs().sum() == 0


def test_request_context_defaults() -> None:
    ctx = RequestContext("u")
    assert len(ctx.behaviors) == 0 and ctx.query == "" and ctx.behaviors.last(3) == ctx.behaviors
