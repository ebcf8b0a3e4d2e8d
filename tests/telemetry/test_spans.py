"""Spans built from history records: ids, parents, times, outcomes (pure logic)."""

from __future__ import annotations

import dataclasses
import json

from server.history.records import RunEnded, StepRecorded
from server.telemetry import SpanBatch, SpanKind, span_id_hex, trace_id_hex
from server.telemetry.ids import span_id
from server.telemetry.spans import Run, root_span
from server.types import RunStatus, StepStatus

RUN = "01JAAAAAAAAAAAAAAAAAAAAAAA"
ROOT = span_id_hex(RUN, SpanKind.RUN)
ERROR = json.dumps({"name": "ValueError", "message": "no", "stack": "Traceback ..."})


def step(step_id: str, status: StepStatus, lease: str, *, ready: int | None = None,
         started: int = 100, ended: int = 110, attempt: int = 0, error: str = "",
         until: int | None = None) -> StepRecorded:
    return StepRecorded(RUN, step_id, step_id.upper(), attempt, status, "", error, ended,
                        function_id="shop-charge", app_id="shop", lease_id=lease,
                        ready_ms=ready, started_ms=started, until_ms=until)


def test_an_attempt_is_a_child_of_the_root_named_by_its_lease() -> None:
    batch = SpanBatch()
    batch.add(step("a", StepStatus.COMPLETED, "7", ready=90))
    attempt = batch.spans[span_id(RUN, SpanKind.STEP, "7")]
    assert (attempt.trace_id, attempt.parent_id) == (trace_id_hex(RUN), ROOT)
    assert (attempt.name, attempt.start_ms, attempt.end_ms) == ("step A", 100, 110)
    assert attempt.attributes == {
        "plait.run.id": RUN, "plait.function.id": "shop-charge", "plait.app.id": "shop",
        "plait.step.id": "a", "plait.step.name": "A", "plait.attempt": 0,
        "plait.outcome": "completed", "plait.lease.id": "7"}
    assert attempt.status == "ok"
    wait = batch.spans[span_id(RUN, SpanKind.QUEUE, "7")]
    assert (wait.name, wait.parent_id, wait.start_ms, wait.end_ms) == ("queue.wait", ROOT, 90, 100)


def test_a_relocked_job_has_no_queue_wait() -> None:
    batch = SpanBatch()
    batch.add(step("a", StepStatus.COMPLETED, "7"))
    assert [s.kind for s in batch.spans.values()] == [SpanKind.STEP]


def test_a_failed_attempt_is_an_error_with_its_exception() -> None:
    batch = SpanBatch()
    batch.add(step("a", StepStatus.FAILED, "8", attempt=2, error=ERROR))
    (attempt,) = batch.spans.values()
    assert (attempt.status, attempt.status_message) == ("error", "no")
    assert attempt.attributes["error.type"] == "ValueError"
    assert attempt.attributes["plait.attempt"] == 2
    assert attempt.error is not None and attempt.error.stack == "Traceback ..."


def test_a_sleep_spans_until_the_wake_up() -> None:
    batch = SpanBatch()
    batch.add(step("nap", StepStatus.SLEEPING, "9", ended=110, until=5_110))
    sleep = batch.spans[span_id(RUN, SpanKind.SLEEP, "9")]
    assert (sleep.name, sleep.parent_id, sleep.start_ms, sleep.end_ms) == (
        "sleep NAP", ROOT, 110, 5_110)


def test_the_root_spans_the_run_from_creation_to_end() -> None:
    run = Run(RUN, "shop-charge", "shop", "01JEEEEEEEEEEEEEEEEEEEEEEE", 50, 200, "completed",
              sender="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    root = root_span(run)
    assert (root.id, root.parent_id, root.trace_id) == (ROOT, "", trace_id_hex(RUN))
    assert (root.name, root.start_ms, root.end_ms) == ("run shop-charge", 50, 200)
    assert root.attributes["plait.event.id"] == "01JEEEEEEEEEEEEEEEEEEEEEEE"
    assert root.attributes["plait.run.status"] == "completed"
    assert (root.outcome, root.status) == ("completed", "ok")
    assert root.links == ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",)
    going = root_span(dataclasses.replace(run, ended_ms=None, status="running"))
    assert (going.end_ms, going.outcome, going.status) == (None, "", "unset")
    failed = root_span(dataclasses.replace(run, status="failed", error_json=ERROR))
    assert (failed.status, failed.status_message) == ("error", "no")
    cancelled = root_span(dataclasses.replace(run, status="cancelled"))
    assert cancelled.status == "unset"


def test_a_completed_end_carries_the_last_attempt() -> None:
    # A completed function's last job has no step record: the end carries its attempt.
    batch = SpanBatch()
    batch.add(RunEnded(RUN, RunStatus.COMPLETED, "1", "", 200, function_id="shop-charge",
                       app_id="shop", lease_id="11", ready_ms=None, started_ms=190, attempt=0))
    (final,) = batch.spans.values()
    assert (final.id, final.name, final.start_ms, final.end_ms) == (
        span_id_hex(RUN, SpanKind.STEP, "11"), "function", 190, 200)
    assert final.attributes["plait.step.id"] == "$function"


def test_a_failed_or_cancelled_end_makes_no_attempt_span() -> None:
    batch = SpanBatch()
    batch.add(RunEnded(RUN, RunStatus.FAILED, "", ERROR, 200, function_id="f", lease_id="3",
                       started_ms=190))
    batch.add(RunEnded("01JCCCCCCCCCCCCCCCCCCCCCCC", RunStatus.CANCELLED, "", "", 200))
    assert batch.spans == {}


def test_records_from_before_the_attempt_fields_make_no_attempt_spans() -> None:
    batch = SpanBatch()
    batch.add(StepRecorded(RUN, "a", "a", 0, StepStatus.COMPLETED, "1", "", 300))
    assert batch.spans == {}
