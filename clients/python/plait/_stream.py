"""The worker stream over grpc.aio: one `QueueService.Connect` call, spoken in dataclasses."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from plait_proto.v1 import queue_pb2_grpc, state_pb2, state_pb2_grpc

from plait._convert import request_to_pb, response_from_pb
from plait._messages import MAX_MESSAGE_BYTES, Incoming, Job, Outgoing

# One GetSteps call; a job's lease outlives several.
GET_STEPS_TIMEOUT_S = 30.0


def open_channel(server: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # gRPC's own connect backoff (1 s first, 120 s cap) would hide ours: align it.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    if credentials is not None:
        return grpc.aio.secure_channel(server, credentials, options=options)
    return grpc.aio.insecure_channel(server, options=options)


class Stream:
    """One Connect call. One task sends and one task receives; grpc.aio allows no more."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]]) -> None:
        stub = queue_pb2_grpc.QueueServiceStub(channel)
        self._metadata = tuple(metadata) or None
        self._call = stub.Connect(metadata=self._metadata)
        self._state = state_pb2_grpc.StateServiceStub(channel)

    async def fetch_steps(self, job: Job) -> dict[str, bytes]:
        """The memos the server left out of `job` (`job.fetch_steps`), read under its lease
        one response within our message limit at a time. Raises grpc.aio.AioRpcError."""
        wanted = list(job.fetch_steps)
        steps: dict[str, bytes] = {}
        while wanted:
            reply = await self._state.GetSteps(
                state_pb2.GetStepsRequest(
                    run_id=job.run_id, job_id=job.job_id, lease_id=job.lease_id,
                    step_ids=wanted, max_response_bytes=MAX_MESSAGE_BYTES,
                ),
                metadata=self._metadata,
                timeout=GET_STEPS_TIMEOUT_S,
            )
            steps.update(reply.steps)
            if len(reply.remaining_step_ids) >= len(wanted):
                raise ConnectionError(f"GetSteps returned none of {len(wanted)} step(s)")
            wanted = list(reply.remaining_step_ids)
        return steps

    async def send(self, msg: Outgoing) -> None:
        await self._call.write(request_to_pb(msg))

    async def receive(self) -> Incoming | None:
        """The next server message, or None once the server has ended the stream."""
        while True:
            pb = await self._call.read()
            if pb is grpc.aio.EOF:
                return None
            msg = response_from_pb(pb)
            if msg is not None:
                return msg

    async def close_sending(self) -> None:
        await self._call.done_writing()

    def cancel(self) -> None:
        self._call.cancel()
