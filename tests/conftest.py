"""Shared fixtures: the embedded broker (real tansu on loopback) and per-test settings."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamrank.broker import EmbeddedBroker
from streamrank.config import Settings, load_settings

_prefixes = itertools.count()
_run = uuid.uuid4().hex[:6]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker | SimpleNamespace]:
    """The broker for the whole run: STREAMRANK_BOOTSTRAP_SERVERS when set, else one embedded broker.

    Tests isolate themselves with topic prefixes, so one broker serves them all.
    """
    configured = os.environ.get("STREAMRANK_BOOTSTRAP_SERVERS")
    if configured:
        yield SimpleNamespace(bootstrap_servers=configured)
        return
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings with a fresh topic prefix, worker id and data dir for one test."""
    n = next(_prefixes)
    return load_settings(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{_run}-{n}.",
        worker_id=f"worker-{_run}-{n}",
        data_dir=str(tmp_path / "data"),
        partitions=4,
    )
