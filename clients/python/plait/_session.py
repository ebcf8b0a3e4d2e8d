"""One registered worker stream: runs pushed jobs, answers them in batches, heartbeats, drains."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging

import grpc

from plait._app import App
from plait._encode import error_info
from plait._execute import execute
from plait._messages import (
    Cancel,
    Drain,
    ErrorInfo,
    Heartbeat,
    Job,
    JobResult,
    Jobs,
    Opcode,
    Registered,
    RunFailed,
)
from plait._outbox import Outbox
from plait._stream import Stream

_LOG = logging.getLogger("plait.worker")
# A write blocked this long means the connection is gone; reconnecting is the way out.
WRITE_TIMEOUT_S = 30.0
# After our last write, how long the server gets to end the stream before we cut it.
CLOSE_TIMEOUT_S = 5.0


class End(enum.Enum):
    """Why a session ended."""

    STOPPED = "stopped"  # the worker was asked to stop
    DRAINED = "drained"  # the server asked us to go; reconnect now
    CLOSED = "closed"  # the server ended the stream; reconnect with backoff


class Session:
    """Serves one stream until the server closes it, drains it, or the worker stops."""

    def __init__(
        self,
        app: App,
        stream: Stream,
        registered: Registered,
        max_concurrent_jobs: int,
        stop: asyncio.Event,
        grace_s: float,
    ) -> None:
        self._app = app
        self._stream = stream
        self._registered = registered
        self._stop = stop
        self._grace_s = grace_s
        self._slots = asyncio.Semaphore(max_concurrent_jobs)
        self._outbox = Outbox()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._server_drain = asyncio.Event()
        self._accepting = True

    async def serve(self) -> End:
        """Runs the stream; a stream error propagates (as an ExceptionGroup) with jobs cancelled."""
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(self._read(tg))
            sender = tg.create_task(self._send())
            beat = tg.create_task(self._beat())
            drain = tg.create_task(self._server_drain.wait())
            stop = tg.create_task(self._stop.wait())
            await asyncio.wait((reader, drain, stop), return_when=asyncio.FIRST_COMPLETED)
            drain.cancel()
            stop.cancel()
            if reader.done():
                end = End.CLOSED  # the server released our leases: results would be stale
            else:
                end = await self._wind_down(tg, reader)
            for task in (*self._running.values(), reader, sender, beat):
                task.cancel()
        return end

    async def _wind_down(self, tg: asyncio.TaskGroup, reader: asyncio.Task[None]) -> End:
        """Finishes held jobs, sends their results, then ends the stream from our side."""
        stopping = self._stop.is_set()
        if stopping:
            self._outbox.put(Drain())
        else:
            _LOG.info("plait worker: server is draining; finishing %d job(s)", len(self._running))
            idle = tg.create_task(self._idle.wait())
            stop = tg.create_task(self._stop.wait())
            await asyncio.wait((idle, stop), return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
            stop.cancel()
            stopping = self._stop.is_set()
        if stopping:
            await self._finish_within_grace()
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await self._outbox.flushed()
            await self._stream.close_sending()
        # Nothing more can be answered on this stream; the server redelivers late jobs elsewhere.
        self._accepting = False
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(reader)
        except TimeoutError:
            _LOG.warning("plait worker: server did not end the stream; closing it")
        return End.STOPPED if stopping else End.DRAINED

    async def _finish_within_grace(self) -> None:
        try:
            async with asyncio.timeout(self._grace_s):
                await self._idle.wait()
        except TimeoutError:
            _LOG.warning(
                "plait worker: abandoning %d held job(s) after %.1fs of shutdown grace; "
                "the server will redeliver them",
                len(self._running),
                self._grace_s,
            )
            self._cancel(tuple(self._running))

    async def _read(self, tg: asyncio.TaskGroup) -> None:
        while (msg := await self._stream.receive()) is not None:
            match msg:
                case Jobs():
                    for job in msg.jobs:
                        self._start(tg, job)
                case Cancel():
                    self._cancel(msg.job_ids)
                case Drain():
                    self._server_drain.set()
                case Registered():
                    _LOG.warning("plait worker: ignoring a second registered message")

    async def _send(self) -> None:
        while True:
            batch = await self._outbox.take()
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                for msg in batch:
                    await self._stream.send(msg)
            self._outbox.sent()

    async def _beat(self) -> None:
        interval_s = _heartbeat_interval_s(self._registered)
        while True:
            await asyncio.sleep(interval_s)
            self._outbox.put(Heartbeat())

    def _start(self, tg: asyncio.TaskGroup, job: Job) -> None:
        if not self._accepting:
            return
        previous = self._running.get(job.job_id)
        if previous is not None:
            # Redelivered while we still hold it: our lease expired, so the old result is stale.
            previous.cancel()
        self._running[job.job_id] = tg.create_task(self._run_job(job))
        self._idle.clear()

    async def _run_job(self, job: Job) -> None:
        try:
            async with self._slots:
                try:
                    opcode = await self._execute(job)
                except Exception as exc:  # a bug in the SDK must not take the stream down
                    _LOG.exception("plait worker: job %s crashed the SDK", job.job_id)
                    opcode = RunFailed(error_info(exc))
            self._outbox.put(JobResult(job.job_id, job.lease_id, opcode))
        finally:
            if self._running.get(job.job_id) is asyncio.current_task():
                del self._running[job.job_id]
                if not self._running:
                    self._idle.set()

    async def _execute(self, job: Job) -> Opcode:
        if job.fetch_steps:
            # The server left memos out to keep the job under our message limit: replaying
            # without them would run those steps again.
            try:
                fetched = await self._stream.fetch_steps(job)
            except (grpc.aio.AioRpcError, ConnectionError) as exc:
                _LOG.warning("plait worker: job %s: fetching %d memoised step(s) failed: %s",
                             job.job_id, len(job.fetch_steps), exc)
                # Answered, so the server frees the slot; a retry gets a new lease.
                return RunFailed(ErrorInfo(
                    "FetchStepsError", f"could not fetch the run's memoised steps: {exc}"))
            job = dataclasses.replace(job, steps={**job.steps, **fetched}, fetch_steps=())
        return await execute(self._app, job)

    def _cancel(self, job_ids: tuple[str, ...]) -> None:
        for job_id in job_ids:
            task = self._running.get(job_id)
            if task is not None:
                task.cancel()
        self._outbox.discard(job_ids)


def _heartbeat_interval_s(registered: Registered) -> float:
    if registered.heartbeat_interval_ms > 0:
        return registered.heartbeat_interval_ms / 1000
    # A server that names no interval still expires leases: beat thrice per lease.
    return registered.lease_ms / 3000 if registered.lease_ms > 0 else 5.0
