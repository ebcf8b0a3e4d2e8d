"""The HTTP driver with a job it cannot deliver: a job whose data cannot be encoded fails its
run (non-retriable, naming the error); a call the app never answers hands the job back with
why, and is never answered by an instant retry."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from server.config import Settings
from server.drivers.http.driver import HttpDriver
from server.state import Applied, Outcome
from server.types import (
    AppId,
    FunctionConfig,
    FunctionId,
    Job,
    JobId,
    LeaseId,
    Opcode,
    RunFailed,
    RunId,
)
from tests.e2e.harness import free_port


class _Executor:
    def __init__(self) -> None:
        self.committed: list[Opcode] = []
        self.released: list[tuple[Job, str]] = []

    async def commit(self, results: Sequence[tuple[Job, Opcode]], relock: bool) -> list[Applied]:
        self.committed += [op for _, op in results]
        return [Applied(Outcome.FINISHED) for _ in results]

    async def release(self, jobs: Sequence[Job], reason: str = "") -> None:
        self.released += [(job, reason) for job in jobs]

    def capacity_changed(self) -> None:
        pass


def _job(event_json: bytes) -> Job:
    return Job(JobId("r"), LeaseId("1"), RunId("r"), FunctionId("a-f"), 0, 3, event_json)


async def _run(job: Job, url: str) -> _Executor:
    executor = _Executor()
    driver = HttpDriver(executor, state=None, index=None, settings=Settings())  # type: ignore[arg-type]
    fn = FunctionConfig(FunctionId("a-f"), AppId("a"), "f", "f", (), url=url)
    async with httpx.AsyncClient() as client:
        driver._client = client
        await driver._run(job, fn)
    return executor


async def test_a_job_whose_data_cannot_be_encoded_fails_its_run_naming_the_error() -> None:
    # Infinity: what `{"x": 1e999}` became before events were stored as canonical JSON.
    executor = await _run(_job(b'{"name":"e","data":{"x":Infinity}}'),
                          f"http://127.0.0.1:{free_port()}/api")
    assert executor.released == []
    (op,) = executor.committed
    assert isinstance(op, RunFailed) and op.non_retriable
    assert op.error.name == "JobEncodingError"
    assert op.error.message.startswith("the job could not be sent to the worker: ")
    assert "inf" in op.error.message.lower()


async def test_a_call_the_app_never_answers_hands_the_job_back_with_why() -> None:
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    executor = await _run(_job(b'{"name":"e","data":{}}'), url)
    assert executor.committed == []
    ((job, reason),) = executor.released
    assert job.job_id == "r" and reason.startswith(f"calling {url}") and "ConnectError" in reason
