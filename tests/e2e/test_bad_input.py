"""Bad input on every face gets INVALID_ARGUMENT / HTTP 400 naming the field; the server
keeps serving."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from plait import App, Context, Step, TriggerEvent
from plait_proto.v1 import (
    event_pb2,
    function_pb2,
    management_pb2,
    queue_pb2,
    queue_pb2_grpc,
    run_pb2,
    state_pb2,
    state_pb2_grpc,
)

from tests.e2e.conftest import Running, running_server, running_worker
from tests.e2e.harness import eventually, settings_for


async def _send_error(plait: Running, events: list[event_pb2.EventInput]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await plait.client.events.SendEvents(event_pb2.SendEventsRequest(events=events))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


@pytest.mark.parametrize(("event", "field"), [
    (event_pb2.EventInput(name=""), "events[0].name"),
    (event_pb2.EventInput(name="x", data_json=b"{not json"), "events[0].data"),
    (event_pb2.EventInput(name="x", data_json=b"[1, 2]"), "events[0].data"),
    (event_pb2.EventInput(name="x", data_json=json.dumps({"b": "x" * 600_000}).encode()),
     "events[0].data"),
    (event_pb2.EventInput(name="x", ts_ms=-5), "events[0].ts"),
    (event_pb2.EventInput(name="n" * 300), "events[0].name"),
])
async def test_a_bad_event_over_grpc_names_its_field(
    plait: Running, event: event_pb2.EventInput, field: str
) -> None:
    error = await _send_error(plait, [event_pb2.EventInput(name="ok"), event])
    assert field.replace("[0]", "[1]") in (error.details() or "")


async def test_too_many_or_no_events_are_refused(plait: Running) -> None:
    error = await _send_error(plait, [event_pb2.EventInput(name="x")] * 5001)
    assert "events" in (error.details() or "") and "5000" in (error.details() or "")
    error = await _send_error(plait, [])
    assert "events" in (error.details() or "")


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "body"),
    (b'{"name": "x", "data": [1]}', "events[0].data"),
    (b'[{"name": "ok"}, {"data": {}}]', "events[1].name"),
    (b'{"name": "x", "ts": "yesterday"}', "events[0].ts"),
    (b"42", "events[0]"),
])
async def test_a_bad_event_over_http_is_a_400_naming_its_field(
    plait: Running, body: bytes, field: str
) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(f"http://127.0.0.1:{plait.endpoints.http_port}/e/key",
                                content=body)
    assert reply.status_code == 400
    assert field in reply.json()["error"]
    assert reply.json()["status"] == 400


async def test_an_oversized_http_body_is_refused(plait: Running) -> None:
    body = json.dumps([{"name": "x", "data": {"b": "x" * 400_000}}] * 12).encode()
    async with httpx.AsyncClient() as http:
        reply = await http.post(f"http://127.0.0.1:{plait.endpoints.http_port}/e/key",
                                content=body)
    # 413 from its Content-Length, before the body is read (server/api/guard.py).
    assert reply.status_code == 413 and "body" in reply.json()["error"]


async def _connect_error(plait: Running, *messages: queue_pb2.ConnectRequest) -> str:
    stub = queue_pb2_grpc.QueueServiceStub(plait.client.channel)

    async def requests() -> AsyncIterator[queue_pb2.ConnectRequest]:
        for message in messages:
            yield message
        await asyncio.sleep(30)  # hold the stream open; the server must be the one to end it

    call = stub.Connect(requests())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(10):
            async for _ in call:
                pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details() or ""


def _register(expression: str = "", app_id: str = "bad", fn_id: str = "f",
              max_jobs: int = 5, cron: str = "") -> queue_pb2.ConnectRequest:
    trigger = (function_pb2.Trigger(cron=function_pb2.CronTrigger(cron=cron)) if cron else
               function_pb2.Trigger(event=function_pb2.EventTrigger(event="bad/e",
                                                                    expression=expression)))
    return queue_pb2.ConnectRequest(register=queue_pb2.Register(
        app_id=app_id, max_concurrent_jobs=max_jobs,
        functions=[function_pb2.FunctionDefinition(id=fn_id, triggers=[trigger])]))


@pytest.mark.parametrize(("message", "field"), [
    (_register(expression="event.data.x >"), "functions[0].triggers[0].expression"),
    (_register(app_id="Not An Id"), "app_id"),
    (_register(fn_id=""), "functions[0].id"),
    (_register(max_jobs=0), "max_concurrent_jobs"),
    (_register(cron="61 * * * *"), "functions[0].triggers[0].cron"),
    (queue_pb2.ConnectRequest(heartbeat=queue_pb2.Heartbeat()), "register"),
])
async def test_a_bad_registration_names_its_field(
    plait: Running, message: queue_pb2.ConnectRequest, field: str
) -> None:
    assert field in await _connect_error(plait, message)


async def test_a_malformed_result_ends_the_stream_and_the_job_is_redelivered(
    plait: Running,
) -> None:
    stub = queue_pb2_grpc.QueueServiceStub(plait.client.channel)
    outbox: asyncio.Queue[queue_pb2.ConnectRequest] = asyncio.Queue()
    outbox.put_nowait(_register())

    async def requests() -> AsyncIterator[queue_pb2.ConnectRequest]:
        while True:
            yield await outbox.get()

    call = stub.Connect(requests())
    event_id = ""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(10):
            async for reply in call:
                if reply.WhichOneof("message") == "registered":
                    event_id = await plait.client.send("bad/e")
                elif reply.WhichOneof("message") == "jobs":
                    job = reply.jobs.jobs[0]
                    outbox.put_nowait(queue_pb2.ConnectRequest(results=queue_pb2.JobResults(
                        results=[queue_pb2.JobResult(
                            job_id=job.job_id, lease_id=job.lease_id,
                            opcodes=[queue_pb2.Opcode(step_completed=queue_pb2.StepCompleted(
                                step_id="", output_json=b"1"))])])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "results[0].opcodes[0].step_completed.step_id" in (caught.value.details() or "")

    # The job went back to the queue at once: a well-behaved worker finishes the run.
    app = App("bad")

    @app.function("f", trigger=TriggerEvent("bad/e"))
    async def f(ctx: Context, step: Step) -> str:
        return await step.run("s", lambda: "fine")

    async with running_worker(app, plait.client):
        run = await plait.client.finished_run_of(event_id)
    assert run.status == run_pb2.RUN_STATUS_COMPLETED


async def test_bad_ids_on_the_management_and_state_apis(plait: Running) -> None:
    m = plait.client.management
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await m.GetRun(management_pb2.GetRunRequest(run_id="not-a-ulid"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "run_id" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await m.GetRun(management_pb2.GetRunRequest(run_id="01JD0000000000000000000000"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await m.GetFunction(management_pb2.GetFunctionRequest(function_id="no-such-fn"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await m.ListRuns(management_pb2.ListRunsRequest(page_size=5000))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    state = state_pb2_grpc.StateServiceStub(plait.client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await state.GetRunState(state_pb2.GetRunStateRequest(run_id="x"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Still serving.
    assert (await plait.client.send("still/alive")).startswith("01")


# One canonical JSON (server/canonjson.py): what json.loads takes but Plait cannot store,
# re-read or send is refused at the door, naming the field and the rule.
DEEP_DATA = b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}"
BAD_HTTP_BODIES = [
    (b'\xef\xbb\xbf{"name":"canon/e","data":{}}', "body", "byte order mark"),
    (b'{"name":"canon/e","data":{"x":1e999}}', "events[0].data", "finite"),
    (b'{"name":"canon/e","data":{"x":NaN}}', "body", "NaN"),
    (b'{"name":"canon/e","data":' + DEEP_DATA + b"}", "body", "nests deeper"),
    (b'{"name":"canon/e","data":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}", "body",
     "nests deeper"),
    (b'{"name":"canon/e","data":{"n":%d}}' % 2**60, "events[0].data", "beyond"),
    (b'{"name":"canon/e","ts":%d}' % 10**30, "events[0].ts", "year 9999"),
    (b'{"name":"inngest/function.finished","data":{"correlation_id":"x"}}', "events[0].name",
     "inngest/"),
]
BAD_GRPC_EVENTS = [
    (event_pb2.EventInput(name="canon/e", data_json=b"\xef\xbb\xbf{}"), "events[1].data",
     "byte order mark"),
    (event_pb2.EventInput(name="canon/e", data_json=b'{"x":1e999}'), "events[1].data", "finite"),
    (event_pb2.EventInput(name="canon/e", data_json=b'{"x":NaN}'), "events[1].data", "NaN"),
    (event_pb2.EventInput(name="canon/e", data_json=DEEP_DATA), "events[1].data", "nests deeper"),
    (event_pb2.EventInput(name="canon/e", data_json=b'{"n":%d}' % 2**60), "events[1].data",
     "beyond"),
    (event_pb2.EventInput(name="canon/e", ts_ms=2**62), "events[1].ts", "year 9999"),
    (event_pb2.EventInput(name="inngest/function.invoked"), "events[1].name", "inngest/"),
]


def _canon_app() -> App:
    app = App("canon")

    @app.function("f", trigger=TriggerEvent("canon/e"))
    async def f(ctx: Context, step: Step) -> str:
        return await step.run("s", lambda: "fine")

    return app


async def test_events_breaking_a_json_rule_are_refused_and_later_events_still_run(
    plait: Running,
) -> None:
    url = f"http://127.0.0.1:{plait.endpoints.http_port}/e/key"
    async with running_worker(_canon_app(), plait.client), httpx.AsyncClient() as http:
        for body, field, rule in BAD_HTTP_BODIES:
            reply = await http.post(url, content=body)
            assert reply.status_code == 400, (body[:60], reply.text)
            error = reply.json()["error"]
            assert error.startswith(f"{field}:") and rule in error, error
        for event, field, rule in BAD_GRPC_EVENTS:
            error = await _send_error(plait, [event_pb2.EventInput(name="canon/e"), event])
            details = error.details() or ""
            assert details.startswith(f"{field}:") and rule in details, details
        # Nothing bad was stored: a good event sent afterwards runs to completion.
        good = await http.post(url, content=b'{"name":"canon/e","data":{"ok":true}}')
        assert good.status_code == 200
        run = await plait.client.finished_run_of(good.json()["ids"][0])
    assert run.status == run_pb2.RUN_STATUS_COMPLETED


async def test_a_deep_register_body_and_an_id_with_a_newline_are_400s(tmp_path: Path) -> None:
    # Dev mode: the gateway's routes need no signing key.
    async with running_server(settings_for("embedded", tmp_path)) as plait, \
            httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{plait.endpoints.http_port}"
        deep = await http.post(f"{base}/fn/register",
                               content=b'{"url":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                               headers={"Content-Type": "application/json"})
        run = await http.get(f"{base}/v1/runs/01JD0000000000000000000000%0A")
    assert deep.status_code == 400 and "nests deeper" in deep.json()["error"], deep.text
    assert run.status_code == 400 and "run_id" in run.json()["error"], run.text


async def test_a_worker_answering_nan_or_deep_json_fails_the_step_and_keeps_its_stream(
    plait: Running,
) -> None:
    """The deep output used to raise RecursionError in the opcode check and end the stream;
    the NaN output was stored and then made GET /v1/runs/{id} a 500."""
    stub = queue_pb2_grpc.QueueServiceStub(plait.client.channel)
    outbox: asyncio.Queue[queue_pb2.ConnectRequest] = asyncio.Queue()
    outbox.put_nowait(_register(app_id="rawcanon"))

    async def requests() -> AsyncIterator[queue_pb2.ConnectRequest]:
        while True:
            yield await outbox.get()

    def answer(job: queue_pb2.Job, op: queue_pb2.Opcode) -> None:
        outbox.put_nowait(queue_pb2.ConnectRequest(results=queue_pb2.JobResults(results=[
            queue_pb2.JobResult(job_id=job.job_id, lease_id=job.lease_id, opcodes=[op])])))

    deep = b"[" * 100_000 + b"]" * 100_000
    ids: list[str] = []
    memos: list[bytes] = []

    async def work(call: AsyncIterator[queue_pb2.ConnectResponse]) -> None:
        async for reply in call:
            if reply.WhichOneof("message") == "registered":
                ids.extend(await plait.client.send_many("bad/e", [{"n": 1}, {"n": 2}]))
            elif reply.WhichOneof("message") == "jobs":
                for job in reply.jobs.jobs:
                    if job.event.id == ids[1]:
                        answer(job, queue_pb2.Opcode(run_completed=queue_pb2.RunCompleted(
                            output_json=b'{"x":NaN}')))
                    elif "s" not in job.steps:
                        answer(job, queue_pb2.Opcode(step_completed=queue_pb2.StepCompleted(
                            step_id="s", output_json=deep)))
                    else:
                        memos.append(job.steps["s"])
                        answer(job, queue_pb2.Opcode(run_completed=queue_pb2.RunCompleted(
                            output_json=b"null")))

    call = stub.Connect(requests())
    worker = asyncio.create_task(work(call))
    try:
        await eventually(lambda: asyncio.sleep(0, len(ids)), lambda n: n == 2, 10,
                         "the events sent")
        first = await plait.client.finished_run_of(ids[0])
        nan = await plait.client.finished_run_of(ids[1])
        assert not worker.done(), "the worker's stream ended"
    finally:
        call.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert first.status == run_pb2.RUN_STATUS_COMPLETED
    assert len(memos) == 1 and b"nests deeper" in memos[0]
    assert nan.status == run_pb2.RUN_STATUS_FAILED and "NaN" in nan.error.message
    async with httpx.AsyncClient() as http:
        reply = await http.get(
            f"http://127.0.0.1:{plait.endpoints.http_port}/v1/runs/{nan.id}")
    assert reply.status_code in (200, 401), reply.text
    if reply.status_code == 200:
        assert reply.json()["data"]["status"] == "Failed"
