"""Sending encoded OTLP requests: gRPC (TraceService/Export) or HTTP (POST /v1/traces).

Blocking calls, made from the export thread only. A failure the collector may recover from
is retried with backoff; a request that still fails is dropped and logged, never retried for
ever (spans are also in the database).
"""

from __future__ import annotations

import gzip
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Protocol

import grpc
import structlog

__all__ = ["GrpcTransport", "HttpTransport", "Transport"]

EXPORT_FAILED = "otlp.export_failed"
_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_RETRY_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE,
                grpc.StatusCode.DATA_LOSS}
_RETRY_HTTP = {408, 429, 502, 503, 504}
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)

_log = structlog.get_logger(__name__)


class Transport(Protocol):
    def send(self, body: bytes, stopping: threading.Event) -> bool:
        """Delivers one ExportTraceServiceRequest; False when it was given up."""
        ...

    def close(self) -> None: ...


def _retrying(attempt: int, stopping: threading.Event) -> bool:
    """Waits before the next try; False when there is none (out of tries, or shutting down)."""
    if attempt >= len(_BACKOFF_S) or stopping.is_set():
        return False
    return not stopping.wait(_BACKOFF_S[attempt])


class GrpcTransport:
    def __init__(self, endpoint: str, insecure: bool, headers: Mapping[str, str],
                 timeout_s: float, gzip_body: bool) -> None:
        target = endpoint.split("://", 1)[1] if "://" in endpoint else endpoint
        target = target.rstrip("/")
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        compression = grpc.Compression.Gzip if gzip_body else grpc.Compression.NoCompression
        if insecure:
            self._channel = grpc.insecure_channel(target, options, compression)
        else:
            self._channel = grpc.secure_channel(
                target, grpc.ssl_channel_credentials(), options, compression)
        # No serializers: the request is already protobuf bytes.
        self._export = self._channel.unary_unary(_METHOD)
        self._metadata = [(k.lower(), v) for k, v in headers.items()]
        self._timeout_s = timeout_s
        self.endpoint = endpoint

    def send(self, body: bytes, stopping: threading.Event) -> bool:
        attempt = 0
        while True:
            try:
                self._export(body, timeout=self._timeout_s, metadata=self._metadata)
                return True
            except grpc.RpcError as e:
                code = e.code() if isinstance(e, grpc.Call) else None
                if code not in _RETRY_CODES or not _retrying(attempt, stopping):
                    _log.warning(EXPORT_FAILED, endpoint=self.endpoint,
                                 error=str(code), attempts=attempt + 1)
                    return False
            attempt += 1

    def close(self) -> None:
        self._channel.close()


class HttpTransport:
    def __init__(self, endpoint: str, headers: Mapping[str, str], timeout_s: float,
                 gzip_body: bool) -> None:
        self.endpoint = endpoint
        self._headers = {**headers, "Content-Type": "application/x-protobuf"}
        if gzip_body:
            self._headers["Content-Encoding"] = "gzip"
        self._gzip = gzip_body
        self._timeout_s = timeout_s

    def send(self, body: bytes, stopping: threading.Event) -> bool:
        data = gzip.compress(body) if self._gzip else body
        attempt = 0
        while True:
            request = urllib.request.Request(
                self.endpoint, data=data, headers=self._headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as reply:
                    reply.read()
                return True
            except urllib.error.HTTPError as e:
                retry, reason = e.code in _RETRY_HTTP, f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                retry, reason = True, repr(e)
            if not retry or not _retrying(attempt, stopping):
                _log.warning(EXPORT_FAILED, endpoint=self.endpoint, error=reason,
                             attempts=attempt + 1)
                return False
            attempt += 1

    def close(self) -> None:
        pass
