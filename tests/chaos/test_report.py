"""The chaos checks are not vacuous: a body started after its step's commit is counted as a
rerun, one started before as a duplicate in flight, and two completions as a double commit."""

from __future__ import annotations

from pathlib import Path

from plait_proto.v1 import run_pb2

from tests.chaos.report import Report, check_steps, side_effects

COMPLETED = run_pb2.STEP_STATUS_COMPLETED


def _run(*steps: tuple[str, int]) -> run_pb2.Run:
    return run_pb2.Run(id="r1", status=run_pb2.RUN_STATUS_COMPLETED, steps=[
        run_pb2.StepAttempt(step_id=s, status=COMPLETED, ended_at_ms=t) for s, t in steps])


def test_a_body_started_after_its_result_was_committed_is_a_rerun() -> None:
    report = Report("embedded", 1)
    check_steps(report, _run(("a", 100)), {"a": [90, 101]})
    assert (report.rerun_after_commit, report.duplicates_in_flight) == (1, 0)


def test_a_body_run_twice_before_the_commit_is_a_duplicate_in_flight() -> None:
    report = Report("embedded", 1)
    check_steps(report, _run(("a", 100), ("b", 200)), {"a": [50, 90], "b": [150]})
    assert (report.rerun_after_commit, report.duplicates_in_flight) == (0, 1)


def test_a_step_completed_twice_is_a_double_commit() -> None:
    report = Report("embedded", 1)
    check_steps(report, _run(("a", 100), ("a", 120)), {"a": [90]})
    assert report.double_commits == 1


def test_the_side_effect_log_is_read_per_run_and_step(tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    log.write_text("r1 a 10 100\nr1 a 11 150\nr2 b 10 120\ntorn li")
    assert side_effects(log) == {"r1": {"a": [100, 150]}, "r2": {"b": [120]}}
