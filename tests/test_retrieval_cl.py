"""MicRec's contrastive tasks: InfoNCE, co-occurrence counting and sampling, and that each CL loss
decreases on a toy problem where its signal exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrank.config import HOUR_MS, Settings
from streamrank.data.titles import genre_neighbours, nearest_neighbours
from streamrank.features import Candidate, FeatureSpec, ItemAttrs, RequestContext, Tensorizer
from streamrank.models.retrieval import build_retrieval_model
from streamrank.models.retrieval.cl import element_dropout, info_nce, other_rows
from streamrank.train.cooc_sampling import NeighbourSampler, session_cooccurrence
from streamrank.train.retrieval_losses import CLSamplers, StepInputs, step_losses

torch.set_num_threads(1)


def test_info_nce_prefers_the_positive_and_masks_negatives() -> None:
    a = torch.tensor([[1.0, 0.0]])
    good = info_nce(a, torch.tensor([[5.0, 0.0]]), torch.tensor([[[0.0, 5.0]]]))
    bad = info_nce(a, torch.tensor([[0.0, 5.0]]), torch.tensor([[[5.0, 0.0]]]))
    assert good < bad
    masked = info_nce(a, torch.tensor([[0.0, 5.0]]), torch.tensor([[[5.0, 0.0]]]), torch.tensor([[False]]))
    assert masked.item() == pytest.approx(0.0)  # only the positive is left in the softmax
    none = info_nce(a, a, a.unsqueeze(1), row_valid=torch.tensor([False]))
    assert none.item() == 0.0


def test_element_dropout_and_other_rows() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.ones(200, 50)
    out = element_dropout(f, 0.5, g)
    assert 0.4 < (out == 0).float().mean().item() < 0.6
    assert torch.allclose(out[out > 0], torch.tensor(2.0))
    idx = other_rows(6, 50, g)
    assert idx.shape == (6, 5) and not (idx == torch.arange(6).unsqueeze(1)).any()


def test_cooccurrence_follows_the_stream_workers_rule() -> None:
    h = HOUR_MS
    seqs = [(["a", "b", "c", "a", "d"], [0, h // 2, h - 10, h - 5, 5 * h]),  # d is hours later: alone
            (["b", "c"], [0, 10])]
    cooc = session_cooccurrence(seqs, Settings(cooc_top_m=1000))
    # a-b (30 min), a-c, b-c twice (both users); the repeat of "a" finds itself in the window: nothing new
    assert cooc.counts["b"] == {"a": 1, "c": 2}
    assert cooc.counts["a"] == {"b": 1, "c": 1}
    assert "d" not in cooc.counts
    sampler = NeighbourSampler.from_cooc(cooc, {"a": 0, "b": 1, "c": 2, "d": 3}, 4)
    assert sampler.degree(np.arange(4)).tolist() == [2, 2, 2, 0]


def test_positive_sampling_follows_the_counts_and_negatives_never_cooccurred() -> None:
    sampler = NeighbourSampler.from_lists([{1: 1.0, 2: 3.0}, {0: 1.0}, {0: 3.0}, {}, {}])
    rng = np.random.default_rng(0)
    pos, has = sampler.positives(np.zeros(20000, dtype=np.int64), rng)
    assert has.all()
    share = (pos == 2).mean()
    assert abs(share - 0.75) < 0.015  # 3 of 4 co-occurrences are with item 2
    pos, has = sampler.positives(np.array([3, 1]), rng)
    assert has.tolist() == [False, True] and pos[1] == 0
    pool = np.arange(5)
    pick, valid = sampler.negatives(np.zeros(500, dtype=np.int64), pool, 10, rng)
    chosen = pool[pick]
    assert not valid[np.isin(chosen, [0, 1, 2])].any()  # itself and its co-occurring items are masked
    # only 3 and 4 may be negatives of item 0: each row keeps them once each (distinct negatives)
    assert all(sorted(row[v].tolist()) == [3, 4] for row, v in zip(chosen, valid, strict=True))


def test_semantic_neighbour_tables() -> None:
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
    assert nearest_neighbours(emb, 1)[:, 0].tolist() == [1, 0, 3, 2]
    table = genre_neighbours([["a"], ["a"], ["b", "c"], ["b", "c"]], 1)
    assert table[:, 0].tolist() == [1, 0, 3, 2]


# --- each CL loss decreases on a toy problem where its signal exists ---------------------------------
N_ITEMS, GROUP = 40, 5


def toy_catalogue(n_items: int, n_categories: int, n_users: int) -> tuple:
    """A small catalogue (item k: category k mod n_categories, tag k mod 3) with its spec, the encoded corpus
    and `n_users` history-less users: (spec, corpus, users)."""
    items = [Candidate(f"i{k}", ItemAttrs(category=f"c{k % n_categories}", tags=[f"g{k % 3}"]))
             for k in range(n_items)]
    spec = FeatureSpec(max_seq_len=4, max_tags=1, dense=(), use_user_id=False)
    for c in items:
        spec.vocabs["item"].add(c.item_id)
        spec.vocabs["category"].add(c.item.category)
        spec.vocabs["tag"].add(c.item.tags[0])
    tz = Tensorizer(spec)
    return spec, tz.encode_candidates(items, [0] * n_items), tz.encode_contexts(
        [RequestContext(f"u{k}") for k in range(n_users)])


def _toy() -> tuple:
    spec, corpus, users = toy_catalogue(N_ITEMS, 4, 32)
    # items in blocks of GROUP are each other's semantic neighbours / co-occur (the signal to learn)
    groups = [{j: float(1 + (j % 2)) for j in range(k - k % GROUP, k - k % GROUP + GROUP) if j != k}
              for k in range(N_ITEMS)]
    return spec, corpus, users, NeighbourSampler.from_lists(groups)


@pytest.mark.parametrize("task", ["fea", "sem", "sess"])
def test_each_cl_loss_decreases_where_its_signal_exists(task: str) -> None:
    spec, corpus, users, graph = _toy()
    torch.manual_seed(0)
    weights = {"fea_weight": 0.0, "sem_weight": 0.0, "sess_weight": 0.0, f"{task}_weight": 1.0}
    model = build_retrieval_model("base", spec, emb_dim=16, dim=16, tower_hidden=(32,), ffn_dim=16,
                                  max_behaviours=4, n_negatives=N_ITEMS, cl_anchors=N_ITEMS, cl_negatives=20,
                                  **weights)
    samplers = CLSamplers(semantic=graph, session=graph)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    curve = []
    for _ in range(150):
        targets = rng.integers(0, N_ITEMS, 32)
        losses = step_losses(model, corpus, StepInputs(users, targets, np.arange(N_ITEMS)), samplers, rng, gen)
        opt.zero_grad()
        losses[task].backward()
        opt.step()
        curve.append(float(losses[task].detach()))
    first, last = np.mean(curve[:5]), np.mean(curve[-5:])
    assert last < 0.7 * first, (task, first, last)
    assert set(losses) >= {"match", task, "total"}
