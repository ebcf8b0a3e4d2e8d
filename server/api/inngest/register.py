"""POST /fn/register: an Inngest SDK app registers its functions (out-of-band sync).

The py and js SDKs send slightly different bodies (`appname`/`appName`,
`deploy_type`/`deployType`); both map onto one AppRegistration whose functions carry the URL
the app serves them at, which is what routes their jobs to the HTTP driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from server.api.inngest.flow import flow_from_sdk
from server.durations import duration_ms
from server.errors import InvalidArgument
from server.runner.flow_rules import SDK_NAMES, validate_flow
from server.types import (
    AppId,
    AppRegistration,
    CancelOn,
    CronTrigger,
    EventTrigger,
    FunctionConfig,
    FunctionId,
    Trigger,
)

_SDK = re.compile(r"^(?P<lang>[a-z]+):v?(?P<version>[\w.+-]+)\Z")


@dataclass(frozen=True, slots=True)
class Registration:
    registration: AppRegistration
    url: str  # the app's serve URL, as the SDK sees it


def _str(raw: dict[str, Any], key: str, at: str, required: bool = True) -> str:
    value = raw.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidArgument(f"{at}{key}", "must be a non-empty string")
    return value


def http_url(value: str, field: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:  # `http://[::1`: an unclosed IPv6 bracket
        raise InvalidArgument(field, f"{value!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(field, f"{value!r} is not an http(s) URL")
    return value


def _trigger(raw: Any, at: str) -> Trigger:
    if not isinstance(raw, dict):
        raise InvalidArgument(at, "must be an object with `event` or `cron`")
    if "cron" in raw:
        return CronTrigger(_str(raw, "cron", f"{at}."))
    event = _str(raw, "event", f"{at}.")
    expression = raw.get("expression")
    if expression is not None and not isinstance(expression, str):
        raise InvalidArgument(f"{at}.expression", "must be a string")
    return EventTrigger(event, expression or "")


def _retries(step: dict[str, Any], at: str, default: int) -> int:
    retries = step.get("retries")
    if retries is None:
        return default
    if not isinstance(retries, dict):
        raise InvalidArgument(f"{at}.retries", "must be an object with `attempts`")
    attempts = retries.get("attempts", default)
    if not isinstance(attempts, int) or isinstance(attempts, bool):
        raise InvalidArgument(f"{at}.retries.attempts", "must be an integer")
    return attempts


def _timeouts(raw: dict[str, Any], at: str) -> tuple[int, int]:
    """`timeouts: {start?, finish?}` as durations ("10s", "1h"); (start_ms, finish_ms), 0: none."""
    timeouts = raw.get("timeouts")
    if timeouts is None:
        return 0, 0
    if not isinstance(timeouts, dict):
        raise InvalidArgument(f"{at}.timeouts", "must be an object with `start` and/or `finish`")
    out = []
    for key in ("start", "finish"):
        value = timeouts.get(key)
        if value is None or value == "":
            out.append(0)
            continue
        ms = duration_ms(value) if isinstance(value, str) else None
        if not ms:
            raise InvalidArgument(f"{at}.timeouts.{key}",
                                  f"{value!r} is not a positive duration such as '10s' or '1h'")
        out.append(ms)
    return out[0], out[1]


MAX_CANCEL_ON = 10


def _cancel_on(raw: dict[str, Any], at: str) -> tuple[CancelOn, ...]:
    """`cancel: [{event, if?, timeout?}]` (js `cancelOn`, py `cancel`); timeouts are
    durations ("1h") counted from the run's creation."""
    items = raw.get("cancel")
    if items is None:
        return ()
    if not isinstance(items, list) or len(items) > MAX_CANCEL_ON:
        raise InvalidArgument(f"{at}.cancel", f"must be a list of at most {MAX_CANCEL_ON}")
    out = []
    for k, item in enumerate(items):
        where = f"{at}.cancel[{k}]"
        if not isinstance(item, dict):
            raise InvalidArgument(where, "must be an object with `event`")
        event = _str(item, "event", f"{where}.")
        expression = item.get("if") or ""
        if not isinstance(expression, str):
            raise InvalidArgument(f"{where}.if", "must be a CEL expression")
        timeout = item.get("timeout")
        timeout_ms: int | None = 0
        if timeout is not None:
            timeout_ms = duration_ms(timeout) if isinstance(timeout, str) else None
            if not timeout_ms:
                raise InvalidArgument(f"{where}.timeout",
                                      f"{timeout!r} is not a positive duration such as '1h'")
        out.append(CancelOn(event, expression, timeout_ms or 0))
    return tuple(out)


