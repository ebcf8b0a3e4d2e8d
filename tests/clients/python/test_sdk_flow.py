"""The Python SDK's flow control arguments (issue 12) and `ctx.events`."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from plait import (
    App,
    Batch,
    Concurrency,
    Context,
    Debounce,
    RateLimit,
    Singleton,
    Step,
    Throttle,
    TriggerEvent,
)
from plait._execute import execute
from plait._messages import Job, JobEvent, RunCompleted

TRIGGER = TriggerEvent("shop/e")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Concurrency(0), "Concurrency limit"),
    (lambda: Concurrency(True), "Concurrency limit"),
    (lambda: Concurrency(1, scope="org"), "Concurrency scope"),  # type: ignore[arg-type]
    (lambda: Throttle(1, 0), "Throttle period"),
    (lambda: Throttle(1, 1, burst=0), "Throttle burst"),
    (lambda: RateLimit(1, timedelta(0)), "RateLimit period"),
    (lambda: Debounce(1, timeout=-1), "Debounce timeout"),
    (lambda: Batch(0, 1), "Batch max_size"),
    (lambda: Singleton("queue"), "Singleton mode"),  # type: ignore[arg-type]
])
def test_a_bad_flow_control_value_is_refused_where_it_is_written(
    make: Any, message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"concurrency": "5"}, "concurrency"),
    ({"concurrency": [Concurrency(1), 2]}, "concurrency"),
    ({"throttle": RateLimit(1, 1)}, "throttle"),
    ({"batch_events": {"max_size": 3}}, "batch_events"),
    ({"priority": 120}, "priority"),
    ({"idempotency": ["event.data.id"]}, "idempotency"),
])
def test_a_flow_control_argument_of_the_wrong_type_is_refused_naming_it(
    kwargs: dict[str, Any], message: str,
) -> None:
    with pytest.raises(TypeError, match=message):
        App("shop").function("f", trigger=TRIGGER, **kwargs)


def _job(events: tuple[JobEvent, ...] = ()) -> Job:
    return Job(job_id="j", lease_id="1", run_id="r", function_id="shop-sum",
               function_slug="sum", event_id="e1", event_name="shop/e",
               event_data_json=b'{"n":1}', event_ts_ms=1, max_attempts=3, events=events)


def _app() -> App:
    app = App("shop")

    @app.function("sum", trigger=TRIGGER, batch_events=Batch(3, 5))
    async def total(ctx: Context, step: Step) -> Any:
        return {"ids": [e.id for e in ctx.events], "sum": sum(e.data["n"] for e in ctx.events),
                "first": ctx.event.id}

    return app


async def test_a_batched_run_sees_its_events_in_ctx_events() -> None:
    events = tuple(JobEvent(f"e{n}", "shop/e", json.dumps({"n": n}).encode(), n)
                   for n in (1, 2, 3))
    opcode = await execute(_app(), _job(events))
    assert isinstance(opcode, RunCompleted)
    assert json.loads(opcode.output_json) == {"ids": ["e1", "e2", "e3"], "sum": 6,
                                              "first": "e1"}


async def test_a_run_of_one_event_sees_it_alone_in_ctx_events() -> None:
    opcode = await execute(_app(), _job())
    assert isinstance(opcode, RunCompleted)
    assert json.loads(opcode.output_json) == {"ids": ["e1"], "sum": 1, "first": "e1"}
