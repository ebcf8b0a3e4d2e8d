"""The worker stream over grpc.aio: one `QueueService.Connect` call, spoken in dataclasses."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from plait_proto.v1 import queue_pb2_grpc

from plait._convert import request_to_pb, response_from_pb
from plait._messages import Incoming, Outgoing

# Jobs carry memoised outputs of up to 4 MiB each; 8 MiB leaves room for a few per message.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


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
        self._call = stub.Connect(metadata=tuple(metadata) or None)

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
