"""Resumable benchmark parts: a part round-trips exactly, only under the settings it was made with, and
nothing read back can execute code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrank.bench.parts import Part, PartStore, config_tag, fit_id, run_resumable


def test_a_part_round_trips_under_its_own_settings(tmp_path: Path) -> None:
    store = PartStore(tmp_path, {"epochs": 10, "sizes": {"hidden": (64, 32)}})
    arr = np.linspace(0, 1, 7, dtype=np.float32)
    store.save("dnn.seed0", Part({"info": {"best_epoch": 3}}, {"full/session_auc": arr}))
    same = PartStore(tmp_path, {"sizes": {"hidden": [64, 32]}, "epochs": 10})  # JSON-equal settings
    got = same.load("dnn.seed0")
    assert got is not None and got.meta == {"info": {"best_epoch": 3}}
    assert np.array_equal(got.arrays["full/session_auc"], arr) and got.arrays["full/session_auc"].dtype == np.float32
    other = PartStore(tmp_path, {"epochs": 12, "sizes": {"hidden": (64, 32)}})
    assert other.load("dnn.seed0") is None and other.load("missing") is None
    assert other.note() is not None and "other settings" in other.note()
    assert same.note() is None


def test_a_fit_early_stopping_ended_is_reused_under_any_cap_it_stayed_within(tmp_path: Path) -> None:
    """Nothing in training depends on the epoch cap: a fit early stopping ended after 6 epochs is the same fit
    under a cap of 6 or 20 (not 5); one its cap ended is not (it is refitted, continuing its checkpoint)."""
    made = PartStore(tmp_path, {"epochs": 12, "lr": 0.1}, cap_key="epochs")
    made.save("stopped", Part({"k": 1}, early_stopped_at=6))
    made.save("capped", Part({"k": 2}))
    for cap, expect in ((20, True), (6, True), (5, False), (12, True)):
        got = PartStore(tmp_path, {"epochs": cap, "lr": 0.1}, cap_key="epochs").load("stopped")
        assert (got is not None) == expect, cap
    assert PartStore(tmp_path, {"epochs": 20, "lr": 0.1}, cap_key="epochs").load("capped") is None
    assert PartStore(tmp_path, {"epochs": 12, "lr": 0.1}, cap_key="epochs").load("capped").meta == {"k": 2}
    assert PartStore(tmp_path, {"epochs": 20, "lr": 0.2}, cap_key="epochs").load("stopped") is None  # lr differs
    assert PartStore(tmp_path, {"epochs": 20, "lr": 0.1}).load("stopped") is None  # no cap key: exact settings
    assert made.load("stopped").early_stopped_at == 6
    # a capped fit's checkpoint is found again under a larger cap, never under another learning rate
    grown = PartStore(tmp_path, {"epochs": 20, "lr": 0.1}, cap_key="epochs")
    other = PartStore(tmp_path, {"epochs": 12, "lr": 0.2}, cap_key="epochs")
    assert grown.checkpoint("capped") == made.checkpoint("capped") != other.checkpoint("capped")


def test_stored_arrays_never_unpickle(tmp_path: Path) -> None:
    store = PartStore(tmp_path, {})
    store.save("x", Part({}, {"ok": np.zeros(2)}))
    np.savez(tmp_path / "x.npz", ok=np.array([{"a": 1}], dtype=object))  # a pickled object array planted
    with pytest.raises(ValueError, match="allow_pickle"):
        store.load("x")


def test_fit_ids_are_file_names() -> None:
    assert fit_id("chronological", "aw_moe[gate=user only]", "seed2") == "chronological.aw_moe_gate=user_only_.seed2"


def test_a_changed_model_configuration_gets_a_new_fit_id() -> None:
    from streamrank.models.factory import model_config

    base = model_config("aw_moe_cl", hidden_dim=32)
    assert config_tag(base) == config_tag(model_config("aw_moe_cl", hidden_dim=32))
    assert config_tag(base) == config_tag({**base, "expert_hidden": list(base["expert_hidden"])})  # JSON-equal
    assert config_tag(base) != config_tag(model_config("aw_moe_cl", hidden_dim=32, cl_weight=0.01))
    assert config_tag(model_config("deepfm")) != config_tag(model_config("wide_deep"))


def test_run_resumable_runs_only_the_missing_fits(tmp_path: Path) -> None:
    store = PartStore(tmp_path, {"v": 1})
    calls: list[int] = []

    def run(job: int) -> Part:
        calls.append(job)
        return Part({"job": job}, {"a": np.full(3, job)})

    first = run_resumable([1, 2], store, run, 1, 1, "cpu", lambda j: f"job{j}", progress=False)
    again = run_resumable([1, 2, 3], store, run, 1, 1, "cpu", lambda j: f"job{j}", progress=False)
    assert calls == [1, 2, 3]  # 1 and 2 were read back the second time
    assert [p.meta["job"] for p in first] == [1, 2] and [p.meta["job"] for p in again] == [1, 2, 3]
    assert [int(p.arrays["a"][0]) for p in again] == [1, 2, 3]
