"""The file-system registry: atomic publication, verification, rollback, retention, concurrent readers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from streamrank.registry.store import Registry, RegistryError


def _files(v: int) -> dict[str, bytes]:
    body = json.dumps({"v": v, "pad": "x" * 50_000}).encode()  # large enough that a torn write would show
    return {"weights.bin": body, "spec.json": json.dumps({"v": v}).encode()}


def test_publish_makes_a_verified_current_version(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "m")
    assert reg.current() is None
    info = reg.publish(_files(1), {"metrics": {"prequential_auc": 0.7}})
    assert reg.current_version() == info.version == 1
    got, files = reg.read()
    assert files == _files(1) and got.meta["metrics"]["prequential_auc"] == 0.7
    assert len(got.checksum) == 64
    info2 = reg.publish(_files(2), {})
    assert (info2.version, reg.current_version()) == (2, 2)


def test_a_corrupted_file_is_refused(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "m")
    info = reg.publish(_files(1), {})
    (info.path / "weights.bin").write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="checksum"):
        reg.read()
    with pytest.raises(RegistryError, match="checksum"):
        reg.verify(info)
    (info.path / "spec.json").unlink()
    with pytest.raises(RegistryError, match="missing"):
        reg.verify(info)


def test_rollback_and_its_limits(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "m")
    with pytest.raises(RegistryError):
        reg.rollback()
    for v in (1, 2, 3):
        reg.publish(_files(v), {})
    assert reg.rollback().version == 2
    assert reg.read()[1] == _files(2)
    assert reg.rollback(to=1).version == 1
    with pytest.raises(RegistryError, match="does not exist"):
        reg.rollback(to=9)
    assert reg.publish(_files(4), {}).version == 4, "numbers keep increasing after a rollback"


def test_prune_keeps_the_live_version_and_the_newest_others(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "m")
    for v in range(1, 8):
        reg.publish(_files(v), {})
    reg.rollback(to=2)
    deleted = reg.prune(keep=3)
    assert deleted == [1, 3, 4]
    assert reg.list_versions() == [2, 5, 6, 7]
    assert reg.current_version() == 2


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b"])
def test_bad_model_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RegistryError):
        Registry(tmp_path, name)


def test_readers_never_see_a_half_written_version(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "m")
    reg.publish(_files(0), {"v": 0})
    done = threading.Event()
    errors: list[str] = []
    reads = [0]

    def reader() -> None:
        r = Registry(tmp_path, "m")
        while not done.is_set():
            try:
                info, files = r.read()
            except RegistryError as exc:
                if "pruned while reading" not in str(exc):  # an explicit, retryable error is fine
                    errors.append(str(exc))
                continue
            v = json.loads(files["spec.json"])["v"]
            if json.loads(files["weights.bin"])["v"] != v or info.meta["v"] != v:
                errors.append(f"inconsistent version {info.version}")
            reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for v in range(1, 80):
        reg.publish(_files(v), {"v": v})
        reg.prune(keep=2)
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert reads[0] > 50
