"""HTTP event API: POST /e/{event_key} with a JSON event object or array of events."""

from __future__ import annotations

import dataclasses
import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from server import canonjson
from server.config import Mode, Settings
from server.errors import InvalidArgument, PlaitError, http_status
from server.events.ingest import EventIngest, EventInput
from server.events.seed import HEADER as SEED_HEADER
from server.events.seed import seeded_ids


def _input(i: int, raw: Any) -> EventInput:
    at = f"events[{i}]"
    if not isinstance(raw, dict):
        raise InvalidArgument(at, "must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str):
        raise InvalidArgument(f"{at}.name", "must be a string")
    data = raw.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidArgument(f"{at}.data", "must be a JSON object")
    ts = raw.get("ts", 0) or 0
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise InvalidArgument(f"{at}.ts", "must be an integer (Unix ms)")
    key = raw.get("id", "") or ""
    if not isinstance(key, str):
        raise InvalidArgument(f"{at}.id", "must be a string")
    return EventInput(name=name, data_json=canonjson.dumps(data, f"{at}.data"),
                      ts_ms=ts, idempotency_key=key)


class EventRoutes:
    def __init__(self, ingest: EventIngest, settings: Settings) -> None:
        self._ingest = ingest
        self._settings = settings

    def _key_known(self, key: str) -> bool:
        """Production accepts only the configured event keys; dev mode accepts any."""
        if self._settings.mode is not Mode.PRODUCTION:
            return True
        return any(hmac.compare_digest(key.encode(), known.encode())
                   for known in self._settings.event_key_list)

    async def post_events(self, request: Request) -> JSONResponse:
        if not self._key_known(request.path_params["event_key"]):
            # The Inngest server's answer, which both SDKs turn into an error for the sender.
            return JSONResponse(
                {"ids": [], "status": 401, "message": "", "error": "Event key not found"}, 401)
        try:
            body = await request.body()
            if len(body) > self._settings.max_request_bytes:
                raise InvalidArgument(
                    "body", f"{len(body)} bytes is over the limit of "
                    f"{self._settings.max_request_bytes}")
            # Two levels for the array and the event around its data; integers too big for
            # JSON's safe range are refused by the ingest, naming their field.
            parsed = canonjson.loads(body, "body", max_depth=canonjson.MAX_DEPTH + 2,
                                     big_ints=True)
            raws = parsed if isinstance(parsed, list) else [parsed]
            inputs = [_input(i, r) for i, r in enumerate(raws)]
            seed = request.headers.get(SEED_HEADER)
            if seed:
                inputs = [dataclasses.replace(item, id=event_id) for item, event_id
                          in zip(inputs, seeded_ids(seed, len(inputs)), strict=True)]
            ids = await self._ingest.accept(
                inputs, traceparent=request.headers.get("traceparent", ""))
        except PlaitError as e:
            status = http_status(e)
            return JSONResponse({"ids": [], "status": status, "error": e.message}, status)
        return JSONResponse({"ids": ids, "status": 200})
