"""One frozen Settings object: command-line flags, then PLAIT_* environment, then defaults.

Nothing else in the server reads os.environ; settings are validated before anything connects.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from server.errors import ConfigError


class Mode(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


@dataclass(frozen=True, slots=True)
class Settings:
    mode: Mode = Mode.DEV
    http_host: str = "127.0.0.1"
    http_port: int = 8288
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    # Dev mode keeps its private Redis and SQLite here.
    data_dir: Path = Path(".plait")
    # Production: required. Dev: empty means the private Redis / SQLite under data_dir.
    redis_url: str = ""
    database_url: str = ""
    queue_shards: int = 1
    # Names this process in Redis consumer groups. Keep it stable across restarts (the default
    # is the host name) so a restarted process picks up the stream entries it had in hand.
    instance_id: str = ""
    lease_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    default_retries: int = 3
    backoff_base_ms: int = 1_000
    backoff_max_ms: int = 300_000
    max_event_bytes: int = 512 * 1024
    max_events_per_request: int = 5_000
    max_request_bytes: int = 4 * 1024 * 1024
    max_step_output_bytes: int = 4 * 1024 * 1024
    # How long a finished run's state stays in Redis (history keeps it for good).
    finished_run_ttl_s: int = 24 * 3600
    # What this process does (comma-separated): api (HTTP, EventService, ManagementService,
    # StateService), executor (worker streams, leasing), runner (event stream), history,
    # scheduler (cron triggers).
    roles: str = "api,executor,runner,history,scheduler"
    # Comma-separated bearer tokens; when set, every gRPC call must carry one.
    grpc_tokens: str = ""
    # Apps on the Inngest SDKs (HTTP gateway): comma-separated serve URLs synced at start
    # (`plait dev -u URL`, repeatable), and discovery of apps on the usual local ports (dev).
    sdk_urls: str = ""
    sdk_discovery: bool = True
    # Most requests in flight to one SDK app, and how long one may take.
    sdk_concurrency: int = 32
    sdk_request_timeout_s: int = 300
    # Production: requests to SDK apps are signed with the signing key, their responses and
    # registrations are checked against it (or the fallback, during a rotation), and
    # POST /e/{key} accepts only these comma-separated event keys.
    signing_key: str = ""
    signing_key_fallback: str = ""
    event_keys: str = ""
    log_format: str = "console"
    log_level: str = "info"
    # Reliability (issue 11). A role loop that fails is restarted with backoff; storage
    # (Redis, SQL) unreachable for longer than this ends the process (0: never).
    storage_grace_s: int = 300
    # A job handed back without an answer (worker gone, driver error, lease expiry) is
    # redelivered at most this many times, spaced from redelivery_backoff_ms (doubling, capped
    # at backoff_max_ms); past the cap its run fails saying why.
    max_redeliveries: int = 20
    redelivery_backoff_ms: int = 200
    # A run's memoised state (step outputs, errors) may total at most this many bytes.
    max_run_state_bytes: int = 64 * 1024 * 1024
    # A step or run error's message and stack are cut to this many bytes each.
    max_error_bytes: int = 64 * 1024
    # fsync: an acknowledged event or step result is on disk (embedded Redis appendfsync
    # always, SQLite synchronous=FULL; production checks Redis' own setting). relaxed: about a
    # second of acknowledged work can be lost in a power cut, for more throughput.
    durability: str = "fsync"
    # Security (issue 11). Production refuses to start without gRPC tokens, event keys and a
    # signing key unless insecure is set.
    insecure: bool = False
    # TLS for the gRPC and HTTP ports (PEM files); a client CA turns on mutual TLS.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Comma-separated admin tokens: management calls (cancel, replay, pause, reading runs)
    # need one; worker tokens (grpc_tokens) may only connect workers and send events.
    admin_tokens: str = ""
    # GET /metrics needs `Authorization: Bearer <metrics_token>` in production (empty: an
    # admin token).
    metrics_token: str = ""
    # Dev mode syncs Inngest SDK apps only on loopback addresses unless this is set.
    allow_remote_sync: bool = False
    # HTTP: seconds allowed for a request's headers and for its body, and the most
    # connections served at once.
    http_header_timeout_s: int = 10
    http_body_timeout_s: int = 30
    http_max_connections: int = 1024
    # OpenTelemetry (server/telemetry/). Each otel_* setting also reads its standard variable
    # (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT, ...) below the PLAIT_-prefixed one. An
    # OTLP endpoint, a service name or OTEL_TRACES_EXPORTER=otlp turns span export on;
    # OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none keeps it off.
    otel_service_name: str = ""
    otel_resource_attributes: str = ""
    otel_traces_exporter: str = ""
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_traces_endpoint: str = ""
    otel_exporter_otlp_protocol: str = ""
    otel_exporter_otlp_traces_protocol: str = ""
    otel_exporter_otlp_headers: str = ""
    otel_exporter_otlp_traces_headers: str = ""
    otel_exporter_otlp_insecure: str = ""
    otel_exporter_otlp_compression: str = ""
    # Milliseconds, as the OpenTelemetry specification defines it.
    otel_exporter_otlp_timeout: int = 10_000
    otel_traces_sampler: str = ""
    otel_traces_sampler_arg: str = ""
    otel_sdk_disabled: str = ""

    @property
    def sdk_url_list(self) -> list[str]:
        return [u.strip() for u in self.sdk_urls.split(",") if u.strip()]

    @property
    def event_key_list(self) -> list[str]:
        return [k.strip() for k in self.event_keys.split(",") if k.strip()]

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    @property
    def grpc_token_list(self) -> list[str]:
        return [t.strip() for t in self.grpc_tokens.split(",") if t.strip()]

    @property
    def admin_token_list(self) -> list[str]:
        return [t.strip() for t in self.admin_tokens.split(",") if t.strip()]

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'plait.db').resolve()}"


_ENV_PREFIX = "PLAIT_"
ROLES = frozenset({"api", "executor", "runner", "history", "scheduler"})


def _coerce(name: str, source: str, raw: Any, kind: Any) -> Any:
    if raw is None:
        return None
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (Path, "Path"):
            return Path(raw)
        if kind in (Mode, "Mode"):
            return Mode(raw)
        if kind in (bool, "bool"):
            return _bool(raw)
        return str(raw)
    except ValueError:
        raise ConfigError(f"{source} has value {raw!r}: not a valid {name} setting") from None


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


_SIGNING_KEY = re.compile(r"^(signkey-\w+-)?([0-9a-fA-F]{2})+\Z")


def load_settings(
    flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Builds Settings from flags (None = not given) over PLAIT_* env over defaults; otel_*
    settings also read OTEL_* env, below PLAIT_OTEL_*."""
    flags = flags or {}
    env = env or {}
    values: dict[str, Any] = {}
    for f in fields(Settings):
        flag = flags.get(f.name)
        if flag is not None:
            values[f.name] = _coerce(f.name, f"--{f.name.replace('_', '-')}", flag, f.type)
            continue
        var = _ENV_PREFIX + f.name.upper()
        if var in env and env[var] != "":
            values[f.name] = _coerce(f.name, var, env[var], f.type)
            continue
        # OpenTelemetry's own variables (OTEL_EXPORTER_OTLP_ENDPOINT, ...) work as everywhere.
        standard = f.name.upper()
        if f.name.startswith("otel_") and env.get(standard, "") != "":
            values[f.name] = _coerce(f.name, standard, env[standard], f.type)
    settings = dataclasses.replace(Settings(), **values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.mode is Mode.PRODUCTION:
        if not s.redis_url:
            raise ConfigError("--redis-url (PLAIT_REDIS_URL) is required by `plait start`")
        if not s.database_url:
            raise ConfigError("--database-url (PLAIT_DATABASE_URL) is required by `plait start`")
    refuse_if_insecure(s)
    _validate_tokens(s)
    for name in ("http_port", "grpc_port"):
        port = getattr(s, name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"--{name.replace('_', '-')} has value {port}: not a port")
    if s.queue_shards < 1 or s.queue_shards > 1024:
        raise ConfigError(f"--queue-shards has value {s.queue_shards}: must be 1..1024")
    if s.lease_ms < 1000:
        raise ConfigError(f"--lease-ms has value {s.lease_ms}: must be at least 1000")
    if s.heartbeat_interval_ms * 2 > s.lease_ms:
        raise ConfigError("--heartbeat-interval-ms must be at most half of --lease-ms")
    unknown = s.role_set - ROLES
    if unknown or not s.role_set:
        raise ConfigError(
            f"--roles has value {s.roles!r}: use a comma-separated subset of "
            f"{', '.join(sorted(ROLES))}")
    for name in ("signing_key", "signing_key_fallback"):
        key = getattr(s, name)
        if key and not _SIGNING_KEY.match(key):
            raise ConfigError(
                f"--{name.replace('_', '-')} has a value that is not a signing key: "
                "use signkey-<env>-<hex> or the hex alone")
    if s.sdk_concurrency < 1 or s.sdk_request_timeout_s < 1:
        raise ConfigError("--sdk-concurrency and --sdk-request-timeout-s must be at least 1")
    if s.durability not in ("fsync", "relaxed"):
        raise ConfigError(f"--durability has value {s.durability!r}: use fsync or relaxed")
    for name in ("max_redeliveries", "redelivery_backoff_ms", "max_run_state_bytes",
                 "max_error_bytes", "http_header_timeout_s", "http_body_timeout_s",
                 "http_max_connections"):
        if getattr(s, name) < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')} has value {getattr(s, name)}: must be at least 1")
    if s.storage_grace_s < 0:
        raise ConfigError(f"--storage-grace-s has value {s.storage_grace_s}: must not be negative")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    if s.tls_client_ca and not s.tls_cert:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    if s.log_format not in ("console", "json"):
        raise ConfigError(f"--log-format has value {s.log_format!r}: use console or json")
    _validate_otel(s)
    if s.database_url and not s.database_url.startswith(
        ("postgresql+asyncpg://", "sqlite+aiosqlite://")
    ):
        raise ConfigError(
            f"--database-url has value {s.database_url!r}: "
            "use postgresql+asyncpg://… or sqlite+aiosqlite:///…"
        )


def missing_security(s: Settings) -> list[str]:
    """The flags production needs for a secure start that `s` lacks (none with --insecure)."""
    if s.mode is not Mode.PRODUCTION or s.insecure:
        return []
    needed = [("--grpc-tokens", "PLAIT_GRPC_TOKENS", s.grpc_token_list),
              ("--event-key", "PLAIT_EVENT_KEYS", s.event_key_list),
              ("--signing-key", "PLAIT_SIGNING_KEY", s.signing_key)]
    return [f"{flag} ({var})" for flag, var, value in needed if not value]


def refuse_if_insecure(s: Settings) -> None:
    """`plait start` serves nothing open by accident: it needs worker tokens, event keys and a
    signing key, or an explicit --insecure."""
    missing = missing_security(s)
    if missing:
        raise ConfigError(
            f"`plait start` refuses to run unauthenticated: set {', '.join(missing)}, "
            "or pass --insecure (PLAIT_INSECURE=1) to serve gRPC and events without them")


def _validate_tokens(s: Settings) -> None:
    # A worker token may name the apps it serves: `token@app1|app2` (server/api/auth.py).
    for entry in s.grpc_token_list:
        token, at, apps = entry.partition("@")
        if not token.strip() or (at and not [a for a in apps.split("|") if a.strip()]):
            raise ConfigError(
                "--grpc-tokens has an entry that is not `token` or `token@app1|app2`")
    for token in s.admin_token_list:
        if "@" in token:
            raise ConfigError("--admin-tokens: an admin token serves every app; drop its @apps")


_OTEL_CHOICES: dict[str, tuple[str, ...]] = {
    "otel_traces_exporter": ("", "otlp", "none"),
    "otel_exporter_otlp_protocol": ("", "grpc", "http/protobuf"),
    "otel_exporter_otlp_traces_protocol": ("", "grpc", "http/protobuf"),
    "otel_exporter_otlp_insecure": ("", "true", "false"),
    "otel_exporter_otlp_compression": ("", "gzip", "none"),
    "otel_sdk_disabled": ("", "true", "false"),
    "otel_traces_sampler": (
        "", "always_on", "always_off", "traceidratio", "parentbased_always_on",
        "parentbased_always_off", "parentbased_traceidratio"),
}


def _otel_source(name: str) -> str:
    return f"--{name.replace('_', '-')} ({name.upper()})"


def _validate_otel(s: Settings) -> None:
    for name, choices in _OTEL_CHOICES.items():
        value = getattr(s, name)
        if value.lower() not in choices:
            raise ConfigError(
                f"{_otel_source(name)} has value {value!r}: use one of "
                f"{', '.join(c for c in choices if c)}")
    for name in ("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint"):
        value = getattr(s, name)
        scheme, sep, rest = value.partition("://")
        if value and ((sep and scheme not in ("http", "https")) or not (rest if sep else value)):
            raise ConfigError(
                f"{_otel_source(name)} has value {value!r}: use http(s)://host:port[/path] "
                "or host:port")
    if s.otel_exporter_otlp_timeout <= 0:
        raise ConfigError(
            f"{_otel_source('otel_exporter_otlp_timeout')} has value "
            f"{s.otel_exporter_otlp_timeout}: must be a positive number of milliseconds")
    if s.otel_traces_sampler_arg:
        try:
            ratio = float(s.otel_traces_sampler_arg)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(
                f"{_otel_source('otel_traces_sampler_arg')} has value "
                f"{s.otel_traces_sampler_arg!r}: use a ratio between 0 and 1")
    for name in ("otel_resource_attributes", "otel_exporter_otlp_headers",
                 "otel_exporter_otlp_traces_headers"):
        for pair in filter(None, (p.strip() for p in getattr(s, name).split(","))):
            if "=" not in pair or not pair.split("=", 1)[0].strip():
                raise ConfigError(
                    f"{_otel_source(name)} has an entry {pair!r}: use key=value pairs "
                    "separated by commas")
