"""The worker protocol against an in-test QueueService: register, jobs, results, credit, drain."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import plait
import pytest
from fake_queue_server import FakeConnection, FakeServer, eventually, job_pb
from plait import App, Context, Step, TriggerCron, TriggerEvent, Worker
from plait._messages import Drain, ErrorInfo, Heartbeat, JobResult, Results, RunFailed
from plait._outbox import Outbox
from plait_proto.v1 import queue_pb2, queue_pb2_grpc

StartWorker = Callable[..., Awaitable[Worker]]


class Probe:
    """Watches the "block" jobs: how many run at once, which were cancelled."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.running = 0
        self.max_running = 0
        self.cancelled: list[str] = []


def make_app(probe: Probe) -> App:
    app = App("app")

    @app.function(
        "step", trigger=TriggerEvent("test/run", expression="event.data.n > 0"), retries=2
    )
    async def one_step(ctx: Context, step: Step) -> None:
        await step.run("one", lambda: ctx.event.data["n"])

    @app.function("done", trigger=[TriggerEvent("test/run"), TriggerCron("0 9 * * *")])
    async def done(ctx: Context, step: Step) -> dict[str, bool]:
        return {"ok": True}

    @app.function("block", trigger=TriggerEvent("test/block"))
    async def block(ctx: Context, step: Step) -> str:
        probe.running += 1
        probe.max_running = max(probe.max_running, probe.running)
        try:
            await probe.gate.wait()
        except asyncio.CancelledError:
            probe.cancelled.append(ctx.run_id)
            raise
        finally:
            probe.running -= 1
        return "released"

    return app


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def start_worker(server: FakeServer, probe: Probe) -> AsyncIterator[StartWorker]:
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(**options: Any) -> Worker:
        options.setdefault("shutdown_grace_s", 2.0)
        worker = Worker(make_app(probe), server.address, **options)
        running.append((worker, asyncio.create_task(worker.arun())))
        return worker

    yield start
    probe.gate.set()
    for worker, task in running:
        async with asyncio.timeout(10):
            await worker.stop()
            await task


async def connect(server: FakeServer, heartbeat_interval_ms: int = 60_000) -> FakeConnection:
    conn = await server.connection()
    await conn.register(heartbeat_interval_ms)
    return conn


def jobs(*items: queue_pb2.Job) -> queue_pb2.Jobs:
    return queue_pb2.Jobs(jobs=list(items))


async def test_the_worker_registers_its_app_and_answers_a_batch_of_jobs(
    server: FakeServer, start_worker: StartWorker
) -> None:
    await start_worker(token="s3cret", max_concurrent_jobs=7, instance_id="w-1")
    conn = await server.connection()
    register = await conn.register()

    assert (register.app_id, register.language, register.sdk_name) == (
        "app",
        "python",
        "plait-python",
    )
    assert (register.sdk_version, register.max_concurrent_jobs, register.instance_id) == (
        plait.__version__,
        7,
        "w-1",
    )
    assert [f.id for f in register.functions] == ["step", "done", "block"]
    step_fn, done_fn, _ = register.functions
    assert step_fn.retries == 2 and not done_fn.HasField("retries")
    assert step_fn.triggers[0].event.expression == "event.data.n > 0"
    assert done_fn.triggers[1].cron.cron == "0 9 * * *"
    assert conn.metadata["authorization"] == "Bearer s3cret"

    conn.send(jobs=jobs(job_pb("1", "step", {"n": 5}), job_pb("2", "done"), job_pb("3", "ghost")))
    results = {r.job_id: r for r in await conn.results(3)}

    assert results["1"].lease_id == "lease-1"
    assert [op.WhichOneof("op") for op in results["1"].opcodes] == ["step_completed"]
    assert results["1"].opcodes[0].step_completed.step_id == "one"
    assert results["1"].opcodes[0].step_completed.output_json == b"5"
    assert results["2"].opcodes[0].run_completed.output_json == b'{"ok":true}'
    failed = results["3"].opcodes[0].run_failed
    assert failed.non_retriable and "'ghost' is not served by app 'app'" in failed.error.message


async def test_the_worker_never_runs_more_jobs_than_its_credit(
    server: FakeServer, start_worker: StartWorker, probe: Probe
) -> None:
    await start_worker(max_concurrent_jobs=2)
    conn = await connect(server)

    conn.send(jobs=jobs(*(job_pb(str(i), "block") for i in range(6))))
    await eventually(lambda: probe.running == 2, "two jobs running")
    for _ in range(20):  # give a third job every chance to start, if it wrongly could
        await asyncio.sleep(0)
    assert probe.running == 2
    probe.gate.set()
    results = await conn.results(6)

    assert sorted(r.job_id for r in results) == [str(i) for i in range(6)]
    assert probe.max_running == 2


async def test_the_worker_sends_heartbeats_at_the_interval_the_server_asks(
    server: FakeServer, start_worker: StartWorker
) -> None:
    await start_worker()
    conn = await connect(server, heartbeat_interval_ms=20)

    await eventually(lambda: conn.heartbeats >= 3, "three heartbeats")


async def test_a_cancelled_job_is_stopped_and_gets_no_result(
    server: FakeServer, start_worker: StartWorker, probe: Probe
) -> None:
    await start_worker()
    conn = await connect(server)
    conn.send(jobs=jobs(job_pb("c", "block")))
    await eventually(lambda: probe.running == 1, "the job to start")

    conn.send(cancel=queue_pb2.Cancel(job_ids=["c"]))
    await eventually(lambda: probe.cancelled == ["run-c"], "the job to be cancelled")
    conn.send(jobs=jobs(job_pb("d", "done")))

    assert [r.job_id for r in await conn.results(1)] == ["d"]


