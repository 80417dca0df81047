"""Multi-scenario models (SAML, its ablations, Wide&Deep, DeepFM, DCN, MMoE, BST): shapes, masking, request
scoring, the per-scenario gradient mask, the mutual unit, scenario routing and the fallback of rare branches."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from streamrank.features import (
    Batch,
    Candidate,
    Counts,
    FeatureSpec,
    ItemAttrs,
    RawExample,
    RequestContext,
    Tensorizer,
)
from streamrank.features.spec import OTHER_SCENARIO
from streamrank.models.factory import build_model, model_from_config
from streamrank.models.ranking.artifact import model_files, model_from_files
from streamrank.models.scenario import PRESETS, ScenarioModel, make_config
from streamrank.models.scenario.attention import SequenceAttention
from streamrank.train.offline import train_step
from tests.modeltools import assert_padding_never_changes_a_score, random_behaviours, random_examples

torch.set_num_threads(1)
SCENARIOS = ("app", "web", "mini")
SMALL = {"emb_dim": 8, "scenario_emb_dim": 2, "hidden": (16, 8), "heads": 2, "min_branch_samples": 0}


def _spec(max_seq_len: int = 10, scenarios: tuple[str, ...] = SCENARIOS) -> FeatureSpec:
    return FeatureSpec(max_seq_len=max_seq_len, user_fields=("age",), item_fields=("year",), max_tags=2,
                       scenarios=scenarios)


def _examples(n: int, seed: int = 0, scenarios: tuple[str, ...] = (*SCENARIOS, "unknown")) -> list[RawExample]:
    return random_examples(n, seed, max_beh=11, scenarios=scenarios)


def _model(name: str, spec: FeatureSpec, seed: int = 0, **kw: object) -> ScenarioModel:
    torch.manual_seed(seed)
    model = build_model(name, spec, **{**SMALL, **kw})
    assert isinstance(model, ScenarioModel)
    return model.eval()


def _batch(spec: FeatureSpec, n: int = 16, seed: int = 0, **kw: object) -> Batch:
    return Tensorizer(spec).encode(_examples(n, seed, **kw), grow=True)


def _sync(model: ScenarioModel) -> ScenarioModel:
    model.sync_vocab()
    return model


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shapes_and_a_training_step(name: str) -> None:
    spec = _spec()
    batch = _batch(spec)
    model = _sync(_model(name, spec))
    out = model(batch)
    assert out.logits.shape == (16,) and torch.isfinite(out.logits).all()
    assert out.expert_logits.shape == ((16, spec.num_branches) if model.cfg.branched else (16, 1))
    assert (out.aux_logits is not None) == model.cfg.aux_net
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    logs = train_step(model, batch, optimizer)
    assert all(v == v for v in logs.values()) and ("loss_aux" in logs) == model.cfg.aux_net


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_padding_never_changes_a_score(name: str) -> None:
    spec = _spec()
    batch = _batch(spec)
    model = _sync(_model(name, spec))
    assert_padding_never_changes_a_score(model, spec, batch, extra=5)


@pytest.mark.parametrize("scenario", ["web", "never-seen"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_request_scoring_equals_per_candidate_scoring(name: str, scenario: str) -> None:
    spec = _spec(max_seq_len=30)
    tz = Tensorizer(spec)
    tz.encode(_examples(40), grow=True)
    rng = random.Random(3)
    ctx = RequestContext("u1", random_behaviours(rng, 25), query="q1", scenario=scenario, user_fields={"age": "18"})
    cands = [Candidate(f"i{rng.randrange(40)}", ItemAttrs(f"c{k % 5}", tags=["t1"]), Counts(item_clicks=k))
             for k in range(30)]
    req = tz.encode_request(ctx, cands)
    model = _sync(_model(name, spec))
    batched = model.score_request(req)
    one_by_one = torch.cat([model.score_request(req.select(torch.tensor([n]))) for n in range(len(req))])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched, model.score_request(req.per_candidate()), rtol=1e-5, atol=1e-6)


def test_scenario_attention_uses_each_rows_own_weight_set() -> None:
    torch.manual_seed(0)
    attn = SequenceAttention(dim=8, heads=2, sets=3)
    tokens, target = torch.randn(6, 5, 8), torch.randn(9, 8)
    mask = torch.rand(6, 5) < 0.7
    owner, sets = torch.randint(0, 6, (9,)), torch.tensor([2, 0, 1, 2, 0, 1])
    mixed = attn(tokens, mask, target, owner, sets)
    for n in range(9):
        u = int(owner[n])
        alone = attn(tokens[u:u + 1], mask[u:u + 1], target[n:n + 1], torch.zeros(1, dtype=torch.long),
                     sets[u:u + 1])
        torch.testing.assert_close(mixed[n:n + 1], alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(mixed, attn(tokens, mask, target, owner, torch.zeros(6, dtype=torch.long)))


def _grad_norms(params: list[torch.Tensor], branches: int) -> list[float]:
    """Per branch index, the gradient norm over parameters shaped (branches, ...)."""
    norms = [0.0] * branches
    for p in params:
        if p.grad is not None and p.shape[0] == branches:
            for k in range(branches):
                norms[k] += float(p.grad[k].norm())
    return norms


@pytest.mark.parametrize("name", ["saml", "saml_no_gate", "saml_no_aux", "mmoe"])
def test_a_samples_gradient_reaches_only_its_own_branch(name: str) -> None:
    spec = _spec()
    batch = _batch(spec, n=24)
    model = _sync(_model(name, spec)).train()
    per_branch = [p for n, p in model.named_parameters()
                  if n.startswith(("branches.", "mmoe.gate", "mmoe.tower", "inputs.attn_scenario."))]
    assert per_branch
    for row in range(len(batch)):
        model.zero_grad(set_to_none=True)
        out = model(batch)
        F.binary_cross_entropy_with_logits(out.logits[row], batch.labels[row]).backward()
        own = int(batch.users.branch[batch.owner[row]])
        norms = _grad_norms(per_branch, spec.num_branches)
        assert norms[own] > 0, f"row {row}: its own branch {own} got no gradient"
        assert all(v == 0 for k, v in enumerate(norms) if k != own), f"row {row} (branch {own}): {norms}"
        if model.aux is not None:  # knowledge flows one way: the branches' loss never trains the aux network
            assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.aux.parameters())


def test_the_auxiliary_loss_trains_the_auxiliary_network() -> None:
    spec = _spec()
    batch = _batch(spec)
    model = _sync(_model("saml", spec)).train()
    out = model(batch)
    F.binary_cross_entropy_with_logits(out.aux_logits, batch.labels).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux.parameters())
    assert all(p.grad is None for p in model.branches.parameters())


def test_mutual_unit_with_gate_zero_equals_independent_branches() -> None:
    spec = _spec()
    batch = _batch(spec)
    saml = _sync(_model("saml", spec))
    independent = _sync(_model("saml_no_gate", spec, seed=1))
    missing, unexpected = independent.load_state_dict(saml.state_dict(), strict=False)
    assert not missing and unexpected and all(".mutual." in k for k in unexpected)
    assert not torch.allclose(saml(batch).logits, independent(batch).logits, atol=1e-4), "the gate mixes branches"
    with torch.no_grad():
        for unit in saml.branches.mutual:
            unit.b.fill_(-200.0)  # sigmoid underflows to exactly 0: alpha = 0
    torch.testing.assert_close(saml(batch).logits, independent(batch).logits, rtol=0, atol=0)
    torch.testing.assert_close(saml(batch).expert_logits, independent(batch).expert_logits, rtol=0, atol=0)


def test_unknown_scenarios_take_the_shared_branch_and_are_served() -> None:
    spec = _spec()
    assert spec.branch_names() == [OTHER_SCENARIO, *SCENARIOS]
    assert spec.branch_of("web") == 2 and spec.branch_of("") == 0 and spec.branch_of("new-country") == 0
    batch = _batch(spec, n=8, scenarios=("new-country", "", "web"))
    assert batch.users.branch.tolist() == [0, 0, 2, 0, 0, 2, 0, 0]
    model = _sync(_model("saml", spec))
    out = model(batch)
    torch.testing.assert_close(out.logits, out.expert_logits.gather(1, batch.users.branch[:, None]).squeeze(1))
    with pytest.raises(ValueError, match="not 'other'"):
        FeatureSpec(scenarios=("web", OTHER_SCENARIO))
    with pytest.raises(ValueError, match="distinct"):
        FeatureSpec(scenarios=("web", "web"))


def test_a_branch_with_little_traffic_is_served_by_the_auxiliary_network() -> None:
    spec = _spec()
    first = _batch(spec, n=40, scenarios=("app", "web", "unknown"))  # nothing for "mini"
    model = _sync(_model("saml", spec, min_branch_samples=10)).train()
    train_step(model, first, torch.optim.AdamW(model.parameters(), lr=1e-3))
    assert dict(zip(spec.branch_names(), model.branch_samples.tolist(), strict=True)) == {
        "other": 13, "app": 14, "web": 13, "mini": 0}
    batch = _batch(spec, n=8, scenarios=("mini", "web"))
    _sync(model).eval()
    out = model(batch)
    rare = batch.users.branch == spec.branch_of("mini")
    torch.testing.assert_close(out.logits[rare], out.aux_logits[rare])  # the branch has not learned yet
    torch.testing.assert_close(out.logits[~rare], out.expert_logits[~rare, spec.branch_of("web")])
    no_aux = _sync(_model("saml_no_aux", spec, min_branch_samples=10))
    no_aux.branch_samples[:] = torch.tensor([50, 50, 50, 0])
    out = no_aux(batch)  # without an auxiliary network: the mean of the trained branches
    torch.testing.assert_close(out.logits[rare], out.expert_logits[rare][:, :3].mean(1))
    no_aux.train()
    assert torch.equal(no_aux(batch).logits[rare], no_aux(batch).expert_logits[rare, 3])  # training: own branch


def test_artefact_round_trip_keeps_scores_and_branch_traffic() -> None:
    spec = _spec()
    batch = _batch(spec)
    model = _sync(_model("saml", spec)).train()
    train_step(model, batch, torch.optim.AdamW(model.parameters(), lr=1e-2))
    model.eval()
    again, preset = model_from_files(model_files(model, "saml"))
    assert preset == "saml" and isinstance(again, ScenarioModel) and again.spec.scenarios == SCENARIOS
    assert torch.equal(again.branch_samples, model.branch_samples)
    torch.testing.assert_close(again(batch).logits, model(batch).logits)
    assert isinstance(model_from_config(spec, model.cfg.to_dict()), ScenarioModel)


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="SAML's flags"):
        make_config("bst", aux_net=True)
    with pytest.raises(ValueError, match="needs multi_branch"):
        make_config("saml", multi_branch=False, aux_net=False)
    with pytest.raises(ValueError, match="divisible"):
        make_config("saml", emb_dim=5, heads=4)
    with pytest.raises(KeyError, match="presets"):
        build_model("nope", _spec())
    ablation = {n: make_config(n) for n in ("saml", "saml_no_gate", "saml_no_aux", "saml_no_gate_mutual")}
    assert [c.mutual_gate for c in ablation.values()] == [True, False, True, False]
    assert [c.aux_net for c in ablation.values()] == [True, True, False, False]
    assert [c.branched for c in ablation.values()] == [True, True, True, False]