def _function(raw: Any, app_id: AppId, at: str, default_retries: int) -> FunctionConfig:
    if not isinstance(raw, dict):
        raise InvalidArgument(at, "must be an object")
    full_id = _str(raw, "id", f"{at}.")
    # The SDKs send fully qualified ids, "<app>-<function>"; Plait's global id is the same.
    prefix = f"{app_id}-"
    slug = full_id[len(prefix):] if full_id.startswith(prefix) else full_id
    triggers = raw.get("triggers")
    if not isinstance(triggers, list):
        raise InvalidArgument(f"{at}.triggers", "must be a list")
    steps = raw.get("steps")
    if not isinstance(steps, dict) or not steps:
        raise InvalidArgument(f"{at}.steps", "must be an object with a `step` entry")
    step = steps.get("step", next(iter(steps.values())))
    if not isinstance(step, dict):
        raise InvalidArgument(f"{at}.steps.step", "must be an object")
    runtime = step.get("runtime")
    if not isinstance(runtime, dict):
        raise InvalidArgument(f"{at}.steps.step.runtime", "must be an object with `url`")
    kind = runtime.get("type", "http")
    if kind != "http":
        raise InvalidArgument(f"{at}.steps.step.runtime.type",
                              f"{kind!r} is not supported; serve the app over http")
    url = http_url(_str(runtime, "url", f"{at}.steps.step.runtime."),
                   f"{at}.steps.step.runtime.url")
    name = raw.get("name")
    start_ms, finish_ms = _timeouts(raw, at)
    config = FunctionConfig(
        id=FunctionId(f"{app_id}-{slug}"), app_id=app_id, slug=slug,
        name=name if isinstance(name, str) and name else slug,
        triggers=tuple(_trigger(t, f"{at}.triggers[{j}]") for j, t in enumerate(triggers)),
        retries=_retries(step, f"{at}.steps.step", default_retries),
        url=url,
        start_timeout_ms=start_ms,
        finish_timeout_ms=finish_ms,
        cancel_on=_cancel_on(raw, at),
        flow=flow_from_sdk(raw, at),
    )
    # Checked again by the registry, here in the SDK's words (`rateLimit.period`).
    validate_flow(config, at, names=SDK_NAMES)
    return config


def parse_registration(body: Any, default_retries: int) -> Registration:
    """The register body of either SDK as an AppRegistration; InvalidArgument names the field."""
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a JSON object")
    app_name = body.get("appName", body.get("appname"))
    if not isinstance(app_name, str) or not app_name:
        raise InvalidArgument("appName", "must be a non-empty string (appName or appname)")
    app_id = AppId(app_name)
    url = http_url(_str(body, "url", ""), "url")
    functions = body.get("functions")
    if not isinstance(functions, list):
        raise InvalidArgument("functions", "must be a list")
    sdk = body.get("sdk")
    language, version = "", ""
    if isinstance(sdk, str) and (match := _SDK.match(sdk)):
        language, version = match["lang"], match["version"]
    configs = tuple(_function(f, app_id, f"functions[{i}]", default_retries)
                    for i, f in enumerate(functions))
    return Registration(
        AppRegistration(app_id, configs, language=language,
                        sdk_name=f"inngest-{language}" if language else "inngest",
                        sdk_version=version),
        url)
