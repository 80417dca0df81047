"""Training end to end: a quick ML-100K run beats popularity; seeds are deterministic; early stopping keeps
the best weights; the benchmark runs and writes its tables (on a synthetic MovieLens)."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch

from streamrank.bench import ranking as bench
from streamrank.data.movielens import MovieItem, MovieLens, MovieLensError, MovieUser, build_ratings
from streamrank.data.protocols import chronological_protocol
from streamrank.features import Behaviors, FeatureSpec, ItemAttrs, Labels, RawExample, Tensorizer
from streamrank.models.ranking import build_model
from streamrank.train import ListSource, TrainConfig, evaluate, evaluate_source, fit, pick_device, predict

torch.set_num_threads(1)
SMALL = dict(bench.QUICK_SIZES, gate_context="target")


def _toy_examples(n: int, seed: int) -> list[RawExample]:
    """Clicks happen when the target's category is among the user's behaviours (position-free rule)."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        cats = [f"c{rng.randrange(6)}" for _ in range(rng.randrange(1, 5))]
        target = f"c{rng.randrange(6)}"
        beh = Behaviors([f"i{rng.randrange(50)}" for _ in cats], [2] * len(cats), list(range(len(cats))), cats)
        out.append(RawExample(f"u{k % 40}", f"i{rng.randrange(50)}", beh, ItemAttrs(target),
                              labels=Labels(click=target in cats)))
    return out


