"""Flow control config end to end (issue 12): registered by a Python SDK worker over gRPC and
by an official SDK's POST /fn/register, returned by GetFunction as registered; a change of it
is `modified` on re-sync; a bad one is a 400 naming the field and registers nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from plait import App, Batch, Concurrency, Debounce, Singleton, Step, Throttle, TriggerEvent
from plait_proto.v1 import function_pb2, management_pb2

from server.config import Settings
from tests.api.test_flow_config import _py_sdk_functions
from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import settings_for

# Production mode takes an SDK's registration only with the signing key.
KEY = "signkey-flowcfg-" + "c0de" * 16


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if backend == "embedded":
        return settings_for(backend, tmp_path, signing_key=KEY)
    return settings_for(backend, tmp_path, request.getfixturevalue("redis_url"),
                        request.getfixturevalue("database_url"), signing_key=KEY)


async def _definition(plait: Running, function_id: str) -> function_pb2.FunctionDefinition:
    reply = await plait.client.management.GetFunction(
        management_pb2.GetFunctionRequest(function_id=function_id))
    return reply.function.definition


async def test_a_python_sdk_workers_flow_control_is_returned_by_get_function(
    plait: Running,
) -> None:
    app = App("flowcfg")

    @app.function("pay", trigger=TriggerEvent("flowcfg/pay"),
                  concurrency=[Concurrency(1, key="event.data.user"),
                               Concurrency(10, key="event.data.org", scope="env")],
                  throttle=Throttle(2, timedelta(seconds=3)),
                  singleton=Singleton("skip", key="event.data.user"),
                  priority="event.data.vip ? 60 : 0")
    async def pay(ctx: Any, step: Step) -> None:
        return None

    @app.function("sum", trigger=TriggerEvent("flowcfg/item"), batch_events=Batch(3, 2))
    async def total(ctx: Any, step: Step) -> None:
        return None

    @app.function("quiet", trigger=TriggerEvent("flowcfg/typed"), debounce=Debounce(1),
                  idempotency="event.data.id")
    async def quiet(ctx: Any, step: Step) -> None:
        return None

    async with running_worker(app, plait.client):
        p = await _definition(plait, "flowcfg-pay")
        s = await _definition(plait, "flowcfg-sum")
        q = await _definition(plait, "flowcfg-quiet")
    assert [(c.limit, c.key, c.scope) for c in p.concurrency] == [
        (1, "event.data.user", function_pb2.CONCURRENCY_SCOPE_FN),
        (10, "event.data.org", function_pb2.CONCURRENCY_SCOPE_ENV)]
    assert (p.throttle.limit, p.throttle.period_ms, p.throttle.burst) == (2, 3000, 1)
    assert (p.singleton.mode, p.singleton.key) == (function_pb2.SINGLETON_MODE_SKIP,
                                                   "event.data.user")
    assert p.priority_run == "event.data.vip ? 60 : 0"
    assert (s.batch_events.max_size, s.batch_events.timeout_ms) == (3, 2000)
    assert (q.debounce.period_ms, q.idempotency) == (1000, "event.data.id")


async def _register(plait: Running, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"http://127.0.0.1:{plait.endpoints.http_port}/fn/register",
                               json=body, headers={"Authorization": f"Bearer {KEY}"})


def _body(functions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"appName": "shop", "url": "http://127.0.0.1:9/api/inngest",
            "functions": functions, "sdk": "py:v0.5.19", "framework": "fastapi",
            "deployType": "ping", "v": "0.1"}


async def test_an_sdk_apps_flow_control_is_returned_and_a_change_is_modified(
    plait: Running,
) -> None:
    functions = _py_sdk_functions()
    first = await _register(plait, _body(functions))
    assert first.status_code == 200 and first.json()["modified"] is True, first.text
    pay = await _definition(plait, "shop-pay")
    assert [(c.limit, c.key) for c in pay.concurrency] == [
        (2, "event.data.user"), (5, "event.data.org")]
    assert (pay.rate_limit.limit, pay.rate_limit.period_ms) == (3, 60_000)
    assert (await _definition(plait, "shop-sum")).batch_events.max_size == 3
    assert (await _definition(plait, "shop-quiet")).debounce.timeout_ms == 60_000

    same = await _register(plait, _body(functions))
    assert same.json()["modified"] is False
    functions[0]["throttle"]["limit"] = 7
    changed = await _register(plait, _body(functions))
    assert changed.json()["modified"] is True
    assert (await _definition(plait, "shop-pay")).throttle.limit == 7


@pytest.mark.parametrize(("change", "field"), [
    ({"rateLimit": {"limit": 3, "period": "2d"}}, "functions[0].rateLimit.period"),
    ({"concurrency": [{"limit": 1, "scope": "account"}]}, "functions[0].concurrency[0].key"),
])
async def test_a_bad_sdk_flow_config_is_a_400_and_registers_nothing(
    plait: Running, change: dict[str, Any], field: str,
) -> None:
    functions = _py_sdk_functions()
    functions[0] = {**functions[0], **change}
    reply = await _register(plait, _body(functions))
    assert reply.status_code == 400 and field in reply.json()["error"], reply.text
    for slug in ("pay", "sum", "quiet"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _definition(plait, f"shop-{slug}")
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
