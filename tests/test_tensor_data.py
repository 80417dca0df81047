"""A split tensorised once (streamrank.train.tensor_data) gives the batches the feature path gives, in memory
and memory-mapped, and training on it is training on the examples."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from streamrank.features import FeatureSpec, RawExample, Tensorizer
from streamrank.models.factory import build_model
from streamrank.train.offline import ListSource, TrainConfig, fit, predict
from streamrank.train.tensor_data import TensorDataset
from tests.synthetic_samples import make_samples

torch.set_num_threads(1)


def _source(n: int = 600, seed: int = 0) -> ListSource:
    return ListSource([RawExample.from_sample(s) for s in make_samples(n, seed=seed)],
                      sessions=np.arange(n) // 6)


def _tensorizer(source: ListSource) -> Tensorizer:
    return Tensorizer(FeatureSpec(max_seq_len=8).fit(source.items[:400]))  # later rows have unseen ids: OOV


@pytest.mark.parametrize("memmap", [False, True])
def test_batches_equal_the_feature_path(tmp_path, memmap: bool) -> None:
    source = _source()
    tz = _tensorizer(source)
    data = TensorDataset.build(source, tz, chunk=128, memmap_bytes=0 if memmap else 1 << 40)
    assert len(data) == 600 and (data._tmpdir is not None) == memmap
    idx = np.array([5, 599, 0, 300, 300, 17])
    a, b = tz.encode(source.examples(idx)), data.batch(idx)
    for side in ("users", "items"):
        for name, x in vars(getattr(a, side)).items():
            y = getattr(getattr(b, side), name)
            assert x.dtype == y.dtype and torch.equal(x, y), f"{side}.{name}"
    assert torch.equal(a.labels, b.labels) and torch.equal(a.owner, b.owner)
    keys = data.keys(idx)
    assert keys[3] == keys[4] and len(set(keys.tolist())) == len({source.items[i].user_id for i in idx})
    directory = data._tmpdir
    del data
    assert directory is None or not os.path.exists(directory)  # the temporary files go with the dataset


def test_fit_and_predict_on_tensors_equal_fit_on_examples() -> None:
    train, valid = _source(600, seed=1), _source(240, seed=2)
    models = []
    for use_tensors in (False, True):
        tz = _tensorizer(train)
        torch.manual_seed(0)
        model = build_model("din", tz.spec, emb_dim=4, hidden_dim=8, input_mlp_hidden=(), au_hidden=(8,),
                            expert_hidden=(8,))
        cfg = TrainConfig(lr=1e-2, batch_size=64, max_epochs=2, patience=5, progress=False, seed=3)
        tr, va = (TensorDataset.build(train, tz), TensorDataset.build(valid, tz)) if use_tensors else (train, valid)
        res = fit(model, tz, tr, va, cfg)
        models.append((model, res, predict(model, tz, va, batch_size=100)))
    (m1, r1, p1), (m2, r2, p2) = models
    assert r1.best_valid == r2.best_valid and np.array_equal(p1, p2)
    for (name, x), (_, y) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_subset_and_empty_split() -> None:
    source = _source(120)
    tz = _tensorizer(source)
    data = TensorDataset.build(source, tz)
    part = data.subset(np.arange(120) % 2 == 0)
    assert len(part) == 60 and torch.equal(part.batch([1]).items.item, data.batch([2]).items.item)
    assert part.examples([1])[0] is source.items[2]
    with pytest.raises(ValueError, match="empty"):
        TensorDataset.build(ListSource([]), tz)
