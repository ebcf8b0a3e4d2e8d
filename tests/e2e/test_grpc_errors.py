"""The one gRPC error edge (server/api/grpc_errors.py) on running servers: a NUL in an id is
INVALID_ARGUMENT naming the field before any database sees it (PostgreSQL text cannot hold
one: the fuzzing found GetApp("\\x00") answering UNKNOWN)."""

from __future__ import annotations

import grpc
import pytest
from plait_proto.v1 import management_pb2, management_pb2_grpc

from tests.e2e.conftest import Running


async def test_a_nul_in_a_management_id_is_invalid_argument(plait: Running) -> None:
    stub = management_pb2_grpc.ManagementServiceStub(plait.client.channel)
    calls = [
        (stub.GetApp, management_pb2.GetAppRequest(app_id="a\x00"), "app_id"),
        (stub.GetFunction, management_pb2.GetFunctionRequest(function_id="\x00"), "function_id"),
        (stub.ListRuns, management_pb2.ListRunsRequest(function_id="f\x00"), "function_id"),
    ]
    for call, request, field in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request)  # type: ignore[operator]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
        assert (caught.value.details() or "").startswith(f"{field}: ")
