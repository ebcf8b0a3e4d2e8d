"""The Inngest face of the HTTP port without an SDK: body forms, seeded ids, the REST API's
shapes, and a 4xx naming the problem for every kind of bad input (one dev server for all)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from ulid import ULID

from server.events.seed import seeded_ids
from tests.e2e.conftest import Running, running_server
from tests.e2e.harness import settings_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEED = "1743130137367,eii2YKXRVTJPuA=="


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plait(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp: Path = tmp_path_factory.mktemp("gateway")
    async with running_server(settings_for("embedded", tmp)) as running:
        yield running


def _function(fn_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": fn_id, "name": fn_id.rsplit("-", 1)[-1],
            "triggers": [{"event": "gw/hello", "expression": "event.data.n > 1"}],
            "steps": {"step": {"id": "step", "name": "step", "retries": {"attempts": 2},
                               "runtime": {"type": "http",
                                           "url": f"http://127.0.0.1:9/api?fnId={fn_id}"
                                                  "&stepId=step"}}},
            **extra}


PY_BODY = {"appname": "gw-py", "deploy_type": "ping", "url": "http://127.0.0.1:9/api",
           "v": "0.1", "sdk": "py:v0.5.19", "framework": "fast_api",
           "capabilities": {"connect": "v1", "in_band_sync": "v1", "trust_probe": "v1"},
           "functions": [_function("gw-py-hello", concurrency=[])]}
JS_BODY = {"appName": "gw-js", "deployType": "ping", "url": "http://127.0.0.1:9/api",
           "v": "0.1", "sdk": "js:v4.24.0", "framework": "express",
           "featureObservations": {}, "capabilities": {"trust_probe": "v1", "connect": "v1"},
           "functions": [_function("gw-js-hello"),
                         {**_function("gw-js-cron"), "triggers": [{"cron": "TZ=UTC 0 9 * * *"}]}]}


async def call(plait: Running, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, f"http://127.0.0.1:{plait.endpoints.http_port}{path}",
                                  **kwargs)


async def test_seeded_event_ids_are_derived_from_the_header_and_repeat(plait: Running) -> None:
    events = [{"name": "gw/seeded", "data": {"i": i}} for i in range(2)]
    headers = {"x-inngest-event-id-seed": SEED}
    first = await call(plait, "POST", "/e/key", json=events, headers=headers)
    again = await call(plait, "POST", "/e/key", json=events, headers=headers)
    assert first.status_code == 200 and first.json() == {"ids": seeded_ids(SEED, 2), "status": 200}
    assert again.json() == first.json()
    one, two = (ULID.from_str(i) for i in first.json()["ids"])
    assert one.milliseconds == two.milliseconds == 1743130137367
    assert int.from_bytes(two.bytes[-4:], "big") == int.from_bytes(one.bytes[-4:], "big") + 1


@pytest.mark.parametrize("seed", ["nope", "123,not-base64!", "123,AAAA", "-1,eii2YKXRVTJPuA=="])
async def test_a_malformed_seed_is_a_400_naming_the_header(plait: Running, seed: str) -> None:
    reply = await call(plait, "POST", "/e/key", json={"name": "gw/x"},
                        headers={"x-inngest-event-id-seed": seed})
    assert reply.status_code == 400 and "x-inngest-event-id-seed" in reply.json()["error"]


async def test_both_sdks_registration_bodies_are_accepted(plait: Running) -> None:
    for body, app_id in ((PY_BODY, "gw-py"), (JS_BODY, "gw-js")):
        reply = await call(plait, "POST", "/fn/register", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["ok"] is True and reply.json()["modified"] is True
        assert reply.json()["app_id"] == app_id and reply.json()["status"] == 200
        same = await call(plait, "POST", "/fn/register", json=body)
        assert same.json()["modified"] is False
    dev = (await call(plait, "GET", "/dev")).json()
    ids = {f["id"]: f for f in dev["functions"]}
    assert set(ids) == {"gw-py-hello", "gw-js-hello", "gw-js-cron"}
    assert ids["gw-js-hello"]["url"].endswith("fnId=gw-js-hello&stepId=step")


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "body"),
    (b"[]", "body"),
    ({**PY_BODY, "appname": ""}, "appName"),
    ({**PY_BODY, "url": "ftp://x"}, "url"),
    ({**PY_BODY, "functions": {}}, "functions"),
    ({**PY_BODY, "functions": [{"id": "gw-py-x"}]}, "functions[0].triggers"),
    ({**PY_BODY, "functions": [{**_function("gw-py-x"), "triggers": [{"event": 3}]}]},
     "functions[0].triggers[0].event"),
    ({**PY_BODY, "functions": [{**_function("gw-py-x"), "triggers": [{"event": "a",
                                                                       "expression": "(("}]}]},
     "functions[0].triggers[0].expression"),
    ({**PY_BODY, "functions": [{**_function("gw-py-x"), "steps": {"step": {"runtime": {
        "type": "ws", "url": "ws://x"}}}}]}, "functions[0].steps.step.runtime.type"),
    ({**PY_BODY, "functions": [{**_function("gw-py-x"), "steps": {"step": {
        "retries": {"attempts": "3"}, "runtime": {"url": "http://x"}}}}]},
     "functions[0].steps.step.retries.attempts"),
    ({**PY_BODY, "functions": [{**_function("gw-py-x"), "steps": {"step": {
        "retries": {"attempts": 99}, "runtime": {"url": "http://x"}}}}]},
     "functions[0].retries"),
    ({**PY_BODY, "appname": "Not An Id!"}, "app_id"),
    ({**PY_BODY, "functions": [_function("gw-py-x"), _function("gw-py-x")]}, "functions[1].id"),
    ({**PY_BODY, "functions": [_function("gw-py-Bad Id")]}, "functions[0].id"),
    (json.dumps({**PY_BODY, "padding": "x" * (5 * 1024 * 1024)}).encode(), "body"),
])
async def test_a_bad_registration_is_a_400_naming_the_field(
    plait: Running, body: Any, field: str,
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await call(plait, "POST", "/fn/register", content=content)
    oversized = len(content) > plait.server.settings.max_request_bytes  # 413 by its length
    assert reply.status_code == (413 if oversized else 400), reply.text
    assert field in reply.json()["error"] and reply.json()["ok"] is False


async def test_an_sdk_expecting_another_kind_of_server_is_refused(plait: Running) -> None:
    reply = await call(plait, "POST", "/fn/register", json=PY_BODY,
                        headers={"X-Inngest-Expected-Server-Kind": "cloud"})
    assert reply.status_code == 400
    assert "X-Inngest-Expected-Server-Kind" in reply.json()["error"]


@pytest.mark.parametrize(("method", "path", "status", "text"), [
    ("GET", "/v1/runs/not-a-ulid", 400, "run_id"),
    ("GET", f"/v1/runs/{ULID()}", 404, "not found"),
    ("DELETE", f"/v1/runs/{ULID()}", 404, ""),
    ("DELETE", "/v1/runs/x", 400, "run_id"),
    ("GET", "/v1/events/x/runs", 400, "event_id"),
    ("GET", f"/v0/runs/{ULID()}/batch", 404, "no state"),
    ("GET", f"/v0/runs/{ULID()}/actions", 404, "no state"),
])
async def test_bad_rest_calls_are_4xx_naming_the_problem(
    plait: Running, method: str, path: str, status: int, text: str,
) -> None:
    reply = await call(plait, method, path)
    assert reply.status_code == status, reply.text
    assert text in reply.json()["error"] and reply.json()["status"] == status


async def test_an_events_runs_start_empty(plait: Running) -> None:
    reply = await call(plait, "GET", f"/v1/events/{ULID()}/runs")
    assert reply.status_code == 200
    assert reply.json()["data"] == [] and reply.json()["metadata"]["fetched_at"].endswith("Z")


@pytest.mark.parametrize(("body", "status", "text"), [
    (b"nope", 400, "body"),
    ({"url": 5}, 400, "url"),
    ({"url": "not a url"}, 400, "url"),
    ({"url": "http://127.0.0.1:9/api/inngest"}, 502, "unreachable"),
    ({"url": "{health}"}, 502, "not an Inngest SDK endpoint"),
])
async def test_syncing_what_is_not_an_sdk_app_says_why(
    plait: Running, body: Any, status: int, text: str,
) -> None:
    if isinstance(body, dict) and body["url"] == "{health}":
        body = {"url": f"http://127.0.0.1:{plait.endpoints.http_port}/health"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await call(plait, "POST", "/v1/apps/sync", content=content)
    assert reply.status_code == status, reply.text
    assert text in reply.json()["error"]
