"""Jobs pushed to a worker stay under its max_receive_message_bytes: memos that do not fit are
named in fetch_steps, batches are split, and a job no message can hold is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plait_proto.v1 import event_pb2, queue_pb2

from server.drivers.grpc._fit import Undeliverable, fit_steps, pack, step_entry_len

KIB = 1024
MIB = 1024 * KIB


def _job(n: int = 0, event_bytes: int = 10) -> queue_pb2.Job:
    return queue_pb2.Job(
        job_id=f"01JAAAAAAAAAAAAAAAAAAAAA{n:02d}", lease_id="17",
        run_id="01JAAAAAAAAAAAAAAAAAAAAAAA",
        function_id="app-fn", function_slug="fn", attempt=0, max_attempts=4,
        event=event_pb2.Event(id="01JEEEEEEEEEEEEEEEEEEEEEEE", name="a/b",
                              data_json=b"x" * event_bytes, ts_ms=1))


def _message_len(jobs: list[queue_pb2.Job]) -> int:
    return queue_pb2.ConnectResponse(jobs=queue_pb2.Jobs(jobs=jobs)).ByteSize()


def _memo(n: int) -> bytes:
    return b'{"data":"' + b"m" * n + b'"}'


def test_the_computed_entry_size_is_protobufs_own() -> None:
    for key, size in [("a", 0), ("step-1", 100), ("s" * 300, 200_000), ("é", 3 * MIB)]:
        with_entry = _job()
        with_entry.steps[key] = _memo(size)
        assert with_entry.ByteSize() - _job().ByteSize() == step_entry_len(key, _memo(size))


def test_a_job_that_fits_carries_every_memo() -> None:
    steps = {"a": _memo(100), "b": _memo(200)}
    job = fit_steps(_job(), steps, 8 * MIB, can_fetch=True)
    assert dict(job.steps) == steps and list(job.fetch_steps) == []


def test_three_memos_of_3_mib_leave_one_out_for_the_worker_to_fetch() -> None:
    steps = {name: _memo(3 * MIB) for name in ("a", "b", "c")}
    job = fit_steps(_job(), steps, 8 * MIB, can_fetch=True)
    assert len(job.steps) == 2 and len(job.fetch_steps) == 1
    assert set(job.steps) | set(job.fetch_steps) == set(steps)
    assert _message_len([job]) <= 8 * MIB


def test_the_smallest_memos_are_carried_first() -> None:
    steps = {"big": _memo(5 * MIB), "small": _memo(10), "mid": _memo(2 * MIB)}
    job = fit_steps(_job(), steps, 6 * MIB, can_fetch=True)
    assert set(job.steps) == {"small", "mid"} and list(job.fetch_steps) == ["big"]


def test_a_worker_that_cannot_fetch_gets_no_job_missing_memos() -> None:
    steps = {name: _memo(3 * MIB) for name in ("a", "b", "c")}
    with pytest.raises(Undeliverable, match="cannot fetch"):
        fit_steps(_job(), steps, 8 * MIB, can_fetch=False)


def test_a_memo_larger_than_any_message_is_undeliverable_naming_the_step() -> None:
    with pytest.raises(Undeliverable, match=r"step 'huge'.*max_receive_message_bytes"):
        fit_steps(_job(), {"huge": _memo(2 * MIB), "ok": _memo(10)}, 1 * MIB, can_fetch=True)


def test_an_event_larger_than_the_limit_is_undeliverable() -> None:
    with pytest.raises(Undeliverable, match="event"):
        fit_steps(_job(event_bytes=2 * MIB), {}, 1 * MIB, can_fetch=True)


def test_batches_are_split_under_the_limit_in_order() -> None:
    jobs = [fit_steps(_job(i), {"s": _memo(300 * KIB)}, MIB, can_fetch=True) for i in range(10)]
    batches = pack(jobs, MIB)
    assert len(batches) == 4  # three jobs of ~300 KiB per 1 MiB message
    assert [j.job_id for b in batches for j in b] == [j.job_id for j in jobs]
    assert all(_message_len(b) <= MIB for b in batches)


def test_small_jobs_share_one_message() -> None:
    jobs = [_job(i) for i in range(50)]
    assert pack(jobs, MIB) == [jobs]


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 600 * KIB), max_size=12),
       limit=st.integers(MIB, 3 * MIB), event_bytes=st.integers(0, 200 * KIB),
       jobs=st.integers(1, 4))
def test_every_message_fits_and_every_memo_is_carried_or_named(
    sizes: list[int], limit: int, event_bytes: int, jobs: int,
) -> None:
    steps = {f"step-{i}": _memo(n) for i, n in enumerate(sizes)}
    fitted = []
    for n in range(jobs):
        try:
            job = fit_steps(_job(n, event_bytes), steps, limit, can_fetch=True)
        except Undeliverable:
            assert any(step_entry_len(k, v) > limit - 64 for k, v in steps.items())
            return
        assert set(job.steps).isdisjoint(job.fetch_steps)
        assert set(job.steps) | set(job.fetch_steps) == set(steps)
        assert all(job.steps[k] == steps[k] for k in job.steps)
        fitted.append(job)
    for batch in pack(fitted, limit):
        assert _message_len(batch) <= limit
