"""The replay engine: memoised steps replay, the first new step answers the job, errors map."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from plait import (
    App,
    Context,
    NonRetriableError,
    RetryAfterError,
    Step,
    StepError,
    SyncStep,
    TriggerCron,
    TriggerEvent,
)
from plait._execute import execute
from plait._messages import Job, RunCompleted, RunFailed, Sleep, StepCompleted, StepFailed

TRIGGER = TriggerEvent("test/run")


def data(value: Any) -> bytes:
    return json.dumps({"data": value}).encode()


def failure(name: str, message: str, stack: str = "") -> bytes:
    return json.dumps({"error": {"name": name, "message": message, "stack": stack}}).encode()


def job(
    function: str = "f",
    steps: dict[str, bytes] | None = None,
    event: dict[str, Any] | None = None,
    **fields: Any,
) -> Job:
    return Job(
        job_id="job-1",
        lease_id="lease-1",
        run_id="run-1",
        function_id=f"app-{function}",
        function_slug=function,
        event_id="evt-1",
        event_name="test/run",
        event_data_json=json.dumps(event or {}).encode(),
        event_ts_ms=1_700_000_000_000,
        steps=steps or {},
        **fields,
    )


def output(opcode: object) -> Any:
    assert isinstance(opcode, StepCompleted | RunCompleted), opcode
    return json.loads(opcode.output_json)


async def test_memoised_steps_are_not_rerun_and_the_first_new_step_answers_the_job() -> None:
    app = App("app")
    calls: list[str] = []

    def body(name: str) -> str:
        calls.append(name)
        return name.upper()

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> str:
        a = await step.run("a", body, "a")
        b = await step.run("b", body, "b")
        calls.append(f"after b: {a}{b}")
        await step.run("c", body, "c")
        return "done"

    opcode = await execute(app, job(steps={"a": data("A")}))

    assert calls == ["b"]
    assert opcode == StepCompleted("b", "b", b'"B"')


async def test_a_run_whose_steps_are_all_memoised_completes_with_its_return_value() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> dict[str, Any]:
        a = await step.run("a", lambda: 1)
        return {"a": a, "amount": ctx.event.data["amount"], "run": ctx.run_id}

    opcode = await execute(app, job(steps={"a": data({"x": 1})}, event={"amount": 3}))

    assert opcode == RunCompleted(b'{"a":{"x":1},"amount":3,"run":"run-1"}')


async def test_a_step_that_raises_is_a_retriable_step_failure() -> None:
    app = App("app")

    def broken() -> None:
        raise ValueError("card declined")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await step.run("charge", broken)

    opcode = await execute(app, job())

    assert isinstance(opcode, StepFailed)
    assert (opcode.step_id, opcode.name, opcode.non_retriable) == ("charge", "charge", False)
    assert (opcode.error.name, opcode.error.message) == ("ValueError", "card declined")
    assert "broken" in opcode.error.stack
    assert opcode.retry_after_ms == 0


async def test_a_step_raising_retry_after_asks_for_that_delay() -> None:
    app = App("app")
    at = datetime.now(UTC) + timedelta(seconds=60)

    async def in_30s() -> None:
        raise RetryAfterError("rate limited", timedelta(seconds=30))

    async def at_a_time() -> None:
        raise RetryAfterError("closed", at)

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await step.run("a", in_30s)
        await step.run("b", at_a_time)

    first = await execute(app, job())
    second = await execute(app, job(steps={"a": data(None)}))

    assert isinstance(first, StepFailed) and isinstance(second, StepFailed)
    assert (first.retry_after_ms, first.non_retriable, first.error.message) == (
        30_000,
        False,
        "rate limited",
    )
    assert 50_000 < second.retry_after_ms <= 60_000


async def test_a_step_raising_non_retriable_error_fails_for_good() -> None:
    app = App("app")

    def refuse() -> None:
        raise NonRetriableError("unknown customer")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await step.run("a", refuse)

    opcode = await execute(app, job())

    assert isinstance(opcode, StepFailed)
    assert opcode.non_retriable
    assert (opcode.error.name, opcode.error.message) == ("NonRetriableError", "unknown customer")


async def test_a_memoised_failure_raises_step_error_that_user_code_can_catch() -> None:
    app = App("app")
    ran: list[str] = []

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> str:
        try:
            await step.run("charge", ran.append, "charge")
        except StepError as exc:
            return f"compensated {exc.name}: {exc.message} / {exc.stack}"
        return "charged"

    opcode = await execute(app, job(steps={"charge": failure("ValueError", "declined", "tb")}))

    assert ran == []
    assert output(opcode) == "compensated ValueError: declined / tb"


async def test_an_uncaught_memoised_failure_fails_the_run_without_retries() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await step.run("charge", lambda: None)

    opcode = await execute(app, job(steps={"charge": failure("ValueError", "declined", "tb")}))

    assert isinstance(opcode, RunFailed)
    assert opcode.non_retriable
    assert (opcode.error.name, opcode.error.message, opcode.error.stack) == (
        "ValueError",
        "declined",
        "tb",
    )


async def test_a_new_sleep_answers_with_its_wake_up_time_and_a_memoised_one_returns() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> str:
        await step.sleep("nap", 2)
        await step.sleep("long", timedelta(hours=1))
        return "awake"

    before = time.time_ns() // 1_000_000
    first = await execute(app, job())
    after = time.time_ns() // 1_000_000
    second = await execute(app, job(steps={"nap": data(None)}))
    done = await execute(app, job(steps={"nap": data(None), "long": data(None)}))

    assert isinstance(first, Sleep) and (first.step_id, first.name) == ("nap", "nap")
    assert before + 2_000 <= first.until_ms <= after + 2_000
    assert isinstance(second, Sleep) and second.step_id == "long"
    assert second.until_ms >= before + 3_600_000
    assert output(done) == "awake"


async def test_sleep_until_takes_a_datetime_or_unix_milliseconds() -> None:
    app = App("app")
    wake = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await step.sleep_until("date", wake)
        await step.sleep_until("ms", 1_900_000_000_000)

    first = await execute(app, job())
    second = await execute(app, job(steps={"date": data(None)}))

    assert first == Sleep("date", "date", int(wake.timestamp() * 1000))
    assert second == Sleep("ms", "ms", 1_900_000_000_000)


async def test_an_error_outside_steps_fails_the_run_retriably_unless_told_otherwise() -> None:
    app = App("app")

    @app.function("plain", trigger=TRIGGER)
    async def plain(ctx: Context, step: Step) -> None:
        raise KeyError("missing")

    @app.function("later", trigger=TRIGGER)
    async def later(ctx: Context, step: Step) -> None:
        raise RetryAfterError("busy", 1.5)

    @app.function("never", trigger=TRIGGER)
    async def never(ctx: Context, step: Step) -> None:
        raise NonRetriableError("bad input")

    plain_op = await execute(app, job("plain"))
    later_op = await execute(app, job("later"))
    never_op = await execute(app, job("never"))

    assert isinstance(plain_op, RunFailed) and not plain_op.non_retriable
    assert plain_op.error.name == "KeyError" and "plain" in plain_op.error.stack
    assert isinstance(later_op, RunFailed) and later_op.retry_after_ms == 1_500
    assert isinstance(never_op, RunFailed) and never_op.non_retriable


async def test_repeated_step_ids_get_suffixes_in_call_order() -> None:
    app = App("app")
    ran: list[int] = []

    def item(i: int) -> int:
        ran.append(i)
        return i * 10

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> list[int]:
        return [await step.run("item", item, i) for i in range(4)]

    memo = {"item": data(0), "item:1": data(10)}
    opcode = await execute(app, job(steps=memo))
    done = await execute(app, job(steps={**memo, "item:2": data(20), "item:3": data(30)}))

    assert opcode == StepCompleted("item:2", "item", b"20")
    assert ran == [2]
    assert output(done) == [0, 10, 20, 30]


async def test_a_sync_function_runs_in_a_thread_with_sync_steps() -> None:
    app = App("app")
    threads: list[str] = []

    async def fetch(n: int) -> int:
        return n + 1

    @app.function("report", trigger=TriggerCron("TZ=Europe/Paris 0 9 * * *"))
    def report(ctx: Context, step: SyncStep) -> int:
        threads.append(threading.current_thread().name)
        x = step.run("x", lambda: 1)
        y = step.run("y", fetch, x)
        step.sleep("wait", 1)
        return x + y

    first = await execute(app, job("report"))
    second = await execute(app, job("report", steps={"x": data(1)}))
    third = await execute(app, job("report", steps={"x": data(1), "y": data(2)}))
    done = await execute(app, job("report", steps={"x": data(1), "y": data(2), "wait": b"{}"}))

    assert first == StepCompleted("x", "x", b"1")
    assert second == StepCompleted("y", "y", b"2")
    assert isinstance(third, Sleep) and third.step_id == "wait"
    assert output(done) == 3
    assert threading.main_thread().name not in threads


async def test_a_sync_step_body_in_an_async_function_runs_off_the_event_loop() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await step.run("where", lambda: threading.current_thread() is threading.main_thread())

    assert await execute(app, job()) == StepCompleted("where", "where", b"false")


async def test_outputs_that_are_not_json_fail_without_retries() -> None:
    app = App("app")

    @app.function("step-out", trigger=TRIGGER)
    async def step_out(ctx: Context, step: Step) -> None:
        await step.run("obj", object)

    @app.function("nan-out", trigger=TRIGGER)
    async def nan_out(ctx: Context, step: Step) -> None:
        await step.run("nan", lambda: float("nan"))

    @app.function("run-out", trigger=TRIGGER)
    async def run_out(ctx: Context, step: Step) -> set[int]:
        return {1}

    step_op = await execute(app, job("step-out"))
    nan_op = await execute(app, job("nan-out"))
    run_op = await execute(app, job("run-out"))

    assert isinstance(step_op, StepFailed) and step_op.non_retriable
    assert "step 'obj' returned a value that is not JSON-serialisable" in step_op.error.message
    assert isinstance(nan_op, StepFailed) and nan_op.non_retriable
    assert isinstance(run_op, RunFailed) and run_op.non_retriable
    assert "function 'run-out' returned a value that is not JSON" in run_op.error.message


async def test_user_code_catching_exception_cannot_swallow_the_end_of_the_job() -> None:
    app = App("app")
    after: list[str] = []

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> str:
        try:
            await step.run("a", lambda: "A")
        except Exception:
            after.append("swallowed")
        after.append("went on")
        return "wrong"

    assert await execute(app, job()) == StepCompleted("a", "a", b'"A"')
    assert after == []


async def test_an_unknown_function_fails_the_run_without_retries() -> None:
    app = App("app")

    @app.function("known", trigger=TRIGGER)
    async def known(ctx: Context, step: Step) -> None:
        pass

    opcode = await execute(app, job("ghost"))

    assert isinstance(opcode, RunFailed) and opcode.non_retriable
    assert opcode.error.message == "function 'ghost' is not served by app 'app' (it serves 'known')"


async def test_the_function_is_found_by_global_id_when_the_slug_is_missing() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> str:
        return ctx.function_id

    opcode = await execute(app, dataclasses.replace(job(), function_slug=""))

    assert output(opcode) == "app-f"


async def test_event_data_that_is_not_a_json_object_fails_the_run() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        pass

    opcode = await execute(app, Job("j", "l", "r", "app-f", "f", event_data_json=b"[1]"))

    assert isinstance(opcode, RunFailed) and opcode.non_retriable
    assert "not a JSON object" in opcode.error.message


async def test_the_run_logger_is_silent_while_memoised_steps_replay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        ctx.logger.info("start")
        await step.run("a", lambda: 1)
        ctx.logger.info("after a")
        await step.run("b", lambda: 2)

    with caplog.at_level(logging.INFO, logger="plait.run"):
        await execute(app, job(steps={"a": data(1)}))

    assert [r.getMessage() for r in caplog.records] == ["after a"]
    assert caplog.records[0].run_id == "run-1"  # type: ignore[attr-defined]


async def test_the_job_runs_inside_the_trace_context_it_carries() -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    app = App("app")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> str:
        return f"{trace.get_current_span().get_span_context().trace_id:032x}"

    opcode = await execute(app, job(traceparent=f"00-{trace_id}-00f067aa0ba902b7-01"))

    assert output(opcode) == trace_id


def test_declarations_are_checked_when_they_are_made() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        pass

    with pytest.raises(ValueError, match="App app_id has value 'Bad App'"):
        App("Bad App")
    with pytest.raises(ValueError, match="declared twice"):
        app.function("f", trigger=TRIGGER)
    with pytest.raises(ValueError, match="retries has value 21"):
        app.function("g", trigger=TRIGGER, retries=21)
    with pytest.raises(ValueError, match="trigger is empty"):
        app.function("g", trigger=[])
    with pytest.raises(ValueError, match="TriggerEvent event has value ''"):
        TriggerEvent("")


def test_on_failure_declares_a_failure_function_triggered_by_the_failed_event() -> None:
    app = App("app")

    async def handle(ctx: Context, step: Step) -> None:
        pass

    @app.function("charge", trigger=TRIGGER, on_failure=handle)
    async def charge(ctx: Context, step: Step) -> None:
        pass

    failure = app._specs()[1]
    assert (failure.id, failure.name, failure.retries) == ("charge-failure", "charge (failure)", 0)
    assert failure.triggers == (TriggerEvent(
        "inngest/function.failed", "event.data.function_id == 'app-charge'"),)
    with pytest.raises(ValueError, match=r"on_failure handler has value 'x{128}-failure'"):
        app.function("x" * 128, trigger=TRIGGER, on_failure=handle)
