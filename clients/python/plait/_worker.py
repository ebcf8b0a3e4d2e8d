"""The worker: connects to a Plait server, registers an app, serves jobs, reconnects on failure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
from collections.abc import Sequence

import grpc

from plait._app import App
from plait._backoff import Backoff
from plait._messages import Register, Registered
from plait._session import WRITE_TIMEOUT_S, End, Session
from plait._stream import Stream, open_channel
from plait._version import __version__

_LOG = logging.getLogger("plait.worker")
REGISTER_TIMEOUT_S = 10.0
_MAX_JOBS = 10_000
# Retrying cannot fix these answers to a registration: they need a fix on our side.
_FATAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        # The server refused what was registered (a registration that would remove an app's
        # functions): the app needs a fix, not a retry.
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


PemSource = str | os.PathLike[str] | bytes


def _servers(server: str | Sequence[str]) -> tuple[str, ...]:
    """The server addresses: one, several comma-separated, or a list."""
    parts = server.split(",") if isinstance(server, str) else list(server)
    if not all(isinstance(p, str) for p in parts):
        raise TypeError(f"Worker server has value {server!r}. Expected addresses (str).")
    addresses = tuple(p.strip() for p in parts)
    if not addresses or not all(addresses):
        raise ValueError(
            f"Worker server has value {server!r}. Expected one or more addresses, "
            "as a list or comma-separated."
        )
    return addresses


def _pem(name: str, source: PemSource | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    try:
        with open(source, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"Worker {name} has value {str(source)!r}: {exc.strerror}.") from None


def _credentials(
    credentials: grpc.ChannelCredentials | None,
    tls_ca: PemSource | None,
    tls_cert: PemSource | None,
    tls_key: PemSource | None,
) -> grpc.ChannelCredentials | None:
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("Worker tls_cert and tls_key go together (a client certificate).")
    if tls_ca is None and tls_cert is None:
        return credentials
    if credentials is not None:
        raise ValueError("Worker takes credentials or tls_ca/tls_cert/tls_key, not both.")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem("tls_ca", tls_ca),
        private_key=_pem("tls_key", tls_key),
        certificate_chain=_pem("tls_cert", tls_cert),
    )


class Worker:
    """Serves an app's functions to a Plait server over one gRPC stream at a time."""

    def __init__(
        self,
        app: App,
        server: str | Sequence[str] = "127.0.0.1:50051",
        *,
        token: str | None = None,
        max_concurrent_jobs: int = 100,
        instance_id: str | None = None,
        shutdown_grace_s: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        tls_ca: str | os.PathLike[str] | bytes | None = None,
        tls_cert: str | os.PathLike[str] | bytes | None = None,
        tls_key: str | os.PathLike[str] | bytes | None = None,
    ) -> None:
        """`server` is one address or several (a list, or comma-separated), of equal Plait
        processes sharing one Redis and database: the worker serves one at a time, starting
        from a random one, and moves to the next at once when its stream ends or it cannot
        connect; only after every address failed in a row does it wait its reconnect backoff.
        A `dns:///name:port` address whose name has several records is spread the same way by
        gRPC itself.

        `token` is sent as "authorization: Bearer <token>"; `credentials` turns on TLS.

        Or TLS from PEM files (a path, or the PEM bytes): `tls_ca` the CA that signed the
        server's certificate (None: the system's roots), `tls_cert` and `tls_key` this worker's
        client certificate when the server asks for one (mutual TLS). Any of them turns TLS on.

        `max_concurrent_jobs` (1..10,000) is the credit the server may use; on stop, held jobs
        get `shutdown_grace_s` seconds to finish before they are abandoned for redelivery.
        """
        if isinstance(max_concurrent_jobs, bool) or not isinstance(max_concurrent_jobs, int):
            raise TypeError(f"Worker max_concurrent_jobs has value {max_concurrent_jobs!r}.")
        if not 1 <= max_concurrent_jobs <= _MAX_JOBS:
            raise ValueError(
                f"Worker max_concurrent_jobs has value {max_concurrent_jobs}. "
                f"Expected 1 to {_MAX_JOBS}."
            )
        if shutdown_grace_s < 0:
            raise ValueError(
                f"Worker shutdown_grace_s has value {shutdown_grace_s}. Expected 0 or more."
            )
        self._app = app
        self._servers = _servers(server)
        self._server = self._servers[0]
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._max_concurrent_jobs = max_concurrent_jobs
        self._instance_id = instance_id or f"{socket.gethostname()}:{os.getpid()}"
        self._grace_s = shutdown_grace_s
        self._credentials = _credentials(credentials, tls_ca, tls_cert, tls_key)
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._registrations = 0

    def run(self) -> None:
        """Serves until SIGINT or SIGTERM (a second one cuts the shutdown grace short)."""
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._run_until_signal())

    async def arun(self) -> None:
        """Serves until `stop()` is called; raises only when the server refuses the app."""
        if self._main is not None:
            raise RuntimeError("Worker is already running")
        self._main = asyncio.current_task()
        self._finished = asyncio.Event()
        channels: dict[str, grpc.aio.Channel] = {}
        try:
            await self._serve(channels)
        finally:
            for channel in channels.values():
                await channel.close()
            self._main = None
            self._finished.set()
            # Unbound to any loop, so the worker may run again; a stop() that came before
            # this run started has been honoured by it.
            self._stop = asyncio.Event()

    async def stop(self) -> None:
        """Drains: asks for no new jobs, finishes held ones within the grace, closes the stream."""
        self._stop.set()
        if self._main is not None and self._main is not asyncio.current_task():
            await self._finished.wait()

    async def _run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows, non-main thread
                loop.add_signal_handler(sig, self._on_signal)
        try:
            await self.arun()
        finally:
            for sig in signals:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self._stop.is_set() and self._main is not None:
            _LOG.warning("plait worker: second signal; stopping now")
            self._main.cancel()
            return
        _LOG.info("plait worker: stopping; finishing held jobs (press Ctrl-C again to force)")
        self._stop.set()

    async def _serve(self, channels: dict[str, grpc.aio.Channel]) -> None:
        backoff = Backoff()
        count = len(self._servers)
        index = random.randrange(count)  # workers given one list spread over its servers
        failed_in_row = 0
        while not self._stop.is_set():
            self._server = self._servers[index]
            channel = channels.get(self._server)
            if channel is None:
                channel = channels[self._server] = open_channel(self._server, self._credentials)
            registrations = self._registrations
            try:
                end = await self._session(channel, backoff)
            except _RegistrationRejected:
                raise
            except Exception as exc:
                why = f"stream to {self._server} failed ({_describe(exc)})"
            else:
                if end is End.STOPPED:
                    return
                if end is End.DRAINED:
                    # The server is going away: another one takes over at once.
                    index = (index + 1) % count
                    _LOG.info("plait worker: server drained the stream; reconnecting")
                    continue
                why = f"server {self._server} closed the stream"
            if self._registrations != registrations:
                failed_in_row = 0  # it served: a new round of the addresses starts
            failed_in_row += 1
            index = (index + 1) % count
            if failed_in_row < count:
                _LOG.warning("plait worker: %s; moving to %s now", why, self._servers[index])
                continue
            failed_in_row = 0
            delay_s = backoff.next_s()
            _LOG.warning("plait worker: %s; reconnecting in %.2fs", why, delay_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay_s)

    async def _session(self, channel: grpc.aio.Channel, backoff: Backoff) -> End:
        stream = Stream(channel, self._metadata)
        try:
            registered = await self._register(stream)
            backoff.reset()
            self._registrations += 1
            _LOG.info(
                "plait worker: app %r registered with %s (connection %s, %d functions)",
                self._app.id,
                self._server,
                registered.connection_id,
                len(registered.function_ids),
            )
            session = Session(
                self._app,
                stream,
                registered,
                self._max_concurrent_jobs,
                self._stop,
                self._grace_s,
            )
            return await session.serve()
        finally:
            stream.cancel()

    async def _register(self, stream: Stream) -> Registered:
        register = Register(
            app_id=self._app.id,
            functions=self._app._specs(),
            sdk_version=__version__,
            max_concurrent_jobs=self._max_concurrent_jobs,
            instance_id=self._instance_id,
        )
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await stream.send(register)
            async with asyncio.timeout(REGISTER_TIMEOUT_S):
                reply = await stream.receive()
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _FATAL_CODES:
                raise _RegistrationRejected(
                    f"server {self._server} rejected app {self._app.id!r}: "
                    f"{exc.code().name}: {exc.details()}"
                ) from exc
            raise
        if not isinstance(reply, Registered):
            what = "ended the stream" if reply is None else f"sent {type(reply).__name__}"
            raise ConnectionError(f"server {self._server} {what} instead of registered")
        return reply


class _RegistrationRejected(RuntimeError):
    """The server refused the registration for a reason reconnecting cannot fix."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
