"""TLS on both ports with real TLS clients: the Python SDK worker end to end over gRPC, httpx
over HTTPS to /health and POST /e/{key}, and mutual TLS refusing a client without a certificate."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from plait import App, Context, Step, TriggerEvent, Worker
from plait_proto.v1 import (
    event_pb2,
    event_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
    run_pb2,
)

from server.app import PlaitServer
from server.config import Mode, Settings
from server.errors import ConfigError
from tests.compat.apps import TERMINAL, sdk_env, start_app
from tests.e2e.conftest import Running, running_server
from tests.e2e.harness import eventually, free_port

SIGNING_KEY = "signkey-test-" + "7c" * 16
ADMIN = (("authorization", "Bearer admin-1"),)


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_pem: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("worker.example")
    paths = Pki(ca, tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key",
                tmp_path / "client.pem", tmp_path / "client.key")
    ca.cert_pem.write_to_path(str(paths.ca_pem))
    for cert, chain, key in ((server, paths.server_cert, paths.server_key),
                             (client, paths.client_cert, paths.client_key)):
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
    return paths


def tls_settings(settings: Settings, pki: Pki, *, mutual: bool = False) -> Settings:
    return dataclasses.replace(
        settings, insecure=False, signing_key=SIGNING_KEY, grpc_tokens="worker-1",
        admin_tokens="admin-1", tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca_pem) if mutual else "")


def channel_credentials(pki: Pki, *, with_cert: bool) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_pem.read_bytes(),
        private_key=pki.client_key.read_bytes() if with_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if with_cert else None)


def https_context(pki: Pki, *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_pem))
    if with_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


async def run_over_tls(plait: Running, pki: Pki, *, with_cert: bool) -> None:
    """A TLS worker registers and runs a function the event (sent over HTTPS) triggers."""
    target = f"127.0.0.1:{plait.endpoints.grpc_port}"
    app = App("tls")

    @app.function("f", trigger=TriggerEvent("tls/go"))
    async def f(ctx: Context, step: Step) -> dict[str, object]:
        n = await step.run("double", lambda: ctx.event.data["n"] * 2)
        return {"n": n}

    cert = {"tls_cert": pki.client_cert, "tls_key": pki.client_key} if with_cert else {}
    worker = Worker(app, server=target, token="worker-1", shutdown_grace_s=1,
                    tls_ca=pki.ca_pem, **cert)
    channel = grpc.aio.secure_channel(target, channel_credentials(pki, with_cert=with_cert))
    management = management_pb2_grpc.ManagementServiceStub(channel)
    task = asyncio.create_task(worker.arun())
    try:
        async def listed() -> set[str]:
            reply = await management.ListFunctions(management_pb2.ListFunctionsRequest(),
                                                   metadata=ADMIN)
            return {fn.id for fn in reply.functions}

        await eventually(listed, lambda ids: "tls-f" in ids, 20, "the TLS worker's registration")
        base = f"https://127.0.0.1:{plait.endpoints.http_port}"
        async with httpx.AsyncClient(verify=https_context(pki, with_cert=with_cert),
                                     timeout=30) as http:
            assert (await http.get(f"{base}/health")).json()["status"] == "ok"
            posted = await http.post(f"{base}/e/key", json={"name": "tls/go", "data": {"n": 21}})
            assert posted.status_code == 200, posted.text
            (event_id,) = posted.json()["ids"]

        async def runs() -> list[run_pb2.Run]:
            try:
                reply = await management.GetEvent(
                    management_pb2.GetEventRequest(event_id=event_id), metadata=ADMIN)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return []
                raise
            return list(reply.runs)

        done = await eventually(
            runs, lambda rs: bool(rs) and rs[0].status == run_pb2.RUN_STATUS_COMPLETED, 20,
            "the run over TLS")
        assert json.loads(done[0].output_json) == {"n": 42}
    finally:
        await worker.stop()
        await task
        await channel.close()


async def test_a_tls_worker_and_https_events_run_end_to_end(settings: Settings, pki: Pki) -> None:
    async with running_server(tls_settings(settings, pki)) as plait:
        await run_over_tls(plait, pki, with_cert=False)


async def test_plain_text_clients_are_not_served_on_tls_ports(
    settings: Settings, pki: Pki,
) -> None:
    async with running_server(tls_settings(settings, pki)) as plait:
        events = event_pb2_grpc.EventServiceStub(plait.client.channel)  # a plain-text channel
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await events.SendEvents(event_pb2.SendEventsRequest(
                events=[event_pb2.EventInput(name="x")]), metadata=ADMIN, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        async with httpx.AsyncClient(timeout=10) as http:
            with pytest.raises(httpx.HTTPError):
                await http.get(f"http://127.0.0.1:{plait.endpoints.http_port}/health")
        async with httpx.AsyncClient(timeout=10) as http:  # the system's roots: not our CA
            with pytest.raises(httpx.ConnectError):
                await http.get(f"https://127.0.0.1:{plait.endpoints.http_port}/health")


async def test_mutual_tls_serves_a_client_with_a_certificate_end_to_end(
    settings: Settings, pki: Pki,
) -> None:
    async with running_server(tls_settings(settings, pki, mutual=True)) as plait:
        await run_over_tls(plait, pki, with_cert=True)


async def test_mutual_tls_refuses_clients_without_a_certificate(
    settings: Settings, pki: Pki,
) -> None:
    async with running_server(tls_settings(settings, pki, mutual=True)) as plait:
        target = f"127.0.0.1:{plait.endpoints.grpc_port}"
        async with grpc.aio.secure_channel(
                target, channel_credentials(pki, with_cert=False)) as channel:
            events = event_pb2_grpc.EventServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await events.SendEvents(event_pb2.SendEventsRequest(
                    events=[event_pb2.EventInput(name="x")]), metadata=ADMIN, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        async with httpx.AsyncClient(verify=https_context(pki, with_cert=False),
                                     timeout=10) as http:
            with pytest.raises(httpx.HTTPError):
                await http.get(f"https://127.0.0.1:{plait.endpoints.http_port}/health")
        # Another CA's client certificate is refused too.
        stranger = trustme.CA().issue_cert("stranger.example")
        context = https_context(pki, with_cert=False)
        with stranger.private_key_and_cert_chain_pem.tempfile() as both:
            context.load_cert_chain(both)
        async with httpx.AsyncClient(verify=context, timeout=10) as http:
            with pytest.raises(httpx.HTTPError):
                await http.get(f"https://127.0.0.1:{plait.endpoints.http_port}/health")


async def test_an_unreadable_certificate_is_a_config_error_naming_the_flag(
    settings: Settings, pki: Pki, tmp_path: Path,
) -> None:
    broken = dataclasses.replace(tls_settings(settings, pki), tls_key=str(tmp_path / "nope.key"))
    server = PlaitServer(broken)
    with pytest.raises(ConfigError, match="--tls-key has value"):
        await server.start()
    await server.stop(grace_s=1)


def test_the_worker_refuses_half_a_client_certificate(pki: Pki) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        Worker(App("x"), tls_ca=pki.ca_pem, tls_cert=pki.client_cert)
    with pytest.raises(ValueError, match="tls_ca has value"):
        Worker(App("x"), tls_ca=pki.ca_pem.with_name("missing.pem"))


async def test_an_inngest_sdk_app_runs_end_to_end_against_a_tls_server(
    settings: Settings, pki: Pki, tmp_path: Path,
) -> None:
    """The official Python SDK, unchanged, sends its events to Plait over HTTPS (trusting the
    CA through SSL_CERT_FILE); Plait calls it and checks its signed answers."""
    if settings.mode is not Mode.PRODUCTION:
        pytest.skip("the signing key and event key make this a production test")
    http_port = free_port()
    env = {**sdk_env(http_port, SIGNING_KEY, "key"),
           "INNGEST_BASE_URL": f"https://127.0.0.1:{http_port}", "SSL_CERT_FILE": str(pki.ca_pem)}
    app = await start_app("py", env, tmp_path)
    secured = dataclasses.replace(tls_settings(settings, pki), http_port=http_port,
                                  sdk_urls=app.url)
    base = f"https://127.0.0.1:{http_port}"
    headers = {"Authorization": f"Bearer {SIGNING_KEY}"}
    try:
        async with running_server(secured), httpx.AsyncClient(
                verify=https_context(pki, with_cert=False), headers=headers, timeout=30) as http:
            async def functions() -> set[str]:
                return {f["id"] for f in (await http.get(f"{base}/dev")).json()["functions"]}

            await eventually(functions, lambda ids: f"{app.app_id}-sequential" in ids, 30,
                             "the SDK app's registration")
            sent = await app.send(app.event("sequential"), {"key": "tls"})
            assert sent.status_code == 200, sent.text
            (event_id,) = sent.json()["ids"]

            async def runs() -> list[dict[str, object]]:
                reply = await http.get(f"{base}/v1/events/{event_id}/runs")
                return list(reply.json()["data"])

            (run,) = await eventually(
                runs, lambda rs: len(rs) == 1 and rs[0]["status"] in TERMINAL, 30,
                "the SDK app's run")
            assert run["status"] == "Completed", run
            assert run["output"]["steps"] == [1, 2, 3]  # type: ignore[index]
    finally:
        app.stop()
