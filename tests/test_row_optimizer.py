"""The row-wise optimizer of the embedding tables (streamrank.train.optim): it follows torch's own AdamW on
the rows it touches, row-wise Adagrad follows its formula, and each row's state survives growth, recycling
and a checkpoint round trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from streamrank.config import Settings
from streamrank.features import FeatureSpec
from streamrank.models.layers import FeatureEmbedder, GrowableEmbedding
from streamrank.train.learner import OnlineLearner
from streamrank.train.optim import ModelOptimizer, RowWiseOptimizer
from tests.synthetic_samples import make_samples

torch.set_num_threads(1)
LR, WD = 0.05, 0.1


def _batches(steps: int, rows: int, seed: int = 0) -> list[torch.Tensor]:
    """Index batches that touch some rows (with repeats) and skip others, never the padding row alone."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, rows, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
            for _ in range(steps)]


def _loss(e: torch.Tensor, step: int) -> torch.Tensor:
    target = torch.linspace(-1, 1, e.shape[-1]) * (1 + step % 3)
    return ((e - target) ** 2).sum()


def test_lazy_adam_matches_torch_adamw_per_row() -> None:
    table = GrowableEmbedding(8, 3)
    opt = RowWiseOptimizer({"t": table}, "adam", lr=LR, weight_decay=WD)
    # the reference: one torch AdamW per row, stepped only when the batch touched that row, after the
    # decoupled decay (1 - lr wd) of each step the row sat idle since its last step (what the lazy rule owes,
    # applied with the update: the gradient is the one at the row's undecayed value)
    ref = [torch.nn.Parameter(table.weight.detach()[r].clone()) for r in range(8)]
    ref_opts = [torch.optim.AdamW([p], lr=LR, weight_decay=WD) for p in ref]
    last = [0] * 8
    for step, idx in enumerate(_batches(30, 8), start=1):
        opt.zero_grad()
        _loss(table(idx), step - 1).backward()
        assert table.weight.grad is not None and table.weight.grad.is_sparse
        opt.step()
        grads_at = [p.detach().clone() for p in ref]  # the batch's forward saw every row as it was
        for r in set(idx.tolist()):
            ref_opts[r].zero_grad()
            rows = [ref[int(i)] if int(i) == r else grads_at[int(i)] for i in idx]
            _loss(torch.stack(rows), step - 1).backward()
            with torch.no_grad():
                ref[r].mul_((1 - LR * WD) ** (step - last[r] - 1))
            last[r] = step
            ref_opts[r].step()
    expected = torch.stack([p.detach() for p in ref])
    assert torch.allclose(table.weight.detach()[1:], expected[1:], atol=1e-6)
    assert torch.all(table.weight.detach()[0] == 0)  # padding is never updated


def test_rows_touched_every_step_follow_dense_adamw() -> None:
    table = GrowableEmbedding(5, 4)
    dense = torch.nn.Parameter(table.weight.detach()[1:].clone())
    opt = RowWiseOptimizer({"t": table}, "adam", lr=LR, weight_decay=WD)
    ref = torch.optim.AdamW([dense], lr=LR, weight_decay=WD)
    idx = torch.arange(1, 5)
    for step in range(20):
        opt.zero_grad()
        ref.zero_grad()
        _loss(table(idx), step).backward()
        _loss(dense, step).backward()
        opt.step()
        ref.step()
    assert torch.allclose(table.weight.detach()[1:], dense.detach(), atol=1e-6)


def test_rowwise_adagrad_follows_its_formula() -> None:
    table = GrowableEmbedding(6, 3)
    opt = RowWiseOptimizer({"t": table}, "adagrad", lr=LR)
    w = table.weight.detach().double().numpy().copy()
    acc = np.zeros(6)
    for step, idx in enumerate(_batches(15, 6, seed=3)):
        opt.zero_grad()
        _loss(table(idx), step).backward()
        opt.step()
        g = np.zeros_like(w)
        target = (torch.linspace(-1, 1, 3) * (1 + step % 3)).double().numpy()
        for i in idx.tolist():
            g[i] += 2 * (w[i] - target)
        for r in set(idx.tolist()):
            acc[r] += np.mean(g[r] ** 2)
            w[r] -= LR * g[r] / (np.sqrt(acc[r]) + 1e-8)
    assert np.allclose(table.weight.detach().numpy(), w, atol=1e-5)


