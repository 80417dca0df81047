"""Epoch checkpoints of offline fits: a fit killed after an epoch resumes there and ends exactly where an
uninterrupted fit ends; the file holds nothing that can execute code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamrank.models.ranking import build_model
from streamrank.train import TrainConfig, fit, predict
from tests.test_ranking_quick import SMALL, _toy_setup

torch.set_num_threads(1)


class Killed(RuntimeError):
    pass


def _fit(tmp: Path | None, kill_after: int | None = None, epochs: int = 4) -> tuple[dict, np.ndarray, object]:
    tz, train, valid = _toy_setup()
    torch.manual_seed(0)
    model = build_model("aw_moe_cl", tz.spec, **SMALL)  # CL draws masks and negatives from the generator
    cfg = TrainConfig(lr=3e-3, batch_size=128, max_epochs=epochs, patience=epochs, seed=0, progress=False,
                      checkpoint=None if tmp is None else str(tmp / "fit.ckpt"))

    def on_epoch(record: dict) -> None:
        if kill_after is not None and record["epoch"] + 1 == kill_after:
            raise Killed

    res = fit(model, tz, train, valid, cfg, on_epoch=on_epoch)
    return model.state_dict(), predict(model, tz, valid), res


def test_a_killed_fit_resumes_and_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    state, preds, res = _fit(None)
    with pytest.raises(Killed):
        _fit(tmp_path, kill_after=2)
    assert (tmp_path / "fit.ckpt").exists()
    state2, preds2, res2 = _fit(tmp_path)  # the same command again
    assert all(torch.equal(state[k], state2[k]) for k in state)
    assert np.array_equal(preds, preds2)
    assert [h["valid_session_auc"] for h in res2.history] == [h["valid_session_auc"] for h in res.history]
    assert res2.best_epoch == res.best_epoch and len(res2.history) == 4
    assert not res2.stopped_early and res2.stopped_at() is None
    assert (tmp_path / "fit.ckpt").exists()  # its cap ended it: the checkpoint stays for a larger cap


def test_a_capped_fit_continues_under_a_larger_cap_as_if_run_with_it(tmp_path: Path) -> None:
    """A fit its epoch cap ended keeps its checkpoint; the same fit with a larger cap continues from it
    (patience = cap here, so early stopping never ends it) and ends as a fit run with that cap at once."""
    state, preds, res = _fit(None, epochs=3)
    _fit(tmp_path, epochs=2)
    assert (tmp_path / "fit.ckpt").exists()
    state2, preds2, res2 = _fit(tmp_path, epochs=3)
    assert all(torch.equal(state[k], state2[k]) for k in state) and np.array_equal(preds, preds2)
    assert [h["valid_session_auc"] for h in res2.history] == [h["valid_session_auc"] for h in res.history]
    _, _, res3 = _fit(tmp_path, epochs=2)  # a smaller cap than the checkpoint's epochs: starts over
    assert len(res3.history) == 2


def test_the_checkpoint_loads_without_unpickling(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        _fit(tmp_path, kill_after=1)
    torch.load(tmp_path / "fit.ckpt", weights_only=True)  # raises if anything but plain data were stored


def test_a_fit_killed_after_its_stopping_epoch_trains_no_further(tmp_path: Path) -> None:
    """Early stopping had ended the fit when it was killed (after the checkpoint, before returning): the
    rerun returns the same result without another epoch."""
    def once(ckpt: Path | None, kill_after: int | None = None) -> tuple[dict, object]:
        tz, train, valid = _toy_setup()
        torch.manual_seed(0)
        model = build_model("din", tz.spec, **SMALL)
        cfg = TrainConfig(lr=1e-2, batch_size=64, max_epochs=8, patience=1, progress=False, row_optimizer="adam",
                          row_lr=None, checkpoint=None if ckpt is None else str(ckpt))

        def on_epoch(record: dict) -> None:
            if kill_after is not None and record["epoch"] + 1 == kill_after:
                raise Killed

        return model.state_dict(), fit(model, tz, train, valid, cfg, on_epoch=on_epoch)

    state, res = once(None)
    stopped = len(res.history)
    assert stopped < 8, "the regime must stop early for this test to mean anything"
    assert res.stopped_early and res.stopped_at() == stopped and res.convergence()["stopped_early"]
    with pytest.raises(Killed):
        once(tmp_path / "fit.ckpt", kill_after=stopped)
    state2, res2 = once(tmp_path / "fit.ckpt")
    assert len(res2.history) == stopped and res2.best_epoch == res.best_epoch and res2.stopped_early
    assert all(torch.equal(state[k], state2[k]) for k in state)
    assert not (tmp_path / "fit.ckpt").exists()  # early stopping ended it: nothing left to continue
