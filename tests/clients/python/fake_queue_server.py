"""An in-test QueueService: each worker stream becomes a FakeConnection the test drives by hand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import grpc
from plait_proto.v1 import event_pb2, queue_pb2, queue_pb2_grpc

DEADLINE_S = 5.0


async def eventually(
    predicate: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S
) -> None:
    """Polls `predicate` until it holds, failing with `what` after the deadline."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class FakeConnection:
    """One Connect call as the server sees it."""

    def __init__(self, metadata: dict[str, str]) -> None:
        self.metadata = metadata
        self.heartbeats = 0
        self.closed_by_worker = False
        self._requests: asyncio.Queue[queue_pb2.ConnectRequest | None] = asyncio.Queue()
        self._outgoing: asyncio.Queue[queue_pb2.ConnectResponse | None] = asyncio.Queue()

    async def recv(self) -> queue_pb2.ConnectRequest | None:
        """The next non-heartbeat message, or None when the worker has closed its side."""
        async with asyncio.timeout(DEADLINE_S):
            msg = await self._requests.get()
        return msg

    async def results(self, count: int) -> list[queue_pb2.JobResult]:
        """Reads result messages until `count` results have arrived."""
        found: list[queue_pb2.JobResult] = []
        while len(found) < count:
            msg = await self.recv()
            assert msg is not None, f"stream closed after {len(found)} of {count} results"
            assert msg.WhichOneof("message") == "results", msg
            found.extend(msg.results.results)
        return found

    def send(self, **kind: Any) -> None:
        self._outgoing.put_nowait(queue_pb2.ConnectResponse(**kind))

    async def register(self, heartbeat_interval_ms: int = 60_000) -> queue_pb2.Register:
        msg = await self.recv()
        assert msg is not None and msg.WhichOneof("message") == "register", msg
        ids = [f"{msg.register.app_id}-{f.id}" for f in msg.register.functions]
        self.send(
            registered=queue_pb2.Registered(
                connection_id="conn-1",
                lease_ms=30_000,
                heartbeat_interval_ms=heartbeat_interval_ms,
                function_ids=ids,
            )
        )
        return msg.register

    def end(self) -> None:
        """Ends the stream from the server's side (status OK)."""
        self._outgoing.put_nowait(None)

    async def _pump(self, requests: AsyncIterable[queue_pb2.ConnectRequest]) -> None:
        async for msg in requests:
            if msg.WhichOneof("message") == "heartbeat":
                self.heartbeats += 1
            else:
                self._requests.put_nowait(msg)
        self.closed_by_worker = True
        self._requests.put_nowait(None)
        self.end()  # like the real server: a worker that is done writing is done


class FakeQueueService(queue_pb2_grpc.QueueServiceServicer):
    def __init__(self) -> None:
        self.connections: asyncio.Queue[FakeConnection] = asyncio.Queue()

    async def Connect(
        self,
        request_iterator: AsyncIterable[queue_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[queue_pb2.ConnectResponse]:
        conn = FakeConnection(dict(context.invocation_metadata()))
        self.connections.put_nowait(conn)
        pump = asyncio.create_task(conn._pump(request_iterator))
        try:
            while (msg := await conn._outgoing.get()) is not None:
                yield msg
        finally:
            pump.cancel()

    async def connection(self) -> FakeConnection:
        async with asyncio.timeout(DEADLINE_S):
            return await self.connections.get()


class FakeServer:
    """A grpc.aio server on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self) -> None:
        self.service = FakeQueueService()
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        queue_pb2_grpc.add_QueueServiceServicer_to_server(self.service, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def connection(self) -> FakeConnection:
        return await self.service.connection()


def job_pb(
    job_id: str,
    function: str,
    data: dict[str, Any] | None = None,
    steps: dict[str, Any] | None = None,
) -> queue_pb2.Job:
    return queue_pb2.Job(
        job_id=job_id,
        lease_id=f"lease-{job_id}",
        run_id=f"run-{job_id}",
        function_id=f"app-{function}",
        function_slug=function,
        attempt=0,
        max_attempts=4,
        event=event_pb2.Event(
            id=f"evt-{job_id}", name="test/run", data_json=json.dumps(data or {}).encode()
        ),
        steps={k: json.dumps({"data": v}).encode() for k, v in (steps or {}).items()},
    )
