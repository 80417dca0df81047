"""MicRec as the paper specifies it (docs/retrieval.md, "Fidelity to the paper"): each test pins one point
where the code used to differ from the paper's method section."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrank.models.retrieval import PRESETS, RetrievalConfig, build_retrieval_model
from streamrank.models.retrieval.cl import other_rows
from streamrank.train import cooc_sampling
from streamrank.train.cooc_sampling import NeighbourSampler
from streamrank.train.retrieval_losses import ClickedItems, CLSamplers, StepInputs, step_losses
from tests.test_retrieval_cl import toy_catalogue

torch.set_num_threads(1)
N = 24
SMALL = {"emb_dim": 8, "dim": 8, "tower_hidden": (16,), "ffn_dim": 16, "max_behaviours": 4, "n_negatives": N,
         "cl_anchors": N, "cl_negatives": 10}


def _toy() -> tuple:
    return toy_catalogue(N, 2, 8)


def test_defaults_are_the_papers_cl_settings() -> None:
    cfg = RetrievalConfig()
    # Sec. 5.3: tau = 1 for all three tasks, raw dot products (Eq. 2, 4, 5), up to 50 negatives, ratio 0.5
    assert (cfg.cl_temperature, cfg.cl_normalize, cfg.cl_negatives, cfg.fea_dropout) == (1.0, False, 50, 0.5)
    assert cfg.fea_on == "raw" and cfg.mask_clicked and cfg.sess_same_category > 1.0
    m = PRESETS["micrec"]
    assert (m.fea_weight, m.sem_weight, m.sess_weight) == (1.0, 0.3, 0.1)
    assert (cfg.emb_dim, cfg.dim, cfg.tower_hidden, cfg.max_behaviours) == (64, 64, (128, 64), 20)


def test_feature_cl_projects_raw_embeddings_with_its_own_one_layer_projector() -> None:
    spec, corpus, users = _toy()
    torch.manual_seed(0)
    model = build_retrieval_model("micrec", spec, **SMALL)
    # Eq. 2: MLP_f reads f (item_dim); Eq. 4-5: MLP_t, MLP_s read d = DNN(f) (dim); one Linear each
    assert model.projectors["fea"].in_features == model.embed.item_dim
    assert model.projectors["sem"].in_features == model.projectors["sess"].in_features == model.cfg.dim
    assert all(isinstance(p, torch.nn.Linear) for p in model.projectors.values())
    graph = NeighbourSampler.from_lists([{(k + 1) % N: 1.0} for k in range(N)])
    rng = np.random.default_rng(0)
    losses = step_losses(model, corpus, StepInputs(users, rng.integers(0, N, 8), np.arange(N)),
                         CLSamplers(graph, graph), rng, torch.Generator().manual_seed(0))
    losses["fea"].backward()
    tower_grad = sum(float(p.grad.abs().sum()) for p in model.item_tower.parameters() if p.grad is not None)
    assert tower_grad == 0.0  # the feature-level CL does not go through the item tower ...
    assert float(model.embed.table("item").weight.grad.abs().sum()) > 0  # ... it trains the raw embeddings
    old = build_retrieval_model("fea", spec, fea_on="tower", **SMALL)
    assert old.projectors["fea"].in_features == old.cfg.dim


def test_configs_saved_before_fea_on_rebuild_the_tower_variant() -> None:
    d = PRESETS["fea"].to_dict()
    for k in ("fea_on", "mask_clicked", "sess_same_category"):
        d.pop(k)
    old = RetrievalConfig.from_dict(d)
    assert (old.fea_on, old.mask_clicked, old.sess_same_category) == ("tower", False, 1.0)


def test_in_batch_negatives_are_distinct() -> None:
    idx = other_rows(60, 50, torch.Generator().manual_seed(0))
    assert idx.shape == (60, 50)
    assert all(len(set(row.tolist())) == 50 for row in idx)  # sampling with replacement would repeat
    assert not (idx == torch.arange(60).unsqueeze(1)).any()


@pytest.mark.parametrize("dense", [True, False])
def test_sampled_negatives_are_refilled_to_k_distinct_non_neighbours(dense: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if not dense:  # the sorted-keys membership path of large catalogues
        monkeypatch.setattr(cooc_sampling, "DENSE_LIMIT", 0)
    n = 400
    # every item co-occurred with the first half of the corpus: half of any random pick is not a negative
    sampler = NeighbourSampler.from_lists([{j: 1.0 for j in range(n // 2) if j != i} for i in range(n)])
    assert (sampler.adj is not None) == dense
    pool = np.random.default_rng(1).integers(0, n, 300)
    anchors = np.arange(0, n, 7)
    pick, valid = sampler.negatives(anchors, pool, 50, np.random.default_rng(0))
    chosen = pool[pick]
    assert not (valid & (chosen < n // 2)).any()
    assert valid.sum(1).min() == 50  # the paper's 50 negatives, not ~25 left after masking
    assert all(len(set(row[v].tolist())) == v.sum() for row, v in zip(chosen, valid, strict=True))


def test_session_positives_emphasise_same_category_cooccurrences() -> None:
    _, corpus, _ = _toy()
    # item 0 (category c0) co-occurred once with item 1 (c1) and once with item 2 (c0)
    sampler = NeighbourSampler.from_lists([{1: 1.0, 2: 1.0}] + [{} for _ in range(N - 1)])
    samplers = CLSamplers(session=sampler)
    assert samplers.session_for(1.0, corpus) is sampler
    boosted = samplers.session_for(3.0, corpus)
    assert boosted is samplers.session_for(3.0, corpus)  # built once
    pos, _ = boosted.positives(np.zeros(20000, dtype=np.int64), np.random.default_rng(0))
    assert abs((pos == 2).mean() - 0.75) < 0.015  # 3 : 1 for the same-category partner
    pick, valid = boosted.negatives(np.zeros(50, dtype=np.int64), np.arange(N), 5, np.random.default_rng(0))
    assert not valid[np.isin(pick, [0, 1, 2])].any()  # negatives unchanged: still never co-occurred


def test_matching_negatives_leave_out_the_users_clicked_items() -> None:
    clicked = ClickedItems(np.array([0, 0, 1]), np.array([3, 5, 4]), n_items=8)
    expect = np.array([[False, True, False, True], [False, False, True, False], [False] * 4])
    for table in (clicked, _keys_only(clicked)):
        assert np.array_equal(table.mask(np.array([0, 1, 7]), np.array([2, 3, 4, 5])), expect)
    spec, corpus, users = _toy()
    torch.manual_seed(0)
    model = build_retrieval_model("base", spec, **SMALL)
    targets, pool = np.arange(8), np.arange(8, N)
    seen = np.zeros((8, len(pool)), dtype=bool)
    seen[:, :4] = True  # every user clicked pool items 8..11: they must not act as negatives
    masked = step_losses(model, corpus, StepInputs(users, targets, pool, seen), CLSamplers(),
                         np.random.default_rng(0))["match"]
    dropped = step_losses(model, corpus, StepInputs(users, targets, pool[4:]), CLSamplers(),
                          np.random.default_rng(0))["match"]
    assert torch.allclose(masked, dropped, atol=1e-6)
    off = build_retrieval_model("base", spec, mask_clicked=False, **SMALL)
    off.load_state_dict(model.state_dict())
    kept = step_losses(off, corpus, StepInputs(users, targets, pool, seen), CLSamplers(),
                       np.random.default_rng(0))["match"]
    assert kept > masked


def _keys_only(c: ClickedItems) -> ClickedItems:
    """The same table through the sorted-keys path used for large user x item products."""
    old, ClickedItems.DENSE_LIMIT = ClickedItems.DENSE_LIMIT, 0
    try:
        users, items = np.nonzero(c.dense)
        return ClickedItems(users, items, c.n_items)
    finally:
        ClickedItems.DENSE_LIMIT = old


def test_cl_tasks_leave_the_matching_term_alone_and_add_up_as_eq_8() -> None:
    """A converged MicRec below its base must not come from CL leaking into the matching path: on the same
    weights and batch the matching loss is the base's, and the total is L_S + sum of lambda * L_task."""
    spec, corpus, users = _toy()
    torch.manual_seed(0)
    base = build_retrieval_model("base", spec, **SMALL)
    micrec = build_retrieval_model("micrec", spec, **SMALL)
    missing, unexpected = micrec.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("projectors.") for k in missing)
    graph = NeighbourSampler.from_lists([{(k + 1) % N: 1.0, (k + 2) % N: 2.0} for k in range(N)])
    step = StepInputs(users, np.random.default_rng(3).integers(0, N, 8), np.arange(N))
    plain = step_losses(base, corpus, step, CLSamplers(), np.random.default_rng(0))
    full = step_losses(micrec, corpus, step, CLSamplers(graph, graph), np.random.default_rng(0),
                       torch.Generator().manual_seed(0))
    assert set(full) == {"match", "fea", "sem", "sess", "total"}
    assert torch.allclose(full["match"], plain["match"], atol=1e-6)
    cfg = micrec.cfg
    weights = {"fea": cfg.fea_weight, "sem": cfg.sem_weight, "sess": cfg.sess_weight}
    expect = full["match"] + sum(w * full[k] for k, w in weights.items())
    assert torch.allclose(full["total"], expect, atol=1e-6)
    assert all(float(full[k]) > 0 for k in ("fea", "sem", "sess"))
