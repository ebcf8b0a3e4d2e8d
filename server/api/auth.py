"""gRPC authentication: a bearer token on every call when tokens are configured."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc


def _deny(kind: str) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "authorization: a valid 'Bearer <token>' is required")

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "authorization: a valid 'Bearer <token>' is required")
        yield  # pragma: no cover - makes this an async generator for streaming responses

    if kind == "unary_unary":
        return grpc.unary_unary_rpc_method_handler(unary)
    if kind == "stream_unary":
        return grpc.stream_unary_rpc_method_handler(unary)
    if kind == "unary_stream":
        return grpc.unary_stream_rpc_method_handler(streaming)
    return grpc.stream_stream_rpc_method_handler(streaming)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rejects calls whose `authorization` metadata is not `Bearer <one of the tokens>`."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [t.encode() for t in tokens if t]

    def _allowed(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        for key, value in metadata or ():
            if key.lower() != "authorization":
                continue
            raw = value if isinstance(value, bytes) else value.encode()
            scheme, _, token = raw.partition(b" ")
            if scheme.lower() == b"bearer":
                return any(hmac.compare_digest(token.strip(), t) for t in self._tokens)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or self._allowed(handler_call_details.invocation_metadata):
            return handler
        if handler.request_streaming and handler.response_streaming:
            return _deny("stream_stream")
        if handler.request_streaming:
            return _deny("stream_unary")
        if handler.response_streaming:
            return _deny("unary_stream")
        return _deny("unary_unary")
