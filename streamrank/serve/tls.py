"""TLS for the scorer's gRPC port (and its clients): credentials from PEM files named in the settings.

Plaintext stays the default (loopback, tests). With `serve_tls_cert_file` and `serve_tls_key_file` the
server listens with TLS only (a plaintext client cannot talk to it); with `serve_tls_client_ca_file` as well,
every client must present a certificate that CA signed. Clients trust `serve_tls_ca_file` (the CA, or the
self-signed certificate, of the server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc


class TLSConfigError(ValueError):
    """A TLS setting names a file that cannot be read, or only half of a certificate/key pair."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def server_credentials(settings: Any) -> grpc.ServerCredentials | None:
    """The gRPC server's TLS credentials, or None for plaintext (no certificate configured)."""
    cert, key, client_ca = settings.serve_tls_cert_file, settings.serve_tls_key_file, settings.serve_tls_client_ca_file
    if not cert and not key:
        if client_ca:
            raise TLSConfigError("serve_tls_client_ca_file needs serve_tls_cert_file and serve_tls_key_file")
        return None
    if not (cert and key):
        raise TLSConfigError("TLS needs both serve_tls_cert_file and serve_tls_key_file")
    pair = [(_read(key, "TLS key"), _read(cert, "TLS certificate"))]
    if client_ca:
        return grpc.ssl_server_credentials(pair, root_certificates=_read(client_ca, "client CA"),
                                           require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def channel_credentials(ca_file: str, cert_file: str = "", key_file: str = "") -> grpc.ChannelCredentials:
    """A client's TLS credentials: trust `ca_file`; present `cert_file`/`key_file` when given (mutual TLS)."""
    if bool(cert_file) != bool(key_file):
        raise TLSConfigError("a client certificate needs its key, and the other way round")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA file"),
        private_key=_read(key_file, "client key") if key_file else None,
        certificate_chain=_read(cert_file, "client certificate") if cert_file else None)


def channel(target: str, ca_file: str = "", cert_file: str = "", key_file: str = "",
            options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A blocking channel to the scorer: TLS when `ca_file` is set, else plaintext."""
    if not ca_file:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, channel_credentials(ca_file, cert_file, key_file), options=options)
