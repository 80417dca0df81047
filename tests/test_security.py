"""Hardening (docs/security.md): nothing loaded from disk runs code or escapes the registry, signed versions,
TLS on the scorer, Kafka security settings reaching every client library, one id rule, one-line CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamrank.broker import free_port
from streamrank.cli import main as streamrank_main
from streamrank.config import Settings, load_settings
from streamrank.events.validate import BAD_ID, InvalidEvent, check_event
from streamrank.registry.store import MANIFEST, Registry, RegistryError, key_id, read_signing_keys
from streamrank.serve.tls import TLSConfigError, channel_credentials, server_credentials
from streamrank.topics import ensure_topics
from streamrank.v1 import events_pb2

MARKER = Path("/tmp/streamrank-security-test-pwned")


class _Payload:
    """Unpickling this runs `touch MARKER`: what a planted checkpoint would do."""

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {MARKER}",))


def test_a_planted_pickle_checkpoint_is_refused_without_running(broker, tmp_path: Path, capsys) -> None:
    from streamrank.train.checkpoint import CheckpointError
    from streamrank.train.online import OnlineTrainer

    MARKER.unlink(missing_ok=True)
    settings = load_settings(data_dir=str(tmp_path), bootstrap_servers="127.0.0.1:1")
    planted = tmp_path / "trainer" / "din" / "checkpoint.pt"
    planted.parent.mkdir(parents=True)
    torch.save({"offsets": {}, "evil": _Payload()}, planted)
    with pytest.raises(CheckpointError, match=r"not a plain-data checkpoint .*posix.system"):
        OnlineTrainer(settings, "din")
    assert streamrank_main(["train", "--model", "din", "--data-dir", str(tmp_path),
                            "--bootstrap-servers", broker.bootstrap_servers]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train: ") and "Traceback" not in err[0]
    assert not MARKER.exists()  # the payload never ran


def _published(tmp_path: Path, keys: tuple[bytes, ...] = ()) -> tuple[Registry, int]:
    registry = Registry(tmp_path / "registry", "m", keys)
    info = registry.publish({"model.pt": b"weights", "spec.json": b"{}"}, {"note": "x"})
    return registry, info.version


def _rewrite_manifest(registry: Registry, version: int, edit) -> None:
    path = registry.versions_dir / f"v{version:08d}" / MANIFEST
    manifest = json.loads(path.read_bytes())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_a_manifest_naming_a_file_outside_its_version_is_refused_at_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    registry, version = _published(tmp_path)
    import hashlib

    entry = {"sha256": hashlib.sha256(b"secret").hexdigest(), "size": 6}
    for name in ("../../../../outside.txt", "/etc/hostname", ".hidden", "a/b"):
        _rewrite_manifest(registry, version, lambda m, n=name: m["files"].update({n: entry}))
        with pytest.raises(RegistryError, match="invalid file name"):
            registry.read(version)
        with pytest.raises(RegistryError, match="invalid file name"):
            registry.info(version)
        _rewrite_manifest(registry, version, lambda m, n=name: m["files"].pop(n))
    assert registry.read(version)[1]["model.pt"] == b"weights"  # the clean manifest reads again
    good = registry.info(version)
    with pytest.raises(RegistryError, match="invalid file name"):  # a VersionInfo made by hand is confined too
        registry.verify(replace(good, files={**good.files, "../../outside.txt": entry}))
    with pytest.raises(RegistryError, match="invalid model name"):
        Registry(tmp_path / "registry", "../x")
    with pytest.raises(RegistryError, match="invalid file name"):
        registry.publish({"../escape": b"x"}, {})


def test_signed_versions_verify_tampered_or_unsigned_ones_are_refused_and_keys_rotate(tmp_path: Path) -> None:
    old, new = b"o" * 40, b"n" * 40
    registry, version = _published(tmp_path, (old,))
    assert registry.read(version)[1]["model.pt"] == b"weights"
    # Weights replaced and the manifest re-hashed, as someone who can write the registry but has no key would.
    import hashlib

    vdir = registry.versions_dir / f"v{version:08d}"
    (vdir / "model.pt").write_bytes(b"evil")
    _rewrite_manifest(registry, version, lambda m: m["files"]["model.pt"].update(
        {"sha256": hashlib.sha256(b"evil").hexdigest(), "size": 4}))
    assert Registry(tmp_path / "registry", "m").read(version)[1]["model.pt"] == b"evil"  # checksums alone: served
    with pytest.raises(RegistryError, match="signature does not verify"):
        registry.read(version)
    unsigned = Registry(tmp_path / "registry", "m").publish({"model.pt": b"w2"}, {}).version
    with pytest.raises(RegistryError, match="not signed"):
        registry.read(unsigned)
    # Rotation: the key file lists the new key first (it signs) and the old one after it (it still verifies).
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"{new.decode()}\n{old.decode()}\n")
    keys = read_signing_keys(str(keyfile))
    signed_old = Registry(tmp_path / "registry", "m", (old,)).publish({"model.pt": b"w3"}, {}).version
    rotated = Registry(tmp_path / "registry", "m", keys)
    assert rotated.read(signed_old)[1]["model.pt"] == b"w3"
    signed_new = rotated.publish({"model.pt": b"w4"}, {}).version
    assert f":{key_id(new)}:" in (rotated.versions_dir / f"v{signed_new:08d}" / "MANIFEST.sig").read_text()
    with pytest.raises(RegistryError, match="signature does not verify"):
        Registry(tmp_path / "registry", "m", (old,)).read(signed_new)  # the old key alone no longer suffices
    keyfile.write_text("short\n")
    with pytest.raises(RegistryError, match="shorter than 32"):
        read_signing_keys(str(keyfile))


def test_the_scorer_serves_only_signed_versions_when_keys_are_set(tmp_path: Path) -> None:
    from streamrank.serve.models import ModelWatcher
    from tests.servetools import trained_files

    key = b"k" * 40
    settings = load_settings(data_dir=str(tmp_path))
    files = trained_files(settings, "din", n=256)
    Registry(settings.registry_root(), "din").publish(files, {})  # unsigned
    watcher = ModelWatcher(str(settings.registry_root()), ["din"], None, 1.0, signing_keys=(key,))
    assert watcher.refresh() == [] and "not signed" in watcher.failed["din"][1]
    Registry(settings.registry_root(), "din", (key,)).publish(files, {})
    assert watcher.refresh() == ["din"] and watcher.rankers["din"].version == 2


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def _health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_a_tls_scorer_answers_tls_clients_only_and_can_require_client_certificates(
        settings: Settings, tmp_path: Path) -> None:
    from tests.servetools import running_scorer

    cert, key = _certificate(tmp_path, "server")
    client_cert, client_key = _certificate(tmp_path, "client")
    base = settings.with_overrides(serve_port=0, serve_metrics_port=free_port(), serve_models="", serve_retrieval="",
                                   serve_tls_cert_file=str(cert), serve_tls_key_file=str(key))
    ensure_topics(base)  # the replica reads them before the scorer says it is ready
    with running_scorer(base) as st:
        target = f"127.0.0.1:{st.port}"
        assert _health(grpc.secure_channel(target, channel_credentials(str(cert)))) == \
            health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as plain:
            _health(grpc.insecure_channel(target))
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
        metrics = f"https://localhost:{base.serve_metrics_port}/metrics"  # the metrics endpoint: HTTPS too
        with urllib.request.urlopen(metrics, context=ssl.create_default_context(cafile=str(cert)), timeout=5) as r:
            assert b"streamrank_" in r.read()
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(metrics.replace("https", "http"), timeout=5).read()
    mutual = base.with_overrides(serve_tls_client_ca_file=str(client_cert))
    with running_scorer(mutual) as st:
        target = f"127.0.0.1:{st.port}"
        with pytest.raises(grpc.RpcError):
            _health(grpc.secure_channel(target, channel_credentials(str(cert))))  # no client certificate
        with_cert = channel_credentials(str(cert), str(client_cert), str(client_key))
        assert _health(grpc.secure_channel(target, with_cert)) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(TLSConfigError, match="both"):
        server_credentials(base.with_overrides(serve_tls_key_file=""))
    with pytest.raises(TLSConfigError, match="cannot read"):
        server_credentials(base.with_overrides(serve_tls_cert_file=str(tmp_path / "missing.pem")))


def test_kafka_sasl_ssl_settings_build_clients_of_every_library(tmp_path: Path) -> None:
    """The embedded broker has no TLS or SASL: this checks the plumbing (each library accepts the options and
    builds its client), not a handshake."""
    from confluent_kafka import Consumer
    from kafka import KafkaProducer

    from streamrank import kafka_security

    cert, _ = _certificate(tmp_path, "ca")
    s = load_settings(bootstrap_servers="127.0.0.1:1", kafka_security_protocol="SASL_SSL",
                      kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="u", kafka_sasl_password="p",
                      kafka_ssl_cafile=str(cert))
    rd = kafka_security.librdkafka(s)
    assert rd["security.protocol"] == "SASL_SSL" and rd["ssl.ca.location"] == str(cert)
    Consumer({"bootstrap.servers": s.bootstrap_servers, "group.id": "g", **rd}).close()
    assert set(kafka_security.kafka_python(s)) <= set(KafkaProducer.DEFAULT_CONFIG)
    aio = kafka_security.aiokafka(s)
    assert aio["sasl_mechanism"] == "SCRAM-SHA-512" and aio["ssl_context"] is not None
    creds = kafka_security.faust_credentials(s)
    assert type(creds).__name__ == "SASLCredentials"
    assert kafka_security.kafka_python(load_settings()) == {} and kafka_security.faust_credentials(load_settings()) \
        is None
    for bad, message in (({"kafka_security_protocol": "TLS"}, "not one of"),
                         ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_sasl_mechanism"),
                         ({"kafka_sasl_username": "u"}, "SASL settings are set")):
        with pytest.raises(kafka_security.KafkaSecurityError, match=message):
            kafka_security.check(load_settings(**bad))


def test_worker_and_scorer_share_one_id_rule() -> None:
    from streamrank.serve.requests import InvalidRequest, Limits, validate_rank
    from streamrank.v1 import ranking_pb2

    settings = load_settings()
    for bad in ("a\x01", "it\x1b[31m", "x\x7f"):
        event = events_pb2.Event(event_id="e", user_id=bad, item_id="i", type=events_pb2.CLICK, ts_ms=1_000)
        with pytest.raises(InvalidEvent) as refused:
            check_event(event, settings)
        assert refused.value.reason == BAD_ID
        with pytest.raises(InvalidRequest, match="control characters"):
            validate_rank(ranking_pb2.RankRequest(user_id=bad), Limits.from_settings(settings))
    priced = events_pb2.Event(event_id="e", user_id="u", item_id="i", type=events_pb2.CLICK, ts_ms=1_000,
                              item=events_pb2.ItemAttributes(price=1e308))
    with pytest.raises(InvalidEvent, match="price"):
        check_event(priced, settings)


def test_a_bad_model_name_is_one_line(tmp_path: Path, capsys) -> None:
    assert streamrank_main(["registry", "list", "--model", "../x", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["registry: invalid model name '../x': letters, digits and ._- only, not starting with a dot"]
