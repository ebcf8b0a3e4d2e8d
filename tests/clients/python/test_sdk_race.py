"""`step.race`: its new steps are planned as a race (StepsPlanned.race), and once one of them
is memoised the function goes on, a loser giving None, even a step.run not ended."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from plait import App, Context, Step, TriggerEvent
from plait._execute import execute
from plait._messages import Job, RunCompleted, StepCompleted, StepsPlanned

TRIGGER = TriggerEvent("test/run")


def data(value: Any) -> bytes:
    return json.dumps({"data": value}).encode()


def job(steps: dict[str, bytes] | None = None) -> Job:
    return Job(job_id="job-1", lease_id="lease-1", run_id="run-1", function_id="app-f",
               function_slug="f", event_id="evt-1", event_name="test/run", steps=steps or {})


def race_app(ran: list[str]) -> App:
    app = App("app")

    def slow() -> str:
        ran.append("slow")
        return "slow"

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> dict[str, Any]:
        got, done = await step.race(
            step.wait_for_event("answer", event="test/answer", timeout=60),
            step.run("slow", slow))
        after = await step.run("after", lambda: "after")
        return {"answer": got and got.data, "slow": done, "after": after}

    return app


async def test_steps_reached_in_a_race_are_planned_as_a_race() -> None:
    ran: list[str] = []

    assert await execute(race_app(ran), job()) == StepsPlanned(("answer", "slow"), race=True)
    assert ran == []


async def test_the_first_step_to_end_settles_the_race_and_a_loser_still_running_is_none() -> None:
    ran: list[str] = []
    app = race_app(ran)
    answered = {"answer": data({"name": "test/answer", "data": {"k": 1}})}

    # The loser's step.run is not memoised: it neither runs here nor joins a new group.
    # (A loser left among the round's steps would park "after" for ever: bounded here.)
    after = await asyncio.wait_for(execute(app, job(answered)), 10)
    done = await asyncio.wait_for(execute(app, job({**answered, "after": data("after")})), 10)

    assert after == StepCompleted("after", "after", b'"after"')
    assert isinstance(done, RunCompleted)
    assert json.loads(done.output_json) == {"answer": {"k": 1}, "slow": None, "after": "after"}
    assert ran == []
