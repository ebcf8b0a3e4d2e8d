"""gRPC EventService: SendEvents and the client-streaming bulk variant."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from plait_proto.v1 import event_pb2, event_pb2_grpc

from server.errors import InvalidArgument, PlaitError, grpc_status
from server.events.ingest import EventIngest, EventInput


def _inputs(events: object, offset: int = 0) -> list[EventInput]:
    return [
        EventInput(name=e.name, data_json=e.data_json, ts_ms=e.ts_ms,
                   idempotency_key=e.idempotency_key)
        for e in events  # type: ignore[attr-defined]
    ]


def _traceparent(context: grpc.aio.ServicerContext[object, object]) -> str:
    """The W3C `traceparent` the call carried in its metadata, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent":
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


class EventServicer(event_pb2_grpc.EventServiceServicer):
    def __init__(self, ingest: EventIngest) -> None:
        self._ingest = ingest

    async def SendEvents(
        self, request: event_pb2.SendEventsRequest,
        context: grpc.aio.ServicerContext[event_pb2.SendEventsRequest,
                                          event_pb2.SendEventsResponse],
    ) -> event_pb2.SendEventsResponse:
        try:
            ids = await self._ingest.accept(_inputs(request.events), _traceparent(context))
        except PlaitError as e:
            await context.abort(grpc_status(e), e.message)
        return event_pb2.SendEventsResponse(ids=ids)

    async def StreamEvents(
        self, request_iterator: AsyncIterator[event_pb2.StreamEventsRequest],
        context: grpc.aio.ServicerContext[event_pb2.StreamEventsRequest,
                                          event_pb2.StreamEventsResponse],
    ) -> event_pb2.StreamEventsResponse:
        ids: list[str] = []
        try:
            n = 0
            async for msg in request_iterator:
                if not msg.events:
                    raise InvalidArgument(f"messages[{n}].events", "must not be empty")
                ids.extend(await self._ingest.accept(_inputs(msg.events), _traceparent(context)))
                n += 1
        except PlaitError as e:
            await context.abort(grpc_status(e), f"{e.message} ({len(ids)} events accepted)")
        return event_pb2.StreamEventsResponse(ids=ids)
