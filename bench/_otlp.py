"""An OTLP/gRPC trace receiver inside the bench: the server under `--tracing` exports to it.

It only counts what arrives (the protobuf parse is in C), standing in for a collector so the
measured cost is the server's own: building spans, batching, encoding and sending them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class SpanCounter(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0
        self.endpoint = ""

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests += 1
        self.spans += sum(len(ss.spans) for rs in request.resource_spans
                          for ss in rs.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[SpanCounter]:
    """A receiver on 127.0.0.1 (a free port), served by this process's event loop."""
    counter = SpanCounter()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counter, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    counter.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield counter
    finally:
        await server.stop(1)
