"""TLS for both ports from --tls-cert, --tls-key and --tls-client-ca (mutual TLS when given)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc

from server.config import Settings
from server.errors import ConfigError


def _read(flag: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{flag} has value {path!r}: cannot read it ({e.strerror})") from None


def grpc_server_credentials(s: Settings) -> grpc.ServerCredentials | None:
    """Credentials for the gRPC port, or None to serve plain text."""
    if not s.tls_cert:
        return None
    key, chain = _read("--tls-key", s.tls_key), _read("--tls-cert", s.tls_cert)
    ca = _read("--tls-client-ca", s.tls_client_ca) if s.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca,
                                       require_client_auth=ca is not None)


def uvicorn_tls(s: Settings) -> dict[str, Any]:
    """uvicorn.Config arguments for the HTTP port ({} to serve plain text)."""
    if not s.tls_cert:
        return {}
    for flag, path in (("--tls-cert", s.tls_cert), ("--tls-key", s.tls_key),
                       ("--tls-client-ca", s.tls_client_ca)):
        if path:
            _read(flag, path)  # a clear error naming the flag, not uvicorn's traceback
    tls: dict[str, Any] = {"ssl_certfile": s.tls_cert, "ssl_keyfile": s.tls_key}
    if s.tls_client_ca:
        tls |= {"ssl_ca_certs": s.tls_client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return tls
