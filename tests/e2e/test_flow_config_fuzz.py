"""Generated flow-control configs sent over the wire to a running server (issue 12): an SDK
app's POST /fn/register answers 200 or a 400 naming a flow field, a worker's register is taken
or ended with INVALID_ARGUMENT naming one; never a 500 or UNKNOWN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plait_proto.v1 import function_pb2, queue_pb2, queue_pb2_grpc

from tests.api.test_flow_config import _FLOW_KEYS
from tests.drivers.grpc.test_flow_config import _FLOW_FIELDS, _flow
from tests.e2e.conftest import Running, running_server
from tests.e2e.harness import settings_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

# JSON the body rules take (server/canonjson.py: integers within 2**53, no NaN), so that any
# 400 is about flow control.
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["1s", "1m", "25h", "0s", "8d", "500ms", "fn", "env", "account", "skip",
                       "cancel", "event.data.k", "((", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["limit", "key", "scope", "period", "burst", "timeout", "maxSize",
                         "if", "run", "mode"]), inner, max_size=5),
    max_leaves=12)
_RUNS = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plait(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp: Path = tmp_path_factory.mktemp("flowfuzz")
    async with running_server(settings_for("embedded", tmp)) as running:
        yield running


def _named_flow_field(message: str, fields: tuple[str, ...]) -> bool:
    field = message.split(":", 1)[0].removeprefix("functions[0].")
    return field.split(".")[0].split("[")[0] in fields


async def test_generated_sdk_flow_configs_are_a_200_or_a_400_naming_the_field(
    plait: Running,
) -> None:
    url = f"http://127.0.0.1:{plait.endpoints.http_port}/fn/register"
    fn_url = "http://127.0.0.1:9/api?fnId=fz-f&stepId=step"

    @_RUNS
    @given(st.dictionaries(st.sampled_from(_FLOW_KEYS), _json, min_size=1, max_size=4))
    def check(flow: dict[str, Any]) -> None:
        body = {"appName": "fz", "url": "http://127.0.0.1:9/api", "sdk": "js:v4.24.0",
                "functions": [{"id": "fz-f", "name": "f", "triggers": [{"event": "fz/e"}],
                               "steps": {"step": {"id": "step", "name": "step", "runtime": {
                                   "type": "http", "url": fn_url}}}, **flow}]}
        with httpx.Client(timeout=30) as http:
            reply = http.post(url, json=body)
        assert reply.status_code in (200, 400), reply.text
        if reply.status_code == 400:
            assert _named_flow_field(reply.json()["error"], (*_FLOW_KEYS, "cancel")), reply.text

    # Sync requests from a thread: the server answers on this loop meanwhile.
    await asyncio.to_thread(check)


async def test_generated_grpc_flow_configs_are_taken_or_invalid_argument_naming_the_field(
    plait: Running,
) -> None:
    target = f"127.0.0.1:{plait.endpoints.grpc_port}"
    trigger = function_pb2.Trigger(event=function_pb2.EventTrigger(event="fzg/e"))

    @_RUNS
    @given(_flow)
    def check(flow: dict[str, Any]) -> None:
        definition = function_pb2.FunctionDefinition(id="f", triggers=[trigger], **flow)
        register = queue_pb2.ConnectRequest(register=queue_pb2.Register(
            app_id="fzg", max_concurrent_jobs=1, functions=[definition]))
        with grpc.insecure_channel(target) as channel:
            replies = queue_pb2_grpc.QueueServiceStub(channel).Connect(iter([register]),
                                                                     timeout=20)
            try:
                first = next(replies)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
                assert _named_flow_field(e.details() or "", _FLOW_FIELDS), e.details()
                return
            finally:
                replies.cancel()
        assert first.WhichOneof("message") == "registered"

    await asyncio.to_thread(check)