def _toy_setup() -> tuple[Tensorizer, ListSource, ListSource]:
    spec = FeatureSpec(max_seq_len=8, dense=())
    train, valid = _toy_examples(3000, 0), _toy_examples(200, 1)
    spec.fit(train)
    return Tensorizer(spec), ListSource(train), ListSource(valid, sessions=np.arange(200) // 10)


def _fit_once(seed: int, name: str = "aw_moe_cl") -> tuple[dict, np.ndarray]:
    tz, train, valid = _toy_setup()
    train.items = train.items[:600]
    train.labels = train.labels[:600]
    torch.manual_seed(seed)
    model = build_model(name, tz.spec, **SMALL)
    fit(model, tz, train, None, TrainConfig(lr=3e-3, batch_size=64, max_epochs=2, seed=seed, progress=False))
    return model.state_dict(), predict(model, tz, valid)


def test_seeds_are_deterministic() -> None:
    (state_a, pred_a), (state_b, pred_b) = _fit_once(0), _fit_once(0)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert np.array_equal(pred_a, pred_b)
    _, pred_c = _fit_once(1)
    assert not np.allclose(pred_a, pred_c)


def test_early_stopping_restores_the_best_epoch() -> None:
    tz, train, valid = _toy_setup()
    torch.manual_seed(0)
    model = build_model("din", tz.spec, **SMALL)
    cfg = TrainConfig(lr=1e-2, batch_size=64, max_epochs=8, patience=1, progress=False,
                      row_optimizer="adam", row_lr=None)  # a regime that does not saturate the toy problem
    res = fit(model, tz, train, valid, cfg)
    values = [h["valid_session_auc"] for h in res.history]
    assert res.best_valid == max(values) and res.best_epoch == int(np.argmax(values))
    assert len(values) == 8 or len(values) - 1 - res.best_epoch == 1  # stops after `patience` bad epochs
    again = evaluate_source(model, tz, valid, cfg, torch.device("cpu"))
    assert again["session_auc"] == pytest.approx(res.best_valid)  # the best weights, not the last ones
    assert values[-1] != res.best_valid or len(values) == 8


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_quick_ml100k_run_beats_popularity() -> None:
    from streamrank.data.movielens import load_movielens

    try:
        ml = load_movielens("ml-100k")
    except MovieLensError:
        pytest.skip("recbole (ML-100K) not installed")
    p = chronological_protocol(ml, n_eval_negatives=50, seed=0, max_hist=20)
    p.train = p.train.subset(np.sort(np.random.default_rng(0).choice(len(p.train), 100_000, replace=False)))
    tz = Tensorizer(p.make_spec(max_seq_len=20, min_item_count=2))
    pop = evaluate(p.popularity_scores(p.test), p.test.labels, p.test.sessions)["session_auc"]
    torch.manual_seed(0)
    model = build_model("aw_moe_cl", tz.spec, **SMALL)
    fit(model, tz, p.train, None, TrainConfig(lr=1e-3, batch_size=256, max_epochs=1, progress=False))
    got = evaluate(predict(model, tz, p.test), p.test.labels, p.test.sessions)
    print(f"popularity session AUC {pop:.4f}, AW-MoE & CL {got['session_auc']:.4f}")
    assert got["session_auc"] > pop + 0.1, (got, pop)


def _synthetic_movielens() -> MovieLens:
    rng = np.random.default_rng(0)
    users, items, stars, ts = [], [], [], []
    for u in range(30):
        for k, i in enumerate(rng.choice(60, size=12, replace=False)):
            users.append(f"u{u}")
            items.append(f"m{i}")
            stars.append(float(rng.integers(1, 6)))
            ts.append(1000 + 10 * k + u)
    genres = ("Action", "Comedy", "Drama")
    catalogue = {f"m{i}": MovieItem(f"m{i}", "t", 1990 + i % 4, (genres[i % 3],)) for i in range(60)}
    people = {f"u{u}": MovieUser(f"u{u}", 20 + 2 * u, "F", "other", "0") for u in range(30)}
    return MovieLens("synthetic", build_ratings(users, items, stars, ts), catalogue, people)


def test_bench_writes_all_tables(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench.cli, "load", lambda args: _synthetic_movielens())
    monkeypatch.setattr(bench, "FULL_SIZES", bench.QUICK_SIZES)
    rc = bench.main(["--dataset", "ml-1m", "--seeds", "2", "--epochs", "1", "--negatives", "4",
                     "--batch-size", "64", "--max-seq-len", "6", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    md = (tmp_path / "ranking-ml-1m.md").read_text()
    for title in ("Table II", "Table III", "Table III-b", "Table IV", "Table VI", "Gate variants",
                  "RecBole", "Contrastive learning gain"):
        assert title in md
    result = json.loads((tmp_path / "ranking-ml-1m.json").read_text())
    runs = result["chronological"]["runs"]
    assert set(bench.MAIN) | set(bench.ABLATION) | set(bench.VARIANTS) | {"popularity"} == set(runs)
    assert len(runs["aw_moe_cl"][1]) == 2  # two seeds
    assert "full/session_auc" in result["chronological"]["pvalues"]["din|dnn"]
    assert "full/session_auc" in result["chronological"]["pvalues"]["aw_moe|din"]  # the AW-MoE vs DIN
    assert "AW-MoE vs DIN: session AUC" in md
    assert list(result["recbole"]["runs"]) == ["dnn", "din"]
    assert all(np.isfinite(r["auc"]) for r in result["recbole"]["runs"]["din"])
    for _, fits in runs.values():  # every fit says how it ended (issue 18's contract)
        for f in fits:
            assert 1 <= f["best_epoch"] <= f["epochs_run"] == 1 and f["converged"] is False
    gate = runs["aw_moe_cl"][1][0]["gate"]  # how the gate mixes the experts, and the training losses per epoch
    assert gate["g_norm"] > 0 and 0 <= gate["entropy_share"] <= 1 and 1 / 4 <= gate["top_weight"] <= 1
    assert runs["dnn"][1][0]["gate"] is None and "loss_cl" in runs["aw_moe_cl"][1][0]["train_losses"][0]
    assert "How the gated models mix their experts" in md
    for cap in (1, 3, 5, 10):  # the long tail as the paper defines it: several history lengths
        assert f"capped{cap}_full" in runs["aw_moe_cl"][0]
        assert f"capped{cap}_full/session_auc" in result["chronological"]["pvalues"]["aw_moe_cl|aw_moe"]
    claims = {c["claim"]: c for c in result["chronological"]["claims"]}
    assert "aw_moe_cl > aw_moe (session AUC, full test set)" in claims
    assert any(c.startswith("CL's gain larger on histories cut to 1") for c in claims)
    assert all(isinstance(c["holds"], bool) for c in claims.values())
    assert "The paper's claims on these fits" in md and "0 of " in md and "**no**" in md


def _bench_json(tmp_path, monkeypatch, *extra: str) -> dict:
    monkeypatch.setattr(bench.cli, "load", lambda args: _synthetic_movielens())
    monkeypatch.setattr(bench, "FULL_SIZES", bench.QUICK_SIZES)
    out = tmp_path / "-".join(extra)
    assert bench.main(["--dataset", "ml-1m", "--epochs", "1", "--negatives", "4", "--batch-size", "64",
                       "--max-seq-len", "6", "--no-progress", "--out", str(out), *extra]) == 0
    return json.loads((out / "ranking-ml-1m.json").read_text())


def test_bench_parallel_fits_equal_sequential_fits(tmp_path, monkeypatch) -> None:
    """Forked workers give the same numbers as one process: each fit seeds itself and sees the same data."""
    common = ("--seeds", "2", "--no-ablation", "--models", "dnn,aw_moe_cl", "--recbole-models", "din")
    one = _bench_json(tmp_path, monkeypatch, *common, "--workers", "1", "--threads", "1")
    two = _bench_json(tmp_path, monkeypatch, *common, "--workers", "2")
    assert two["machine"]["workers"] == 2 and one["machine"]["workers"] == 1
    for key in ("dnn", "aw_moe_cl"):
        assert one["chronological"]["runs"][key][0] == two["chronological"]["runs"][key][0]
    assert [r["auc"] for r in one["recbole"]["runs"]["din"]] == [r["auc"] for r in two["recbole"]["runs"]["din"]]


def test_bench_ablation_seeds_and_validation_sample(tmp_path, monkeypatch) -> None:
    res = _bench_json(tmp_path, monkeypatch, "--seeds", "2", "--ablation-seeds", "1", "--max-valid-sessions", "10",
                      "--recbole-models", "")
    runs, stats = res["chronological"]["runs"], res["chronological"]["stats"]
    assert [f["seed"] for f in runs["aw_moe"][1]] == [0, 1]  # in Table II and Table VI: all seeds
    assert [f["seed"] for f in runs["aw_moe_base"][1]] == [0]
    assert [f["seed"] for f in runs["aw_moe[gate_norm=none]"][1]] == [0]
    assert stats["valid_sessions_used"] == 10 < stats["valid_sessions"]
    md = (tmp_path / "--seeds-2---ablation-seeds-1---max-valid-sessions-10---recbole-models-" / "ranking-ml-1m.md")
    assert "over seeds [0] only" in md.read_text()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--max-valid-sessions", "-1"], "--max-valid-sessions must be >= 0"),
    (["--models", "dnn,nope"], "unknown models ['nope']"),
])
def test_bench_refuses_bad_options(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=re.escape(message)):
        bench.parse_args(argv)


def test_a_rerun_resumes_from_the_stored_parts(tmp_path, monkeypatch, capsys) -> None:
    """Seeds are added one run at a time: stored fits are reused (same numbers, files untouched), a fit made
    under other settings is not mixed in."""
    common = ("--no-ablation", "--models", "dnn,din", "--recbole-models", "dnn", "--parts", str(tmp_path / "parts"))
    first = _bench_json(tmp_path, monkeypatch, *common, "--seeds", "1")
    (part,) = (tmp_path / "parts").glob("chronological.dnn.seed0.c*.json")  # id: run key, seed, config digest
    stamp = part.stat().st_mtime_ns
    second = _bench_json(tmp_path, monkeypatch, *common, "--seeds", "2")
    assert part.stat().st_mtime_ns == stamp  # reused, not refitted
    assert len(list((tmp_path / "parts").glob("chronological.dnn.seed1.c*.npz"))) == 1
    runs1, runs2 = first["chronological"]["runs"], second["chronological"]["runs"]
    assert [f["seed"] for f in runs2["dnn"][1]] == [0, 1]
    assert runs2["dnn"][0]["full"][0] == runs1["dnn"][0]["full"][0]
    assert [r["seed"] for r in second["recbole"]["runs"]["dnn"]] == [0, 1]
    capsys.readouterr()
    third = _bench_json(tmp_path, monkeypatch, *common, "--seeds", "2")  # everything stored: a report only
    printed = capsys.readouterr().out
    assert "0 to run" in printed and "tensorised" not in printed
    assert third["chronological"]["runs"] == second["chronological"]["runs"]
    other = _bench_json(tmp_path, monkeypatch, *common, "--seeds", "1", "--lr", "0.01")
    assert other["chronological"]["runs"]["dnn"][0]["full"][0] != runs1["dnn"][0]["full"][0]
    assert part.stat().st_mtime_ns != stamp  # refitted under the new settings, and stored for them


@pytest.mark.parametrize("text", ["", "0,3", "a,b"])
def test_bad_history_caps_are_refused(text: str) -> None:
    with pytest.raises(SystemExit, match="--simulated-history takes positive integers"):
        bench.parse_args(["--simulated-history", text])


def test_run_first_starts_the_named_fits_then_the_cheapest() -> None:
    args = bench.parse_args(["--seeds", "1", "--no-ablation", "--recbole-models", "", "--run-first", "aw_moe_cl"])
    assert [j.key for j in bench._jobs(args)] == ["aw_moe_cl", "dnn", "din", "category_moe", "aw_moe"]
    assert bench._jobs(bench.parse_args(["--no-ablation", "--recbole-models", ""]))[0].key == "aw_moe_cl"


def test_first_seed_adds_seeds_to_an_earlier_run() -> None:
    args = bench.parse_args(["--seeds", "2", "--first-seed", "3", "--ablation-seeds", "1"])
    assert args.seed_list == [3, 4] and args.ablation_seed_list == [3]
    with pytest.raises(SystemExit, match="--first-seed must be >= 0"):
        bench.parse_args(["--first-seed", "-1"])