async def test_the_worker_reconnects_after_the_server_restarts(
    server: FakeServer, start_worker: StartWorker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plait.worker")
    await start_worker()
    await connect(server)

    await server.stop()
    await eventually(lambda: "reconnecting in" in caplog.text, "a reconnect to be logged")
    await server.start()
    conn = await connect(server)
    conn.send(jobs=jobs(job_pb("after", "done")))

    assert [r.job_id for r in await conn.results(1)] == ["after"]


async def test_a_server_drain_finishes_held_jobs_then_reconnects(
    server: FakeServer, start_worker: StartWorker, probe: Probe
) -> None:
    await start_worker()
    conn = await connect(server)
    conn.send(jobs=jobs(job_pb("held", "block")))
    await eventually(lambda: probe.running == 1, "the job to start")

    conn.send(drain=queue_pb2.Drain())
    probe.gate.set()

    assert [r.job_id for r in await conn.results(1)] == ["held"]
    assert await conn.recv() is None
    await connect(server)


async def test_stop_drains_finishes_held_jobs_and_closes_the_stream(
    server: FakeServer, start_worker: StartWorker, probe: Probe
) -> None:
    worker = await start_worker()
    conn = await connect(server)
    conn.send(jobs=jobs(job_pb("held", "block")))
    await eventually(lambda: probe.running == 1, "the job to start")

    async with asyncio.TaskGroup() as tg:
        stopping = tg.create_task(worker.stop())
        drain = await conn.recv()
        assert drain is not None and drain.WhichOneof("message") == "drain"
        probe.gate.set()
        assert [r.job_id for r in await conn.results(1)] == ["held"]
        assert await conn.recv() is None
    assert stopping.done()


async def test_stop_abandons_jobs_still_running_after_the_grace(
    server: FakeServer, start_worker: StartWorker, probe: Probe
) -> None:
    worker = await start_worker(shutdown_grace_s=0.05)
    conn = await connect(server)
    conn.send(jobs=jobs(job_pb("stuck", "block")))
    await eventually(lambda: probe.running == 1, "the job to start")

    async with asyncio.timeout(5):
        await worker.stop()

    drain = await conn.recv()
    assert drain is not None and drain.WhichOneof("message") == "drain"
    assert await conn.recv() is None
    assert probe.cancelled == ["run-stuck"]


async def test_an_unreachable_server_is_retried_until_the_worker_stops(
    caplog: pytest.LogCaptureFixture, probe: Probe
) -> None:
    caplog.set_level(logging.WARNING, logger="plait.worker")
    gone = FakeServer()
    await gone.start()
    await gone.stop()
    worker = Worker(make_app(probe), gone.address)

    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(worker.arun())
        await eventually(lambda: caplog.text.count("reconnecting in") >= 2, "two retries")
        await worker.stop()

    assert "UNAVAILABLE" in caplog.text


async def test_a_stop_that_comes_before_the_worker_starts_is_honoured(probe: Probe) -> None:
    worker = Worker(make_app(probe), "127.0.0.1:1")

    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        running = tg.create_task(worker.arun())
        await worker.stop()

    assert running.done()


class _Rejecting(queue_pb2_grpc.QueueServiceServicer):
    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "functions[0].id: bad")


async def test_a_registration_the_server_rejects_as_invalid_stops_the_worker(probe: Probe) -> None:
    rejecting = grpc.aio.server()
    queue_pb2_grpc.add_QueueServiceServicer_to_server(_Rejecting(), rejecting)
    port = rejecting.add_insecure_port("127.0.0.1:0")
    await rejecting.start()
    try:
        worker = Worker(make_app(probe), f"127.0.0.1:{port}")
        with pytest.raises(RuntimeError, match=r"INVALID_ARGUMENT: functions\[0\]\.id: bad"):
            async with asyncio.timeout(5):
                await worker.arun()
    finally:
        await rejecting.stop(grace=None)


async def test_results_ready_together_leave_in_one_message() -> None:
    outbox = Outbox()
    failed = RunFailed(ErrorInfo("E", "m"))
    for job_id in ("a", "b", "c"):
        outbox.put(JobResult(job_id, f"lease-{job_id}", failed))
    outbox.put(Heartbeat())
    outbox.put(Heartbeat())
    outbox.discard(["b"])

    batch = await outbox.take()

    assert batch == [
        Heartbeat(),
        Results((JobResult("a", "lease-a", failed), JobResult("c", "lease-c", failed))),
    ]
    outbox.put(Drain())
    assert await outbox.take() == [Drain()]
    outbox.sent()
    async with asyncio.timeout(1):
        await outbox.flushed()


_SIGNALLED_WORKER = """
import asyncio, sys
from plait import App, Context, Step, TriggerEvent, Worker

app = App("app")

@app.function("slow", trigger=TriggerEvent("test/run"))
async def slow(ctx: Context, step: Step) -> str:
    print("started", flush=True)
    await asyncio.sleep(0.1)  # work still in flight when the signal lands
    return "finished"

Worker(app, sys.argv[1]).run()
"""


async def test_run_drains_held_jobs_and_exits_cleanly_on_sigterm(server: FakeServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SIGNALLED_WORKER, server.address, stdout=asyncio.subprocess.PIPE
    )
    try:
        conn = await connect(server)
        conn.send(jobs=jobs(job_pb("j", "slow")))
        assert proc.stdout is not None
        async with asyncio.timeout(5):
            assert await proc.stdout.readline() == b"started\n"
        proc.send_signal(signal.SIGTERM)

        drain = await conn.recv()
        assert drain is not None and drain.WhichOneof("message") == "drain"
        [result] = await conn.results(1)
        assert result.opcodes[0].run_completed.output_json == b'"finished"'
        assert await conn.recv() is None
        async with asyncio.timeout(5):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
