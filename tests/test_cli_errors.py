"""Ordinary mistakes give one line and exit code 2 (1 for "nothing there"), never a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from streamrank.cli import main
from streamrank.config import load_settings
from streamrank.data.eventlog import write_events
from streamrank.v1 import events_pb2


def _one_line(capsys, code: int, got: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert got == code, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_settings_mistakes(tmp_path: Path, capsys, monkeypatch) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("partitions = [\n")
    assert "is not valid TOML" in _one_line(capsys, 2, main(["--config", str(bad), "state"]))
    assert "config file not found" in _one_line(capsys, 2, main(["state", "--config", str(tmp_path / "no.toml")]))
    good = tmp_path / "good.toml"
    good.write_text(f'data_dir = "{tmp_path / "var"}"\n')
    # --config after the subcommand is accepted (and used: the registry is looked up under its data_dir)
    line = _one_line(capsys, 1, main(["registry", "list", "--model", "nosuch", "--config", str(good)]))
    assert line == f"nosuch: no versions in {tmp_path / 'var' / 'registry'}"
    assert not (tmp_path / "var").exists()  # looking created nothing
    monkeypatch.setenv("STREAMRANK_PARTITON", "3")
    line = _one_line(capsys, 2, main(["state"]))
    assert line == "error: unknown environment variable STREAMRANK_PARTITON; did you mean STREAMRANK_PARTITIONS?"
    monkeypatch.delenv("STREAMRANK_PARTITON")
    monkeypatch.setenv("STREAMRANK_PARTITIONS", "many")
    assert "(from STREAMRANK_PARTITIONS)" in _one_line(capsys, 2, main(["state"]))
    monkeypatch.delenv("STREAMRANK_PARTITIONS")
    bad.write_text("partitions = 'many'\n")
    assert f"(from {bad})" in _one_line(capsys, 2, main(["state", "--config", str(bad)]))


@pytest.mark.parametrize("command", [["produce", "movielens:ml-100k"], ["train", "--model", "din"],
                                     ["serve", "--models", "din"], ["worker"]])
def test_an_unreachable_broker_is_one_line_within_seconds(command: list[str], capsys) -> None:
    line = _one_line(capsys, 2, main([*command, "--bootstrap-servers", "127.0.0.1:1"]))
    assert line.startswith("error: cannot reach Kafka at 127.0.0.1:1 within 3 s")


def test_bad_files_and_directories(broker, tmp_path: Path, capsys) -> None:
    kafka = ["--bootstrap-servers", broker.bootstrap_servers, "--data-dir", str(tmp_path / "var")]
    line = _one_line(capsys, 2, main(["produce", str(tmp_path / "missing.csv"), *kafka]))
    assert line.startswith("produce: no such event log")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("event_id,usr_id,item_id,type,ts_ms\ne1,u,i,click,1000\n")
    assert "usr_id: unknown column" in _one_line(capsys, 2, main(["produce", str(wrong), *kafka]))
    wrong.write_text("event_id,user_id,item_id,type,ts_ms\ne1,u,i,click,yesterday\n")
    assert "ts_ms" in _one_line(capsys, 2, main(["produce", str(wrong), *kafka]))
    bad_event = tmp_path / "bad.jsonl"
    write_events(bad_event, [events_pb2.Event(event_id="e1", user_id="u", item_id="i", type=events_pb2.CLICK,
                                              ts_ms=-5)])
    line = _one_line(capsys, 2, main(["produce", str(bad_event), "--as-is", "--strict", "--quiet", *kafka]))
    assert line.startswith("error: invalid message e1: bad_timestamp")
    line = _one_line(capsys, 2, main(["index", "build", "--model-dir", str(tmp_path / "nope"), "--catalog",
                                      "movielens:ml-100k", "--data-dir", str(tmp_path / "var")]))
    assert "not a retrieval model artefact" in line


def test_serve_warns_about_a_model_with_no_versions(broker, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "streamrank.cli", "serve", "--models", "dinn", "--port", "0",
                             "--metrics-port", "0", "--bootstrap-servers", broker.bootstrap_servers,
                             "--data-dir", str(tmp_path)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        while proc.stderr is not None and len(lines) < 20:  # log lines (topics created...) may come first
            lines.append(proc.stderr.readline())
            if lines[-1].startswith("warning: ") or not lines[-1]:
                break
    finally:
        proc.terminate()
        proc.wait(30)
    assert any(x.startswith("warning: dinn has no published version") for x in lines), lines


def test_a_second_scorer_on_a_busy_port_fails_to_start(tmp_path: Path) -> None:
    from streamrank.serve.server import Scorer

    async def run() -> str:
        other = grpc.aio.server()  # gRPC's default: SO_REUSEPORT, which would let a second server share it
        port = other.add_insecure_port("127.0.0.1:0")
        await other.start()
        settings = load_settings(serve_port=port, serve_metrics_port=0, serve_models="", serve_retrieval="",
                                 bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path))
        scorer = Scorer(settings)
        scorer.replica.start = lambda: None  # type: ignore[method-assign]  # the port is what is tested here
        try:
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}") as refused:
                await scorer.start()
            return str(refused.value)
        finally:
            await other.stop(0)
            scorer.replica.close()

    assert "another scorer" in asyncio.run(run())


@pytest.mark.parametrize("busy", ["--port", "--metrics-port"])
def test_serve_on_a_busy_port_is_one_line_naming_it(broker, tmp_path: Path, busy: str) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ports = {"--port": "0", "--metrics-port": "0", busy: str(port)}
        done = subprocess.run([sys.executable, "-m", "streamrank.cli", "serve", "--models", "din",
                               *[x for kv in ports.items() for x in kv],
                               "--bootstrap-servers", broker.bootstrap_servers, "--data-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0], done.stderr


def test_help_and_version(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("streamrank ")
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])  # reaches the simulator's own parser, which lists its commands
    assert "{online,replay,shoplog,ab-check}" in capsys.readouterr().out


def _tansu_on(port: int) -> list[int]:
    """Pids of tansu processes listening on this port (from /proc: no psutil here)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"tansu") and f"tcp://127.0.0.1:{port}".encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _broker_process(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "streamrank.cli", "broker", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and "listening" in proc.stdout.readline()
    return proc


@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
def test_the_broker_takes_tansu_with_it_and_refuses_a_busy_port(how: str) -> None:
    import signal
    import time

    from streamrank.broker import free_port

    port = free_port()
    proc = _broker_process(port)
    try:
        assert _tansu_on(port)
        second = subprocess.run([sys.executable, "-m", "streamrank.cli", "broker", "--port", str(port)],
                                capture_output=True, text=True, timeout=60)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert lines[0].startswith(f"error: cannot start the embedded broker on 127.0.0.1:{port}")
        proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 10
        while _tansu_on(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _tansu_on(port)  # no tansu left holding the port
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _tansu_on(port):
            os.kill(pid, signal.SIGKILL)
