"""The generated protobuf modules are up to date, and the settings load and validate as documented."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from streamrank import protogen
from streamrank.config import DAY_MS, ConfigError, Settings, load_settings
from streamrank.v1 import events_pb2

# --- generated code ----------------------------------------------------------------------------------


def committed_modules(root: Path) -> list[str]:
    return sorted(p.name for p in (root / protogen.PROTO_PACKAGE).glob("*.py*") if p.name != "__init__.py")


def test_generated_code_is_up_to_date() -> None:
    assert protogen.stale_files() == [], "run `make proto` and commit streamrank/v1/"


def test_generate_writes_exactly_the_committed_modules(tmp_path: Path) -> None:
    written = protogen.generate(tmp_path)
    assert written, "protoc wrote nothing"
    assert all(p.is_relative_to(tmp_path / protogen.PROTO_PACKAGE) for p in written)
    assert sorted(p.name for p in written) == committed_modules(protogen.REPO_ROOT)
    # Every schema file produces a module and its stub.
    for proto in protogen.proto_files():
        stem = proto.stem
        assert {f"{stem}_pb2.py", f"{stem}_pb2.pyi"} <= {p.name for p in written}


def _copy_committed(dst_root: Path) -> Path:
    target = dst_root / protogen.PROTO_PACKAGE
    target.mkdir(parents=True)
    for path in (protogen.REPO_ROOT / protogen.PROTO_PACKAGE).glob("*.py*"):
        shutil.copyfile(path, target / path.name)
    return target


def test_stale_files_detects_edited_missing_and_extra_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _copy_committed(tmp_path)
    monkeypatch.setattr(protogen, "REPO_ROOT", tmp_path)
    assert protogen.stale_files() == [], "an exact copy is fresh"
    with (target / "events_pb2.py").open("a") as fh:
        fh.write("# hand edit\n")
    (target / "features_pb2.pyi").unlink()
    (target / "removed_pb2.py").write_text("# a module whose schema was deleted\n")
    assert protogen.stale_files() == ["events_pb2.py", "features_pb2.pyi", "removed_pb2.py"]


def test_stale_files_detects_a_schema_edited_without_regenerating(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(protogen.PROTO_ROOT, protos)
    schema = protos / protogen.PROTO_PACKAGE / "events.proto"
    schema.write_text(schema.read_text() + "\nmessage AddedWithoutMakeProto {\n  string x = 1;\n}\n")
    monkeypatch.setattr(protogen, "PROTO_ROOT", protos)
    assert protogen.stale_files() == ["events_pb2.py", "events_pb2.pyi"]


# --- settings ----------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No STREAMRANK_* variable from the calling shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("STREAMRANK_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_are_valid(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.topic("events") == "streamrank.events"
    assert settings.retention_by_type == {
        events_pb2.CLICK: 7 * DAY_MS, events_pb2.ADD_TO_CART: 30 * DAY_MS, events_pb2.PURCHASE: 365 * DAY_MS,
    }
    assert settings.shortest_retention_ms == 7 * DAY_MS


def test_env_vars_override_defaults_with_the_field_types(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMRANK_BATCH_SIZE", "123")
    clean_env.setenv("STREAMRANK_BATCH_WITHIN_S", "0.25")
    clean_env.setenv("STREAMRANK_TOPIC_PREFIX", "x.")
    clean_env.setenv("STREAMRANK_CLICK_RETENTION_MS", "5000")
    settings = load_settings()
    assert settings.batch_size == 123 and isinstance(settings.batch_size, int)
    assert settings.batch_within_s == 0.25
    assert settings.topic("events") == "x.events"
    assert settings.retention_by_type[events_pb2.CLICK] == 5000
    assert settings.partitions == Settings().partitions


def test_env_value_of_the_wrong_type_names_the_field(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMRANK_PARTITIONS", "eight")
    with pytest.raises(ConfigError, match="partitions"):
        load_settings()


def test_toml_file_then_env_then_overrides(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "streamrank.toml"
    path.write_text('batch_size = 7\ncooc_top_m = 3\nworker_id = "from-file"\n\n[extra]\nnote = "kept"\n')
    settings = load_settings(path)
    assert (settings.batch_size, settings.cooc_top_m, settings.worker_id) == (7, 3, "from-file")
    assert settings.extra == {"note": "kept"}
    # STREAMRANK_CONFIG names the file when no path is given.
    clean_env.setenv("STREAMRANK_CONFIG", str(path))
    assert load_settings().worker_id == "from-file"
    # Env vars beat the file, explicit overrides beat both (None overrides are ignored).
    clean_env.setenv("STREAMRANK_BATCH_SIZE", "9")
    assert load_settings().batch_size == 9
    assert load_settings(batch_size=11).batch_size == 11
    assert load_settings(batch_size=None).batch_size == 9


def test_unknown_key_in_toml_is_an_error(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("batch_size = 7\nbatch_sise = 8\n")
    with pytest.raises(ConfigError, match="batch_sise"):
        load_settings(path)


def test_missing_config_file_is_an_error(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(("changes", "field"), [
    ({"batch_size": 0}, "batch_size"),
    ({"partitions": -1}, "partitions"),
    ({"attribution_window_ms": 0}, "attribution_window_ms"),
    ({"batch_within_s": 0}, "batch_within_s"),
    ({"stats_window_ms": 5_000, "stats_bucket_ms": 3_000}, "stats_window_ms"),
    ({"feature_sequence_length": 11, "max_sequence_length": 10}, "feature_sequence_length"),
])
def test_invalid_values_name_the_field(changes: dict, field: str, clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(**changes)
    with pytest.raises(ConfigError, match=field):
        Settings().with_overrides(**changes)


def test_invalid_values_from_a_toml_file_and_env(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.toml"
    path.write_text("stats_window_ms = 5000\nstats_bucket_ms = 3000\n")
    with pytest.raises(ConfigError, match="stats_window_ms"):
        load_settings(path)
    clean_env.setenv("STREAMRANK_BATCH_SIZE", "0")
    with pytest.raises(ConfigError, match="batch_size"):
        load_settings()


def test_with_overrides_returns_a_validated_copy() -> None:
    base = Settings()
    changed = base.with_overrides(batch_size=5)
    assert (changed.batch_size, base.batch_size) == (5, Settings().batch_size)
    with pytest.raises(AttributeError):
        changed.batch_size = 6  # type: ignore[misc]


def test_a_fractional_value_for_an_integer_setting_is_an_error(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMRANK_BATCH_SIZE", "2.5")
    with pytest.raises(ConfigError, match="batch_size"):
        load_settings()
    clean_env.delenv("STREAMRANK_BATCH_SIZE")
    path = tmp_path / "s.toml"
    path.write_text("batch_size = 2.5\n")
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        assert "batch_size" in str(exc)
    else:
        raise AssertionError(f"batch_size = 2.5 was accepted as {settings.batch_size!r}")


def test_an_unknown_override_is_a_config_error(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(no_such_setting=1)


@pytest.mark.parametrize("field", ["click_retention_ms", "purchase_retention_ms", "max_future_skew_ms"])
def test_non_positive_retentions_are_refused(field: str, clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(**{field: -1})
