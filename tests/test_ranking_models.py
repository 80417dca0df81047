"""Ranking models: shapes, masking, gate-once scoring, pair-unit decomposition, ablation flags, CL loss."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from streamrank.features import (
    Batch,
    Candidate,
    Counts,
    FeatureSpec,
    ItemAttrs,
    RequestContext,
    Tensorizer,
)
from streamrank.models.layers import PairUnit, ParallelExperts
from streamrank.models.ranking import PRESETS, RankingModel, build_model, make_config
from streamrank.train.losses import contrastive_loss, info_nce, mask_behaviours, sample_negatives
from tests.modeltools import assert_padding_never_changes_a_score, random_behaviours, random_examples

torch.set_num_threads(1)
SMALL = {"emb_dim": 8, "hidden_dim": 12, "input_mlp_hidden": (16,), "expert_hidden": (24, 12),
         "au_hidden": (16, 8), "gate_unit_hidden": (16, 8), "category_gate_hidden": (16,)}
CONTEXTS = ("query", "target")


def _spec(max_seq_len: int = 10) -> FeatureSpec:
    return FeatureSpec(max_seq_len=max_seq_len, user_fields=("age",), item_fields=("year",), max_tags=2)


def _model(name: str, spec: FeatureSpec, seed: int = 0, **kw: object) -> RankingModel:
    torch.manual_seed(seed)
    return build_model(name, spec, **{**SMALL, **kw}).eval()


def _batch(spec: FeatureSpec, n: int = 12, seed: int = 0) -> Batch:
    return Tensorizer(spec).encode(random_examples(n, seed), grow=True)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shapes(name: str, context: str) -> None:
    spec = _spec()
    batch = _batch(spec)
    out = _model(name, spec, gate_context=context)(batch)
    k = make_config(name).num_experts
    assert out.logits.shape == (12,) and out.expert_logits.shape == (12, k)
    assert (out.gate is None) == (name in ("dnn", "din")) and torch.isfinite(out.logits).all()
    if out.gate is not None:
        assert out.gate.shape == (12, k)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_padding_never_changes_a_score(name: str, context: str) -> None:
    spec = _spec()
    batch = _batch(spec)
    model = _model(name, spec, gate_context=context)
    assert_padding_never_changes_a_score(model, spec, batch)


def _request(spec: FeatureSpec, n_cand: int, n_beh: int, query: str = "q1") -> Batch:
    rng = random.Random(3)
    ctx = RequestContext("u1", random_behaviours(rng, n_beh), query=query, user_fields={"age": "18"})
    cands = [Candidate(f"i{rng.randrange(40)}", ItemAttrs(f"c{k % 5}", tags=["t1"]), Counts(item_clicks=k))
             for k in range(n_cand)]
    tz = Tensorizer(spec)
    tz.encode(random_examples(30), grow=True)
    return tz.encode_request(ctx, cands, grow=True)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_request_scoring_equals_per_candidate_scoring(name: str, context: str) -> None:
    spec = _spec(max_seq_len=50)
    req = _request(spec, n_cand=40, n_beh=50)
    model = _model(name, spec, gate_context=context)
    batched = model.score_request(req)
    one_by_one = torch.cat([model.score_request(req.select(torch.tensor([n]))) for n in range(len(req))])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched, model.score_request(req.per_candidate()), rtol=1e-5, atol=1e-6)


def _record_rows(module: torch.nn.Module, log: list[int]) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda m, args, out: log.append(out.shape[0]))


def test_query_gate_is_computed_once_per_request() -> None:
    spec = _spec(max_seq_len=50)
    req = _request(spec, n_cand=200, n_beh=50)
    model = _model("aw_moe", spec, gate_context="query")
    gate_unit, gate_au = [], []
    _record_rows(model.gate.unit, gate_unit)
    _record_rows(model.gate.attention, gate_au)
    model.score_request(req)
    assert gate_unit == [1] and gate_au == [1]  # one call, over the request's single user row
    target = _model("aw_moe", spec, gate_context="target")
    rows: list[int] = []
    _record_rows(target.gate.unit, rows)
    target.score_request(req)
    assert rows == [200]  # the recommendation setting: a gate per candidate


def test_pair_unit_decomposition_matches_the_concatenation() -> None:
    torch.manual_seed(0)
    unit = PairUnit(6, (10, 5), 3)
    h, v = torch.randn(4, 9, 6), torch.randn(11, 6)
    owner = torch.randint(0, 4, (11,))
    torch.testing.assert_close(unit(h, v, owner), unit.forward_naive(h, v, owner), rtol=1e-5, atol=1e-5)
    hv = torch.randn(4, 6)
    torch.testing.assert_close(unit(h, hv), unit.forward_naive(h, hv), rtol=1e-5, atol=1e-5)


def test_parallel_experts_are_independent_ffns() -> None:
    torch.manual_seed(0)
    experts = ParallelExperts(3, 5, (7, 4), 1)
    x = torch.randn(6, 5)
    out = experts(x)
    for k in range(3):
        z = x
        for layer, (w, b) in enumerate(zip(experts.weights, experts.biases, strict=True)):
            z = z @ w[k] + b[k, 0]
            z = torch.relu(z) if layer < 2 else z
        torch.testing.assert_close(out[:, k], z, rtol=1e-5, atol=1e-6)


def test_ablation_flags_and_gate_inputs() -> None:
    spec = _spec()
    batch = _batch(spec)
    other_target = replace(batch.items, item=batch.items.item.roll(1), tags=batch.items.tags.roll(1, 0))
    moved = Batch(batch.users, other_target, batch.owner)
    base = _model("aw_moe_base", spec, gate_context="target")
    torch.testing.assert_close(base.gate_vectors(batch), base.gate_vectors(moved))  # Base ignores the target
    full = _model("aw_moe", spec, gate_context="target")
    assert not torch.allclose(full.gate_vectors(batch), full.gate_vectors(moved))
    cat = _model("category_moe", spec, gate_context="target")
    torch.testing.assert_close(cat.gate_vectors(batch), cat.gate_vectors(moved))  # same categories
    raw = _model("aw_moe", spec, gate_norm="none")
    out = raw(batch)
    torch.testing.assert_close(out.logits, (out.gate * out.expert_logits).sum(-1))
    empty = replace(batch.users, hist_mask=torch.zeros_like(batch.users.hist_mask))
    out = _model("aw_moe", spec)(Batch(empty, batch.items, batch.owner))
    assert out.gate.abs().max() == 0  # no behaviours -> zero gate -> uniform expert weights
    torch.testing.assert_close(out.logits, out.expert_logits.mean(-1))
    with pytest.raises(ValueError):
        make_config("din", num_experts=4)
    with pytest.raises(ValueError):
        make_config("category_moe", cl_weight=0.05)


def test_info_nce_behaviour() -> None:
    torch.manual_seed(0)
    g = torch.randn(8, 4)
    same = info_nce(g[:1].expand(8, 4), g[:1].expand(8, 4), g[:1].expand(8, 3, 4))
    torch.testing.assert_close(same, torch.log(torch.tensor(4.0)))  # all similarities equal: log(1 + n)
    basis = torch.eye(4)[:, None, :].repeat(1, 3, 1)
    anchor = 5 * torch.eye(4)
    aligned = info_nce(anchor, anchor, torch.roll(basis, 1, 0))
    opposed = info_nce(anchor, -anchor, torch.roll(basis, 1, 0))
    assert aligned < 1e-3 < opposed
    valid = torch.tensor([[True, False, False]] * 4)
    torch.testing.assert_close(info_nce(anchor, anchor, basis, valid), info_nce(anchor, anchor, basis[:, :1]))


def test_cl_views_and_negatives() -> None:
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(64, 30, generator=gen) < 0.7
    view = mask_behaviours(mask, 0.1, gen)
    assert not (view & ~mask).any() and torch.equal(mask_behaviours(mask, 0.0, gen), mask)
    assert 0.8 < view.sum() / mask.sum() < 0.97
    keys = torch.arange(64) // 2  # two rows per user, like the 1:1 training data
    idx, valid = sample_negatives(keys, 3, gen)
    assert idx.shape == (64, 3) and (idx != torch.arange(64)[:, None]).all()
    assert (keys[idx][valid] != keys[:, None].expand(64, 3)[valid]).all() and valid.float().mean() > 0.9


def test_contrastive_loss_trains_the_gate_only() -> None:
    spec = _spec()
    batch = _batch(spec, n=32)
    model = _model("aw_moe_cl", spec, gate_context="target").train()
    out = model(batch)
    loss = contrastive_loss(model, batch, out.gate, torch.arange(32) % 7, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.gate.unit.first.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.experts.parameters())
