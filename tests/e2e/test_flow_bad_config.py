"""Bad flow-control config (issue 12) from either transport is refused whole: INVALID_ARGUMENT
(gRPC register) or 400 (an SDK's POST /fn/register) naming the field, and nothing of the
refused registration is stored: GetFunction still shows the config registered before."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from plait_proto.v1 import function_pb2, management_pb2, queue_pb2, queue_pb2_grpc

from tests.e2e.conftest import Running, registered, running_server
from tests.e2e.harness import Client, settings_for

FN = function_pb2.FunctionDefinition
ENV = function_pb2.CONCURRENCY_SCOPE_ENV


def _definition(fn_id: str = "f", **flow: Any) -> function_pb2.FunctionDefinition:
    trigger = function_pb2.Trigger(event=function_pb2.EventTrigger(event="bad-flow/e"))
    return FN(id=fn_id, triggers=[trigger], **flow)


def _register(*definitions: function_pb2.FunctionDefinition,
              app_id: str = "bad-flow") -> queue_pb2.ConnectRequest:
    return queue_pb2.ConnectRequest(register=queue_pb2.Register(
        app_id=app_id, max_concurrent_jobs=5, functions=list(definitions)))


async def _connect(client: Client, message: queue_pb2.ConnectRequest) -> str | None:
    """The error details the server ends the stream with, or None once it accepted the
    registration (its first reply)."""
    stub = queue_pb2_grpc.QueueServiceStub(client.channel)
    done = asyncio.Event()

    async def requests() -> AsyncIterator[queue_pb2.ConnectRequest]:
        yield message
        await done.wait()  # held open: the server must be the one to end a bad stream

    call = stub.Connect(requests())
    try:
        async with asyncio.timeout(10):
            async for _ in call:
                return None
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        return e.details() or ""
    finally:
        done.set()
        call.cancel()
    raise AssertionError("the stream ended without a reply or an error")


C = function_pb2.ConcurrencyLimit
BAD_GRPC = [
    ({"concurrency": [C(limit=0)]}, "functions[0].concurrency[0].limit"),
    ({"concurrency": [C(limit=1), C(limit=2), C(limit=3)]}, "functions[0].concurrency"),
    ({"concurrency": [C(limit=2, key="event.data.k >")]}, "functions[0].concurrency[0].key"),
    ({"concurrency": [C(limit=2), C(limit=1, scope=ENV)]}, "functions[0].concurrency[1].key"),
    ({"throttle": function_pb2.Throttle(limit=1, period_ms=0)},
     "functions[0].throttle.period_ms"),
    ({"rate_limit": function_pb2.RateLimit(limit=0, period_ms=60_000)},
     "functions[0].rate_limit.limit"),
    ({"debounce": function_pb2.Debounce(period_ms=1000, timeout_ms=500)},
     "functions[0].debounce.timeout_ms"),
    ({"batch_events": function_pb2.BatchEvents(max_size=0, timeout_ms=1000)},
     "functions[0].batch_events.max_size"),
    ({"batch_events": function_pb2.BatchEvents(max_size=5, timeout_ms=1000, if_expression="((")},
     "functions[0].batch_events.if_expression"),
    ({"priority_run": "event.data.p +"}, "functions[0].priority_run"),
    ({"idempotency": "event.data.id ==="}, "functions[0].idempotency"),
    ({"singleton": function_pb2.Singleton(key="event.data.k")}, "functions[0].singleton.mode"),
]


@pytest.mark.parametrize(("flow", "field"), BAD_GRPC, ids=[f for _, f in BAD_GRPC])
async def test_bad_flow_config_over_grpc_is_invalid_argument_naming_the_field(
    plait: Running, flow: dict[str, Any], field: str,
) -> None:
    details = await _connect(plait.client, _register(_definition(**flow)))
    assert details is not None and field in details, details


async def _definition_of(client: Client, function_id: str) -> function_pb2.FunctionDefinition:
    reply = await client.management.GetFunction(
        management_pb2.GetFunctionRequest(function_id=function_id))
    return reply.function.definition


async def _exists(client: Client, function_id: str) -> bool:
    try:
        await _definition_of(client, function_id)
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        return False
    return True


async def test_a_refused_grpc_registration_leaves_the_registered_config_whole(
    plait: Running,
) -> None:
    good = _definition("f", concurrency=[C(limit=2, key="event.data.k")])
    assert await _connect(plait.client, _register(good)) is None
    await registered(plait.client, ["bad-flow-f"])
    # A change of f that is bad, with a new function g beside it: neither is taken.
    bad = _definition("f", concurrency=[C(limit=0)])
    details = await _connect(plait.client, _register(bad, _definition("g")))
    assert details is not None and "functions[0].concurrency[0].limit" in details, details
    kept = await _definition_of(plait.client, "bad-flow-f")
    assert [(c.limit, c.key) for c in kept.concurrency] == [(2, "event.data.k")]
    assert not await _exists(plait.client, "bad-flow-g")


# The Inngest SDKs' shapes, as POST /fn/register carries them (reference §8).


def _sdk_function(fn_id: str, **flow: Any) -> dict[str, Any]:
    return {"id": fn_id, "name": fn_id, "triggers": [{"event": "bad-flow/e"}],
            "steps": {"step": {"id": "step", "name": "step",
                               "runtime": {"type": "http",
                                           "url": f"http://127.0.0.1:9/api?fnId={fn_id}"
                                                  "&stepId=step"}}},
            **flow}


BODY = {"appname": "bad-flow-py", "deploy_type": "ping", "url": "http://127.0.0.1:9/api",
        "v": "0.1", "sdk": "py:v0.5.19", "framework": "fast_api",
        "functions": [_sdk_function("bad-flow-py-f")]}

BAD_HTTP = [
    ({"concurrency": [{"limit": 0}]}, "functions[0].concurrency[0].limit"),
    ({"concurrency": -1}, "functions[0].concurrency"),
    ({"concurrency": [{"limit": 1}, {"limit": 2}, {"limit": 3}]}, "functions[0].concurrency"),
    ({"concurrency": [{"limit": 2, "key": "(("}]}, "functions[0].concurrency[0].key"),
    ({"concurrency": {"limit": 2, "scope": "galaxy", "key": "event.data.k"}},
     "functions[0].concurrency.scope"),
    ({"throttle": {"limit": 1}}, "functions[0].throttle.period"),
    ({"throttle": {"limit": 1, "period": "soon"}}, "functions[0].throttle.period"),
    ({"rateLimit": {"limit": 1, "period": "48h"}}, "functions[0].rateLimit.period"),
    ({"debounce": {"period": "1s", "key": "event.data.k >"}}, "functions[0].debounce.key"),
    ({"batchEvents": {"maxSize": 0, "timeout": "1s"}}, "functions[0].batchEvents.maxSize"),
    ({"priority": {"run": "(("}}, "functions[0].priority.run"),
    ({"idempotency": 3}, "functions[0].idempotency"),
    ({"singleton": {"mode": "sometimes"}}, "functions[0].singleton.mode"),
]


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[Running]:
    # Dev mode: the gateway's routes need no signing key.
    async with running_server(settings_for("embedded", tmp_path)) as running:
        yield running


async def _post_register(plait: Running, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"http://127.0.0.1:{plait.endpoints.http_port}/fn/register",
                               content=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(("flow", "field"), BAD_HTTP, ids=[f"{f}:{json.dumps(b)}"
                                                           for b, f in BAD_HTTP])
async def test_bad_flow_config_from_an_sdk_is_a_400_naming_the_field(
    dev: Running, flow: dict[str, Any], field: str,
) -> None:
    body = {**BODY, "functions": [_sdk_function("bad-flow-py-f", **flow)]}
    reply = await _post_register(dev, body)
    assert reply.status_code == 400, reply.text
    assert field in reply.json()["error"] and reply.json()["ok"] is False, reply.text


async def test_a_refused_sdk_sync_leaves_the_registered_config_whole(dev: Running) -> None:
    good = copy.deepcopy(BODY)
    good["functions"] = [_sdk_function("bad-flow-py-f", concurrency=[
        {"limit": 2, "key": "event.data.k"}], throttle={"limit": 5, "period": "1m"})]
    reply = await _post_register(dev, good)
    assert reply.status_code == 200, reply.text
    bad = copy.deepcopy(BODY)
    bad["functions"] = [_sdk_function("bad-flow-py-f", concurrency=[{"limit": 0}]),
                        _sdk_function("bad-flow-py-g")]
    refused = await _post_register(dev, bad)
    assert refused.status_code == 400 and "functions[0].concurrency[0].limit" in refused.text
    kept = await _definition_of(dev.client, "bad-flow-py-f")
    assert [(c.limit, c.key) for c in kept.concurrency] == [(2, "event.data.k")]
    assert (kept.throttle.limit, kept.throttle.period_ms) == (5, 60_000)
    assert not await _exists(dev.client, "bad-flow-py-g")