def test_growth_keeps_every_rows_state() -> None:
    torch.manual_seed(0)
    grown, full = GrowableEmbedding(4, 3), GrowableEmbedding(4, 3)
    full.grow_to(64)  # a table that never needs to grow (same first rows)
    with torch.no_grad():
        full.weight[:4] = grown.weight
    opt_g = RowWiseOptimizer({"t": grown}, "adam", lr=LR, weight_decay=WD)
    opt_f = RowWiseOptimizer({"t": full}, "adam", lr=LR, weight_decay=WD)
    for step, idx in enumerate(_batches(40, 4)):
        if step == 10:
            param = grown.weight
            assert grown.grow_to(9) and grown.weight is not param and grown.capacity == 9  # replaced
            assert not grown.grow_to(9) and grown.grow_to(8) is False
        for table, opt in ((grown, opt_g), (full, opt_f)):
            opt.zero_grad()
            _loss(table(idx), step).backward()
            opt.step()
    assert torch.allclose(grown.weight.detach()[:4], full.weight.detach()[:4], atol=1e-7)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.allclose(opt_g.state["t"][key][:4], opt_f.state["t"][key][:4])
    assert int(opt_g.state["t"]["step"][1:4].min()) > 0 and opt_g.state["t"]["exp_avg"].shape[0] == 9


def test_recycled_rows_restart_their_state_only() -> None:
    spec = FeatureSpec(max_seq_len=2, dense=())
    v = spec.vocabs["item"]
    v.lookup_many(["a", "b", "c"], grow=True, now=0)
    emb = FeatureEmbedder(spec, 4)
    opt = ModelOptimizer(emb, lr=LR, row_optimizer="adam")
    emb.table("item")(torch.tensor([2, 3, 4])).sum().backward()
    opt.step()
    v.lookup_many(["b", "c"], now=10)
    assert v.expire(5) == [2] and v.lookup("z", grow=True, now=10) == 2
    assert not emb.sync(opt)
    st = opt.rows.state["tables.item"]
    assert torch.all(st["exp_avg"][2] == 0) and int(st["step"][2]) == 0
    assert torch.all(st["exp_avg"][3:5] != 0) and st["step"][3:5].tolist() == [1.0, 1.0]


def test_table_state_dict_holds_used_rows_only() -> None:
    table = GrowableEmbedding(3, 2)
    table.grow_to(4)  # capacity 6, 4 rows used
    assert table.capacity == 6 and table.state_dict()["weight"].shape == (4, 2)
    other = GrowableEmbedding(2, 2)
    other.load_state_dict(table.state_dict())
    assert other.num == 4 and torch.equal(other.weight.detach()[:4], table.weight.detach()[:4])
    with pytest.raises(RuntimeError, match="size mismatch"):
        GrowableEmbedding(2, 3).load_state_dict(table.state_dict())


def test_checkpoint_round_trip_keeps_row_state(tmp_path) -> None:
    settings = Settings(data_dir=str(tmp_path), train_shuffle_pool=0)  # each call learns its batch
    samples = make_samples(1200, seed=1)
    learner = OnlineLearner(settings, "din", seed=0)
    for k in range(0, 800, 200):
        learner.learn(samples[k:k + 200])
    state = copy.deepcopy(learner.state())
    restored = OnlineLearner.from_state(settings, state)
    a, b = learner.optimizer.rows.state, restored.optimizer.rows.state
    assert set(a) == set(b) and a
    for name in a:
        rows = learner.model.get_submodule(name).num
        for key in a[name]:
            assert torch.equal(a[name][key][:rows], b[name][key][:rows])
    report = restored.learn(samples[800:1000])  # and it goes on learning from where it was
    assert report.learned == 200 and restored.steps == learner.steps + 1


def test_rowwise_adagrad_on_one_dimensional_rows_is_torch_adagrad() -> None:
    # with one value per row the row's mean squared gradient is the element's: torch's Adagrad is the reference,
    # and an untouched row is left alone by both (zero gradient: no accumulation, no step)
    table = GrowableEmbedding(7, 1)
    ref = torch.nn.Parameter(table.weight.detach().clone())
    opt = RowWiseOptimizer({"t": table}, "adagrad", lr=LR, eps=1e-10)
    ref_opt = torch.optim.Adagrad([ref], lr=LR, eps=1e-10)
    for step, idx in enumerate(_batches(25, 7, seed=5)):
        opt.zero_grad()
        ref_opt.zero_grad()
        _loss(table(idx), step).backward()
        _loss(torch.nn.functional.embedding(idx, ref), step).backward()
        opt.step()
        ref_opt.step()
    assert torch.allclose(table.weight.detach()[1:], ref.detach()[1:], atol=1e-6)


def test_a_checkpoint_of_another_optimizer_resumes_with_fresh_optimizer_state(tmp_path) -> None:
    samples = make_samples(400, seed=3)
    adam = Settings(data_dir=str(tmp_path), train_row_optimizer="adam", train_shuffle_pool=0)
    learner = OnlineLearner(adam, "din")
    learner.learn(samples[:200])
    state = learner.state()
    adagrad = Settings(data_dir=str(tmp_path), train_shuffle_pool=0)
    resumed = OnlineLearner.from_state(adagrad, state)  # adagrad now: state restarts
    assert resumed.learned == 200 and resumed.optimizer.rows.kind == "adagrad" and not resumed.optimizer.rows.state
    for (n, p), (_, q) in zip(learner.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(p, q), n
    assert resumed.learn(samples[200:]).learned == 200
