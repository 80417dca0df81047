"""Two-tower retrieval models: presets, shapes, cold start, OOV items, serving encoders, artefacts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrank.features import Behaviors, Candidate, FeatureSpec, ItemAttrs, RawExample, RequestContext, Tensorizer
from streamrank.models.retrieval import (
    PRESETS,
    RetrievalConfig,
    TwoTowerModel,
    build_retrieval_model,
    retrieval_files,
    retrieval_from_files,
)
from streamrank.models.retrieval.towers import recency_order

torch.set_num_threads(1)
SMALL = {"emb_dim": 8, "dim": 8, "tower_hidden": (16,), "ffn_dim": 16, "max_behaviours": 5, "n_negatives": 8}


def _item(i: int) -> ItemAttrs:
    return ItemAttrs(category=f"c{i % 3}", tags=[f"g{i % 4}", f"g{(i + 1) % 4}"], fields={"year": str(1990 + i % 5)})


def _context(user: str, items: list[int]) -> RequestContext:
    beh = Behaviors([f"i{i}" for i in items], [2] * len(items), list(range(len(items))), [f"c{i % 3}" for i in items])
    return RequestContext(user, beh, user_fields={"age": "25"})


def _spec() -> FeatureSpec:
    spec = FeatureSpec(max_seq_len=5, user_fields=("age",), item_fields=("year",), max_tags=2, dense=(),
                       use_user_id=False)
    examples = [RawExample(f"u{k}", f"i{k}", _context(f"u{k}", [k, k + 1]).behaviors, _item(k),
                           user_fields={"age": "25"}) for k in range(10)]
    return spec.fit(examples)


def test_presets_are_the_issue_names_and_round_trip() -> None:
    assert list(PRESETS) == ["fm", "youtube_dnn", "base", "fea", "fea_sess", "micrec"]
    assert PRESETS["micrec"].cl_tasks == ("fea", "sem", "sess")
    assert PRESETS["fea_sess"].cl_tasks == ("fea", "sess")
    assert PRESETS["base"].cl_tasks == ()
    for cfg in PRESETS.values():
        assert RetrievalConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        RetrievalConfig(user_tower="fm", item_tower="mlp")


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_gives_finite_vectors(name: str) -> None:
    spec = _spec()
    model = build_retrieval_model(name, spec, **SMALL)
    tz = Tensorizer(spec)
    users = tz.encode_contexts([_context("u1", [1, 2, 3]), _context("u2", list(range(9)))])
    items = tz.encode_candidates([Candidate(f"i{k}", _item(k)) for k in range(4)], [0] * 4)
    u, v = model.user_vectors(users), model.item_vectors(items)
    assert u.shape == (2, 8) and v.shape == (4, 8)
    assert torch.isfinite(u).all() and torch.isfinite(v).all()
    assert torch.allclose(model.score(users, items), u @ v.T)


@pytest.mark.parametrize("name", ["base", "youtube_dnn", "fm"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_cold_start_users_get_valid_vectors(name: str, train_mode: bool) -> None:
    model = build_retrieval_model(name, _spec(), **SMALL)
    model.train(train_mode)
    tz = Tensorizer(model.spec)
    only_cold = tz.encode_contexts([_context("new", []), _context("new2", [])])
    mixed = tz.encode_contexts([_context("new", []), _context("u1", [1, 2])])
    for users in (only_cold, mixed):
        u = model.user_vectors(users)
        assert torch.isfinite(u).all()
    u.sum().backward()  # gradients are finite too
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert np.isfinite(model.encode_users([_context("nobody", [])])).all()


def test_unknown_items_map_to_oov_and_keep_their_other_fields() -> None:
    model = build_retrieval_model("base", _spec(), **SMALL)
    a, b = Candidate("never-seen-1", _item(0)), Candidate("never-seen-2", _item(1))
    vecs = model.encode_items([a, b, Candidate("never-seen-1", _item(0))])
    assert vecs.dtype == np.float32 and vecs.shape == (3, 8) and np.isfinite(vecs).all()
    assert not np.allclose(vecs[0], vecs[1])  # different categories/tags/years -> different vectors
    assert np.allclose(vecs[0], vecs[2])
    assert "never-seen-1" not in model.spec.vocabs["item"]  # grow=False: the vocabulary is untouched


def test_serving_encoders_match_the_training_path_and_normalise_on_request() -> None:
    spec = _spec()
    model = build_retrieval_model("base", spec, **SMALL).eval()
    ctxs = [_context("u1", [1, 2, 3]), _context("u9", [4])]
    cands = [Candidate(f"i{k}", _item(k)) for k in range(5)]
    tz = Tensorizer(spec)
    with torch.no_grad():
        expected = model.score(tz.encode_contexts(ctxs), tz.encode_candidates(cands, [0] * 5)).numpy()
    got = model.encode_users(ctxs) @ model.encode_items(cands).T
    assert np.allclose(got, expected, atol=1e-5)
    normed = build_retrieval_model("base", spec, normalize=True, **SMALL)
    assert np.allclose(np.linalg.norm(normed.encode_items(cands), axis=1), 1.0, atol=1e-5)


def test_artifact_round_trip_gives_identical_vectors() -> None:
    model = build_retrieval_model("micrec", _spec(), **SMALL)
    files = retrieval_files(model, "micrec")
    loaded, preset = retrieval_from_files(files)
    assert preset == "micrec" and isinstance(loaded, TwoTowerModel) and loaded.cfg == model.cfg
    cands = [Candidate(f"i{k}", _item(k)) for k in range(3)]
    assert np.array_equal(loaded.encode_items(cands), model.encode_items(cands))
    ctx = [_context("u1", [1, 2])]
    assert np.array_equal(loaded.encode_users(ctx), model.encode_users(ctx))
    with pytest.raises(ValueError):
        retrieval_from_files({k: v for k, v in files.items() if k != "spec.json"})


def test_recency_order_puts_the_newest_behaviour_first() -> None:
    mask = torch.tensor([[True, True, True, False], [False, False, False, False], [True, True, True, True]])
    idx, valid = recency_order(mask, 3)
    assert idx[0].tolist() == [2, 1, 0] and valid[0].tolist() == [True, True, True]
    assert valid[1].tolist() == [False, False, False]
    assert idx[2].tolist() == [3, 2, 1]
