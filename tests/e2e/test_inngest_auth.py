"""Production mode: registrations and the REST API need the signing key, events a known
event key; a wrong one gets the Inngest server's 401."""

from __future__ import annotations

from pathlib import Path

from ulid import ULID

from server.drivers.http.signing import hashed_key
from tests.e2e.conftest import running_server
from tests.e2e.harness import settings_for
from tests.e2e.test_inngest_gateway import PY_BODY, call

KEY = "signkey-test-" + "c0de" * 16


async def test_production_needs_the_signing_key_and_a_known_event_key(
    tmp_path: Path, redis_url: str, database_url: str,
) -> None:
    settings = settings_for("production", tmp_path, redis_url, database_url, signing_key=KEY,
                            event_keys="k1,k2")
    async with running_server(settings) as plait:
        anonymous = await call(plait, "POST", "/fn/register", json=PY_BODY)
        assert anonymous.status_code == 401 and "authorization" in anonymous.json()["error"]
        wrong = await call(plait, "POST", "/fn/register", json=PY_BODY,
                            headers={"Authorization": "Bearer " + "00" * 32})
        assert wrong.status_code == 401
        kind = await call(plait, "POST", "/fn/register", json=PY_BODY,
                           headers={"Authorization": f"Bearer {KEY}",
                                    "X-Inngest-Expected-Server-Kind": "dev"})
        assert kind.status_code == 400
        ok = await call(plait, "POST", "/fn/register", json=PY_BODY,
                         headers={"Authorization": f"Bearer {hashed_key(KEY)}",
                                  "X-Inngest-Expected-Server-Kind": "cloud"})
        assert ok.status_code == 200, ok.text
        runs = await call(plait, "GET", f"/v1/events/{ULID()}/runs")
        assert runs.status_code == 401
        bad_key = await call(plait, "POST", "/e/k3", json={"name": "gw/x"})
        assert bad_key.status_code == 401
        assert bad_key.json() == {"ids": [], "status": 401, "message": "",
                                  "error": "Event key not found"}
        good_key = await call(plait, "POST", "/e/k2", json={"name": "gw/x"})
        assert good_key.status_code == 200 and len(good_key.json()["ids"]) == 1
