"""Every job settings file in jobs/ loads into a valid Settings object."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrank.config import load_settings

JOBS = sorted((Path(__file__).resolve().parent.parent / "jobs").glob("*.toml"))


def test_there_are_job_files() -> None:
    assert JOBS, "jobs/ should hold at least one settings file"


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_job_settings_load(path: Path) -> None:
    settings = load_settings(path)
    assert settings.bootstrap_servers
    assert settings.partitions > 0
