"""gRPC authentication and token scopes: a bearer token on every call when tokens are configured.

A worker token (`--grpc-tokens`) may connect workers (QueueService), send events (EventService)
and read run state (StateService); an admin token (`--admin-tokens`) may do all that and call
ManagementService. A worker token written `token@app1|app2` may register only those apps and
read only their runs' state. Without the right: PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

_MANAGEMENT = "/plait.v1.ManagementService/"
_CONNECT = "/plait.v1.QueueService/Connect"
_RUN_STATE = "/plait.v1.StateService/GetRunState"
_GET_STEPS = "/plait.v1.StateService/GetSteps"
# As long as the worker stream itself waits for its register message.
_REGISTER_TIMEOUT_S = 10.0
_NEEDS_TOKEN = "authorization: a valid 'Bearer <token>' is required"

Metadata = Sequence[tuple[str, str | bytes]] | None
# The app id of a registered function id, or None when it is unknown.
AppOf = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Grant:
    """What one token may do: manage (admin), and serve which apps (None: any)."""

    admin: bool
    apps: frozenset[str] | None

    def serves(self, app_id: str) -> bool:
        return self.apps is None or app_id in self.apps

    async def owns_function(self, function_id: str, app_of: AppOf | None) -> bool:
        if self.apps is None:
            return True
        if app_of is not None:
            return await app_of(function_id) in self.apps
        # Without the registry, the prefix of the global id "{app_id}-{slug}" decides.
        return any(function_id.startswith(f"{a}-") for a in self.apps)


def parse_worker_token(entry: str) -> tuple[str, frozenset[str] | None]:
    """`token` or `token@app1|app2` -> (token, apps or None for any app)."""
    token, at, apps = entry.partition("@")
    if not at:
        return token.strip(), None
    return token.strip(), frozenset(a.strip() for a in apps.split("|") if a.strip())


class Tokens:
    """The configured tokens and what each grants; compared in constant time."""

    def __init__(self, worker: Sequence[str], admin: Sequence[str]) -> None:
        grants: list[tuple[bytes, Grant]] = []
        for entry in worker:
            token, apps = parse_worker_token(entry)
            if token:
                grants.append((token.encode(), Grant(admin=False, apps=apps)))
        grants += [(t.strip().encode(), Grant(admin=True, apps=None)) for t in admin if t.strip()]
        self._grants = grants

    def __bool__(self) -> bool:
        return bool(self._grants)

    def grant(self, token: bytes) -> Grant | None:
        found: Grant | None = None
        for known, grant in self._grants:
            # Every entry is compared, so the time taken does not say which one matched.
            if hmac.compare_digest(token, known) and (found is None or grant.admin):
                found = grant
        return found

    def grant_of(self, metadata: Metadata) -> Grant | None:
        """The grant of the call's `authorization: Bearer <token>`, or None."""
        for key, value in metadata or ():
            if key.lower() != "authorization":
                continue
            raw = value if isinstance(value, bytes) else value.encode()
            scheme, _, token = raw.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return self.grant(token.strip())
            return None
        return None


def bearer_token_matches(authorization: str | None, tokens: Sequence[str]) -> bool:
    """Whether an HTTP `Authorization: Bearer <token>` header carries one of `tokens`."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given = token.strip().encode()
    matched = False
    for known in tokens:
        if known and hmac.compare_digest(given, known.encode()):
            matched = True
    return matched


def _deny(handler: grpc.RpcMethodHandler, code: grpc.StatusCode,
          message: str) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator for streaming responses

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming)
    return grpc.unary_unary_rpc_method_handler(unary)


def _connect_for(handler: grpc.RpcMethodHandler, grant: Grant) -> grpc.RpcMethodHandler:
    """The worker stream, refused before it registers an app the token may not serve."""
    inner = handler.stream_stream

    async def connect(requests: AsyncIterator[Any],
                      context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async with asyncio.timeout(_REGISTER_TIMEOUT_S):
                first = await anext(requests)
        except (TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "register: the first message must be register")
        if first.WhichOneof("message") == "register" and not grant.serves(first.register.app_id):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"register.app_id: this token may not serve app {first.register.app_id!r}")

        async def replayed() -> AsyncIterator[Any]:
            yield first
            async for request in requests:
                yield request

        async for response in inner(replayed(), context):
            yield response

    return grpc.stream_stream_rpc_method_handler(
        connect, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


def _run_state_for(handler: grpc.RpcMethodHandler, grant: Grant,
                   app_of: AppOf | None) -> grpc.RpcMethodHandler:
    """Run state, answered only for runs of the token's apps."""
    inner = handler.unary_unary

    async def get(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        reply = await inner(request, context)
        if not await grant.owns_function(reply.function_id, app_of):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"run_id: run {request.run_id!r} belongs to an app this token "
                                "may not serve")
        return reply

    return grpc.unary_unary_rpc_method_handler(
        get, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """UNAUTHENTICATED without `Bearer <known token>`; PERMISSION_DENIED beyond its scope."""

    def __init__(self, tokens: Sequence[str], admin_tokens: Sequence[str] = (),
                 app_of: AppOf | None = None) -> None:
        """`app_of` finds a function's app (the registry); it decides which runs' state a
        token limited to apps may read."""
        self._tokens = Tokens(tokens, admin_tokens)
        self._app_of = app_of

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        grant = self._tokens.grant_of(handler_call_details.invocation_metadata)
        if grant is None:
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED, _NEEDS_TOKEN)
        method = handler_call_details.method
        if method.startswith(_MANAGEMENT) and not grant.admin:
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED,
                         "authorization: ManagementService calls need an admin token "
                         "(--admin-tokens); this is a worker token")
        if grant.apps is None:
            return handler
        if method == _CONNECT:
            return _connect_for(handler, grant)
        if method in (_RUN_STATE, _GET_STEPS):
            return _run_state_for(handler, grant, self._app_of)
        return handler
