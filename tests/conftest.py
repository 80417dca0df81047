"""Shared fixtures: the embedded broker (real tansu on loopback) and per-test settings."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrank.broker import EmbeddedBroker
from streamrank.config import Settings, load_settings

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded broker for the whole run (tests isolate themselves with topic prefixes)."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings with a fresh topic prefix, worker id and data dir for one test."""
    n = next(_prefixes)
    return load_settings(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{n}.",
        worker_id=f"worker-t{n}",
        data_dir=str(tmp_path / "data"),
        partitions=4,
    )
