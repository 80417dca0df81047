"""RecBole peer benchmark: the atomic export is exactly our split, a missing peer env is refused, the report renders.

None of these needs RecBole (CI has none) except the last, which runs only where `make peer-env` was run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from streamrank.bench import recbole_peer as rp
from streamrank.data.movielens import load_movielens
from streamrank.data.protocols import recbole_protocol


@pytest.fixture(scope="module")
def protocol():
    """Protocol (b) on ML-100K (the same code path as ML-1M, a tenth of the rows)."""
    return recbole_protocol(load_movielens("ml-100k"), seed=0)


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], rows[1:]


def test_export_is_exactly_our_split(tmp_path: Path, protocol) -> None:
    sizes = rp.export_atomic(protocol, tmp_path, "ml-100k-peer")
    d = tmp_path / "ml-100k-peer"
    assert sizes == {"train": len(protocol.train), "valid": len(protocol.valid), "test": len(protocol.test)}
    assert sum(sizes.values()) == protocol.stats["interactions"]
    for name in rp.SPLITS:
        header, rows = _read(d / f"ml-100k-peer.{name}.inter")
        assert header == ["user_id:token", "item_id:token", "label:float"]
        split = getattr(protocol, name)
        got = np.array(rows, dtype=np.int64)
        assert len(got) == len(split)
        np.testing.assert_array_equal(got[:, 0], split.user)
        np.testing.assert_array_equal(got[:, 1], split.item)
        np.testing.assert_array_equal(got[:, 2], split.labels.astype(np.int64))
    c = protocol.corpus
    header, users = _read(d / "ml-100k-peer.user")
    assert header == ["user_id:token", "age:token", "gender:token", "occupation:token"]
    assert [int(r[0]) for r in users] == list(range(len(c.user_ids)))
    assert [r[1:] for r in users] == [[f["age"], f["gender"], f["occupation"]] for f in c.user_fields]
    header, items = _read(d / "ml-100k-peer.item")
    assert header == ["item_id:token", "genre:token_seq", "release_year:token"]
    assert [int(r[0]) for r in items] == list(range(len(c.item_ids)))
    assert [r[1].split(" ") if r[1] else [] for r in items] == c.item_tags
    assert [r[2] for r in items] == c.item_year
    assert not any('"' in line for line in (d / "ml-100k-peer.item").read_text().splitlines())


def test_missing_peer_env_is_refused_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-env" / "bin" / "python"
    with pytest.raises(SystemExit) as exc:
        rp.main(["--quick", "--peer-python", str(missing), "--out", str(tmp_path)])
    msg = str(exc.value.code)
    assert "\n" not in msg and "run `make peer-env` first" in msg and str(tmp_path / "no-env") in msg
    assert not list(tmp_path.glob("recbole-peer-*"))


def _row(side: str, model: str, auc: float, seed: int = 0, history: int = 0, converged: bool = True) -> dict:
    optim = {} if side == "recbole" else {"optim": "ours"}
    return {"side": side, "model": model, "seed": seed, "history": history, **optim, "auc": auc, "logloss": 0.33,
            "epochs_run": 12, "best_epoch": 9 if converged else 12, "converged": converged, "seconds": 120.5,
            "rows_per_s": 58_000.0, "settings": {"sizes": {}, "train": {"lr": 0.001, "batch_size": 1024,
                                                                          "weight_decay": 0.01, "patience": 2}}}


def test_pairs_and_report_render_from_a_result() -> None:
    rows = [_row("recbole", "FNN", 0.8900), _row("recbole", "DeepFM", 0.8990),
            _row("streamrank", "dnn", 0.8885), _row("streamrank", "deepfm", 0.8950, converged=False),
            _row("streamrank", "din", 0.9100, history=50)]
    pairs = rp.pair_rows(rows)
    assert [(p["ours"], p["optim"], p["recbole"], p["target_met"], p["both_converged"]) for p in pairs] == [
        ("dnn", "ours", "FNN", True, True), ("deepfm", "ours", "DeepFM", False, False)]
    assert pairs[0]["auc_gap"] == pytest.approx(-0.0015)
    result = {"dataset": "ml-1m", "command": "python -m streamrank.bench.recbole_peer", "wall_seconds": 999.0,
              "machine": {"platform": "linux", "torch": "2.13.0"},
              "settings": {"data_seed": 0, "peer_epochs": 500, "stopping_step": 10},
              "protocol": {"interactions": 739012, "train": 591210, "valid": 73901, "test": 73901,
                           "positive_rate": 0.778},
              "split_sizes": {"train": 591210, "valid": 73901, "test": 73901},
              "features": {"recbole": {"token": ["user_id", "item_id"], "token_seq": ["genre"], "float": []},
                           "streamrank": {"user": ["user id", "age"], "item": ["item id"], "history_len": 0,
                                          "constant": ["brand"]}},
              "peer_models": rp.PEER_MODELS, "our_sizes": rp.OUR_SIZES, "target": rp.TARGET, "rows": rows,
              "pairs": pairs}
    md = rp.render(result)
    assert "| recbole | FNN | recbole | 0 | 0 | 0.8900 | 0.3300 | 12 (9) | yes | 120 | 58,000 |" in md
    assert "| streamrank | din | ours | 50 | 0 | 0.9100 |" in md
    assert "- dnn (optim ours) vs FNN, seed 0: -0.0015 → met." in md
    assert "- deepfm (optim ours) vs DeepFM, seed 0: -0.0040 → not met (not both converged)." in md
    assert "| recbole | FNN | recbole | 0 | 1 | 0.8900 | 0.3300 | 0.8903 |" in md
    assert "- Over 1 seed(s), dnn (optim ours) vs FNN: mean gap -0.0015, target met in 1 of 1." in md
    legacy = [{k: v for k, v in r.items() if k != "optim"} for r in rows]  # parts stored before "optim" existed
    assert rp.render({**result, "rows": legacy}) == md
    assert "591,210 / 73,901 / 73,901" in md


@pytest.mark.skipif(not rp.PEER_PYTHON.is_file(), reason="no RecBole peer environment (make peer-env)")
def test_quick_run_with_the_real_peer(tmp_path: Path) -> None:
    assert rp.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    result = json.loads((tmp_path / "recbole-peer-ml-100k-quick.json").read_text())
    sides = {(r["side"], r["model"], r.get("optim")) for r in result["rows"]}
    assert sides == {("recbole", "FNN", None), ("recbole", "DeepFM", None)} | {
        ("streamrank", m, o) for m in ("dnn", "deepfm") for o in ("ours", "matched")}
    peer = [r for r in result["rows"] if r["side"] == "recbole"]
    assert all(r["split_sizes"] == {"train": 4000, "valid": 1000, "test": 1000} and r["epochs_run"] == 1 for r in peer)
    assert all(0.0 <= r["auc"] <= 1.0 for r in result["rows"]) and len(result["pairs"]) == 4
    assert (tmp_path / "recbole-peer-ml-100k-quick.md").read_text().startswith("# RecBole 1.2.1")
