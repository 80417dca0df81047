"""`streamrank bench scenario` end to end on ML-100K (quick mode) and the scenario side of the protocol."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from streamrank.bench import movielens_cli as cli
from streamrank.bench import scenario as bench
from streamrank.data.movielens import MovieLensError, load_movielens
from streamrank.data.protocols import recbole_protocol
from streamrank.train.offline import TrainConfig


def _ml100k():  # type: ignore[no-untyped-def]
    try:
        return load_movielens("ml-100k")
    except MovieLensError:
        pytest.skip("recbole (ML-100K) not installed")


def test_examples_carry_their_users_age_bucket_as_scenario() -> None:
    ml = _ml100k()
    p = recbole_protocol(ml, seed=0, max_hist=10)
    scenarios = p.assign_scenarios(ml, "age")
    assert scenarios == ("age:1", "age:18", "age:25", "age:35", "age:45", "age:50", "age:56")  # numeric order
    codes = p.scenario_codes(p.test, scenarios)
    assert codes.min() >= 0 and len(np.unique(codes)) == 7
    rows = np.arange(0, len(p.test), 997)
    for row, ex in zip(rows, p.test.examples(rows), strict=True):
        assert ex.scenario == scenarios[codes[row]]
        age = int(ml.users[ex.user_id].age)
        bucket = int(ex.scenario.split(":")[1])
        assert bucket <= age or bucket == 1  # ML-100K exact ages fall in the ML-1M bucket at or below them
    spec = p.make_spec(10, scenarios=scenarios)
    assert spec.num_branches == 8 and spec.branch_of("age:25") == 3


def test_quick_benchmark_writes_every_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _ml100k()
    rc = bench.main(["--quick", "--no-progress", "--workers", "1",
                     "--no-individual", "--out", str(tmp_path)])
    assert rc == 0
    md = (tmp_path / "scenario-ml-100k-quick.md").read_text()
    for title in ("Table II", "Table III", "Table IV", "RelaImpr"):
        assert title in md
    result = json.loads((tmp_path / "scenario-ml-100k-quick.json").read_text())
    assert set(result["models"]) == set(bench.MAIN) | set(bench.ABLATION)
    for model, seeds in result["models"].items():
        row = seeds["0"]
        assert row["auc"] > 0.55, (model, row["auc"])  # every model learns something in one small epoch (20k rows)
        assert len(row["scenarios"]) == 7
        assert (model == bench.REFERENCE) != ("delong_vs_ref" in row)
    for f in result["fits"]:  # how each fit ended (issue 18's contract)
        assert f["epochs_run"] == 1 and f["best_epoch"] == 1 and f["converged"] is False
    assert "not converged" in md
    # a rerun with the same settings refits nothing: every fit's part is read back, numbers unchanged
    parts = sorted((tmp_path / "parts" / "scenario-ml-100k-quick").glob("*.json"))
    assert len(parts) == len(result["fits"])
    stamps = [p.stat().st_mtime_ns for p in parts]
    assert bench.main(["--quick", "--no-progress", "--workers", "1", "--no-individual", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "scenario-ml-100k-quick.json").read_text())
    assert [p.stat().st_mtime_ns for p in parts] == stamps
    assert again["models"] == result["models"]


def test_serving_cost_benchmark_times_every_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from streamrank.bench import scenario_cost

    assert scenario_cost.main(["--candidates", "20", "--behaviours", "8", "--repeats", "3", "--models",
                               "bst,saml,din", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "scenario-serving-cost.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["bst", "saml", "din"]
    assert all(r["p50_ms"] > 0 and r["params"] > 0 for r in rows) and rows[0]["vs_bst"] == 1.0
    with pytest.raises(SystemExit):
        scenario_cost.main(["--repeats", "0", "--out", str(tmp_path)])


@pytest.mark.parametrize(("argv", "message"), [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--models", "bst,nope"], "unknown models ['nope']"),
    (["--models", "saml,din"], "must include bst"),
])
def test_bad_benchmark_options_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=re.escape(message)):
        bench.parse_args(argv)


def test_the_table_optimizer_option_reaches_the_fit_and_keeps_default_parts_valid() -> None:
    default = bench.parse_args(["--quick"])
    assert "table_optimizer" not in bench.fit_settings(default)  # stored parts of the default still match
    assert cli.table_config(default) == {"row_optimizer": "adagrad", "row_lr": TrainConfig().row_lr}
    assert TrainConfig().row_lr == 0.2
    adam = bench.parse_args(["--quick", "--table-optimizer", "adam"])
    assert bench.fit_settings(adam)["table_optimizer"] == "adam"
    assert cli.table_config(adam) == {"row_optimizer": "adam", "row_lr": None}  # the dense lr
    assert cli.table_config(bench.parse_args(["--quick", "--table-lr", "0.05"]))["row_lr"] == 0.05
    # other table settings keep their parts in a folder of their own: they would replace the default's
    assert cli.parts_label(default) == default.dataset_label
    assert cli.parts_label(adam) == f"{adam.dataset_label}-tables-adam"
    assert cli.parts_label(bench.parse_args(["--quick", "--table-lr", "0.05"])).endswith("-tables-adagrad-lr0.05")
    # and the report says which optimizer the tables had
    assert cli.tables_text(bench.fit_settings(default)) == "row-wise Adagrad, lr 0.2"
    assert cli.tables_text(bench.fit_settings(adam)) == f"lazy row-wise Adam, lr {adam.lr}"
