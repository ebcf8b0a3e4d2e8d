"""One error edge for every gRPC servicer: what a handler raises becomes a status, never UNKNOWN.

PlaitError → its status (server/errors.py); storage away (Redis, the database, a socket) →
UNAVAILABLE, which clients retry; anything else → INTERNAL, logged. A unary request whose
top-level string field holds a NUL is refused before the handler runs: PostgreSQL text cannot
store one, and the value would otherwise reach SQL as a database error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from server.errors import PlaitError, grpc_status

log = structlog.get_logger(__name__)

HANDLER_FAILED = "grpc.handler_failed"


def nul_field(message: object) -> str:
    """The name of the first top-level string field holding a NUL character, or ""."""
    if not isinstance(message, Message):
        return ""
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_STRING:
            continue
        values = value if field.is_repeated else (value,)
        if any("\x00" in v for v in values):
            return field.name
    return ""


def _storage_away(error: BaseException) -> bool:
    if isinstance(error, RedisError | OSError | TimeoutError | OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


async def _abort_for(error: Exception, context: grpc.aio.ServicerContext[Any, Any],
                     method: str) -> None:
    if isinstance(error, PlaitError):
        await context.abort(grpc_status(error), error.message)
    if _storage_away(error):
        await context.abort(grpc.StatusCode.UNAVAILABLE,
                            f"storage is unavailable, retry later: {type(error).__name__}")
    log.error(HANDLER_FAILED, method=method, error=repr(error)[:500],
              exc_info=not isinstance(error, SQLAlchemyError))
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__})")


def _unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        field = nul_field(request)
        if field:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{field}: must not contain a NUL character")
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _abort_for(e, context, method)
    return call


def _client_streaming(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Any]:
    async def call(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(requests, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _abort_for(e, context, method)
    return call


def _server_streaming(behavior: Callable[..., AsyncIterator[Any]],
                      method: str) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]
                   ) -> AsyncIterator[Any]:
        try:
            async for item in behavior(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _abort_for(e, context, method)
    return call


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every handler of the server with the one error edge."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, method), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _client_streaming(handler.stream_unary, method), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _server_streaming(handler.unary_stream, method), **kw)
        # The worker stream (QueueService.Connect) maps its own errors, per message, and is
        # the hot path: it is left unwrapped.
        return handler
