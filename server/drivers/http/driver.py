"""The HTTP driver: runs the jobs of functions served by Inngest SDK apps by calling the apps.

Each leased job becomes one POST to the function's URL; the SDK's answer is mapped onto the
shared opcode model and committed like a gRPC worker's result. When the commit hands back the
run's next job (relock), the same task calls the app again at once, so a run's steps follow
each other without a lease round trip. Every app has a bounded number of calls in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import structlog

from server.config import Mode, Settings
from server.drivers import DATA_ERRORS, undeliverable
from server.drivers.http import signing
from server.drivers.http._request import build_call
from server.drivers.http._response import opcode_from_response
from server.errors import StorageError
from server.executor.executor import Executor
from server.runner.index import FunctionIndex
from server.state import Outcome, StateStore
from server.telemetry.telemetry import Telemetry, outcome_of
from server.types import (
    AppId,
    ErrorInfo,
    FunctionConfig,
    FunctionId,
    Job,
    JobId,
    Opcode,
    RunFailed,
    RunId,
)

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
RELEASE_TIMEOUT_S = 5.0


class _Undelivered(Exception):
    """A call got no answer from the app (refused, reset, timed out): the job goes back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class _Call:
    job: Job
    task: asyncio.Task[None]


class HttpDriver:
    """The executor's driver for functions whose registration carries an app URL."""

    def __init__(self, executor: Executor, state: StateStore, index: FunctionIndex,
                 settings: Settings, telemetry: Telemetry | None = None) -> None:
        self._executor = executor
        self._telemetry = telemetry or Telemetry()
        self._state = state
        self._index = index
        self._settings = settings
        self._inflight: dict[AppId, int] = {}
        self._calls: dict[JobId, _Call] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._client: httpx.AsyncClient | None = None
        self._generation = -1
        self._apps: dict[AppId, list[FunctionId]] = {}

    # Driver protocol

    def _http_apps(self) -> dict[AppId, list[FunctionId]]:
        if self._generation != self._index.generation:
            apps: dict[AppId, list[FunctionId]] = {}
            for fn in self._index.all():
                if fn.url:
                    apps.setdefault(fn.app_id, []).append(fn.id)
            self._apps, self._generation = apps, self._index.generation
        return self._apps

    def _free(self, app_id: AppId) -> int:
        return self._settings.sdk_concurrency - self._inflight.get(app_id, 0)

    def capacity(self) -> dict[FunctionId, int]:
        if self._tg is None:
            return {}
        caps: dict[FunctionId, int] = {}
        for app_id, functions in self._http_apps().items():
            free = self._free(app_id)
            if free > 0:
                for fn in functions:
                    caps[fn] = free
        return caps

    def total_capacity(self) -> int:
        if self._tg is None:
            return 0
        return sum(max(0, self._free(app)) for app in self._http_apps())

    async def dispatch(self, jobs: Sequence[Job]) -> list[Job]:
        unplaced: list[Job] = []
        for job in jobs:
            fn = self._index.get(job.function_id)
            if self._tg is None or fn is None or not fn.url or self._free(fn.app_id) <= 0:
                unplaced.append(job)
                continue
            self._inflight[fn.app_id] = self._inflight.get(fn.app_id, 0) + 1
            task = self._tg.create_task(self._run(job, fn), name=f"sdk-call-{job.job_id}")
            self._calls[job.job_id] = _Call(job, task)
        return unplaced

    async def cancel(self, run_id: RunId) -> bool:
        told = False
        for call in list(self._calls.values()):
            if call.job.run_id == run_id:
                call.task.cancel()
                told = True
        return told

    # The role

    async def run(self) -> None:
        """Owns the calls in flight; cancelling it stops them and hands their jobs back."""
        timeout = httpx.Timeout(self._settings.sdk_request_timeout_s, connect=CONNECT_TIMEOUT_S)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            self._client = client
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    self._executor.capacity_changed()
                    tg.create_task(self._heartbeat())
            finally:
                self._tg = None

    async def _heartbeat(self) -> None:
        """Keeps the leases of jobs whose SDK call is still running."""
        interval_s = self._settings.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            jobs = [call.job for call in self._calls.values()]
            if not jobs:
                continue
            try:
                await self._executor.extend(jobs)
            except Exception:  # Redis away: leases may lapse and be redelivered, no more
                log.warning("sdk.heartbeat_failed", jobs=len(jobs), exc_info=True)

    async def _run(self, job: Job, fn: FunctionConfig) -> None:
        current: Job | None = job
        task = asyncio.current_task()
        assert task is not None
        try:
            while current is not None:
                op = await self._call(current, fn)
                (applied,) = await self._executor.commit([(current, op)], relock=True)
                self._calls.pop(current.job_id, None)
                current = applied.next_job if applied.outcome is Outcome.CONTINUED else None
                if current is not None:
                    self._calls[current.job_id] = _Call(current, task)
        except asyncio.CancelledError:
            if current is not None:
                await self._release(current, "the call to the app was cancelled")
            raise
        except _Undelivered as e:
            if current is not None:
                await self._release(current, e.reason)
        except StorageError as e:  # Redis kept refusing the commit: the answer is not kept
            if current is not None:
                await self._release(current, f"its result could not be committed: {e}")
        except Exception as e:
            # Confined to this job: it comes back after the redelivery backoff, and its run
            # fails past the cap; the driver and the other calls go on.
            log.exception("sdk.call_failed", run_id=job.run_id, function_id=fn.id)
            if current is not None:
                await self._release(current, f"the call to the app failed: "
                                             f"{type(e).__name__}: {e}")
        finally:
            if current is not None:
                self._calls.pop(current.job_id, None)
            self._inflight[fn.app_id] = self._inflight.get(fn.app_id, 1) - 1
            self._executor.capacity_changed()

    async def _release(self, job: Job, reason: str) -> None:
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                await asyncio.shield(self._executor.release([job], reason))
        except Exception:  # the lease expires and the scavenger requeues the job instead
            log.warning("sdk.release_failed", run_id=job.run_id, job_id=job.job_id)

    async def _call(self, job: Job, fn: FunctionConfig) -> Opcode:
        """One request to the app. A job whose data cannot be encoded fails its run (sending
        it again cannot help); a call that got no answer (refused, timed out) raises
        _Undelivered: the job is handed back, never answered by a retry at once."""
        assert self._client is not None
        stack = await self._state.stack(job.run_id) if job.steps else []
        try:
            call = build_call(job, fn.url, stack, self._settings)
        except DATA_ERRORS as e:
            log.warning("sdk.undeliverable", run_id=job.run_id, job_id=job.job_id,
                        error=repr(e)[:500])
            return undeliverable(e)
        # The dispatch span and plait_gateway_calls_total (server/telemetry).
        self._telemetry.dispatch_started(job, "http", call.url)
        with structlog.contextvars.bound_contextvars(
                run_id=job.run_id, job_id=job.job_id, step_id=job.target_step or None):
            try:
                response = await self._client.post(call.url, content=call.body,
                                                   headers=call.headers)
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                log.info("sdk.unreachable", url=call.url, error=error)
                self._telemetry.dispatch_ended(job, "error", error=error)
                raise _Undelivered(f"calling {call.url}: {error}") from e
            headers = {k.lower(): v for k, v in response.headers.items()}
            body = response.content
            if not self._signed(response.status_code, headers, body):
                log.warning("sdk.bad_signature", url=call.url, status=response.status_code)
                self._telemetry.dispatch_ended(job, "error", error="invalid signature",
                                               status_code=response.status_code)
                return RunFailed(ErrorInfo(
                    "InvalidSignature",
                    f"{call.url} answered HTTP {response.status_code} without a valid "
                    "X-Inngest-Signature for the signing key"))
            op = opcode_from_response(response.status_code, headers, body, job,
                                      int(time.time() * 1000))
            self._telemetry.dispatch_ended(job, outcome_of(op), status_code=response.status_code)
            return op

    def _signed(self, status: int, headers: dict[str, str], body: bytes) -> bool:
        """In production an SDK signs every answer to a request it accepted; a 401 (it
        refused ours) and a 201 keepalive stream carry no signature of their body."""
        if self._settings.mode is not Mode.PRODUCTION or status in (201, 401):
            return True
        keys = [self._settings.signing_key, self._settings.signing_key_fallback]
        return signing.verify(headers.get("x-inngest-signature"), body, keys)
