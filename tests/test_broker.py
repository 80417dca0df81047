"""The embedded broker's lifecycle: loopback only, a real process that stop() ends, broker_for's two modes."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import kafka
import pytest

from streamrank import broker as broker_mod
from streamrank.broker import BrokerError, EmbeddedBroker, broker_for, wait_until_ready


def accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def listening_addresses(port: int) -> set[str] | None:
    """Local addresses with a listening TCP socket on port (Linux /proc), None where /proc is not there."""
    found: set[str] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        path = Path(table)
        if not path.exists():
            if not v6:
                return None
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            addr, port_hex = cols[1].split(":")
            if cols[3] == "0A" and int(port_hex, 16) == port:
                found.add(f"v6:{addr}" if v6 else socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def split(servers: str) -> tuple[str, int]:
    host, port = servers.rsplit(":", 1)
    return host, int(port)


class _Down:
    """Stands in for kafka.KafkaAdminClient when no broker answers; records the configs it was given."""

    calls: list[dict] = []

    def __init__(self, **configs: object) -> None:
        type(self).calls.append(configs)
        raise kafka.errors.KafkaConnectionError("no broker (test double)")


@pytest.fixture
def no_broker_answers(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    monkeypatch.setattr(_Down, "calls", calls)
    monkeypatch.setattr(kafka, "KafkaAdminClient", _Down)
    return calls


# --- a real tansu process ----------------------------------------------------------------------------
def test_starts_on_loopback_and_stop_terminates_the_process(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "broker.log"
    broker = EmbeddedBroker(log_path=log)
    try:
        assert broker.start(timeout_s=30) is broker
        host, port = split(broker.bootstrap_servers)
        assert (host, port) == ("127.0.0.1", broker.port)
        proc = broker._proc
        assert proc is not None and proc.poll() is None
        assert accepts(host, port)
        listening = listening_addresses(port)
        if listening is not None:
            assert listening == {"127.0.0.1"}, "the broker listens on loopback only"
        assert broker.start() is broker and broker._proc is proc, "start() twice does not spawn a second broker"
        assert log.exists()
    finally:
        broker.stop()
    assert proc.poll() is not None, "stop() waits for the process to exit"
    assert not accepts(host, port)
    broker.stop()  # a second stop is harmless


def test_context_manager_stops_the_broker() -> None:
    with EmbeddedBroker() as broker:
        host, port = split(broker.bootstrap_servers)
        proc = broker._proc
        assert accepts(host, port)
    assert proc is not None and proc.poll() is not None
    assert not accepts(host, port)


def test_broker_for_empty_servers_starts_an_embedded_broker() -> None:
    with broker_for("") as servers:
        host, port = split(servers)
        assert host == "127.0.0.1"
        assert accepts(host, port)
    assert not accepts(host, port), "the embedded broker is stopped when the block ends"


# --- no process --------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "", "::"])
def test_refuses_a_non_loopback_host(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_spawn(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be started")

    monkeypatch.setattr(broker_mod.subprocess, "Popen", no_spawn)
    with pytest.raises(BrokerError, match="loopback"):
        EmbeddedBroker(port=19092, host=host)


def test_localhost_is_accepted() -> None:
    broker = EmbeddedBroker(host="localhost")
    assert broker.bootstrap_servers == f"localhost:{broker.port}"
    assert broker.port > 0
    assert broker._proc is None, "constructing does not start anything"


def test_broker_for_configured_servers_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    class Forbidden:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("no embedded broker may be started")

    monkeypatch.setattr(broker_mod, "EmbeddedBroker", Forbidden)
    monkeypatch.setattr(broker_mod.subprocess, "Popen", Forbidden)
    with broker_for("host:1") as servers:
        assert servers == "host:1"
    with broker_for("a:1,b:2") as servers:
        assert servers == "a:1,b:2"


def test_wait_until_ready_gives_up_after_its_timeout(no_broker_answers: list[dict]) -> None:
    start = time.monotonic()
    with pytest.raises(BrokerError, match="did not answer"):
        wait_until_ready("127.0.0.1:1", timeout_s=0.5)
    assert 0.5 <= time.monotonic() - start < 5
    assert len(no_broker_answers) >= 2, "it retries until the deadline"
    assert all(c["bootstrap_servers"] == "127.0.0.1:1" for c in no_broker_answers)


def test_failed_start_stops_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        no_broker_answers: list[dict]) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))
    spawned: list[subprocess.Popen] = []

    class Recording(subprocess.Popen):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            spawned.append(self)

    monkeypatch.setattr(broker_mod.subprocess, "Popen", Recording)
    broker = EmbeddedBroker()
    with pytest.raises(BrokerError):
        broker.start(timeout_s=0.3)
    assert len(spawned) == 1
    assert spawned[0].poll() is not None, "a broker that never answered is not left running"
    assert broker._proc is None


def test_missing_tansu_binary_is_a_broker_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "nope"))
    with pytest.raises(BrokerError, match="not found"):
        broker_mod.tansu_binary()


# --- bounded waits and loopback only ---------------------------------------------------------------
def test_each_connection_attempt_is_bounded_by_the_timeout(no_broker_answers: list[dict]) -> None:
    default_ms = kafka.admin.KafkaAdminClient.DEFAULT_CONFIG["bootstrap_timeout_ms"]
    with pytest.raises(BrokerError):
        wait_until_ready("127.0.0.1:1", timeout_s=0.5)
    for configs in no_broker_answers:
        assert configs.get("bootstrap_timeout_ms", default_ms) <= 500


@pytest.mark.parametrize("host", ["::1", "0.0.0.0", "10.0.0.1"])
def test_only_ipv4_loopback_is_accepted(host: str) -> None:
    with pytest.raises(BrokerError, match="loopback"):
        EmbeddedBroker(host=host)
