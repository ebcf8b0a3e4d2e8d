"""One frozen Settings object: command-line flags, then PLAIT_* environment, then defaults.

Nothing else in the server reads os.environ; settings are validated before anything connects.
"""

from __future__ import annotations

import dataclasses
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
    # StateService), executor (worker streams, leasing), runner (event stream), history.
    roles: str = "api,executor,runner,history"
    # Comma-separated bearer tokens; when set, every gRPC call must carry one.
    grpc_tokens: str = ""
    log_format: str = "console"
    log_level: str = "info"

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    @property
    def grpc_token_list(self) -> list[str]:
        return [t.strip() for t in self.grpc_tokens.split(",") if t.strip()]

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'plait.db').resolve()}"


_ENV_PREFIX = "PLAIT_"
ROLES = frozenset({"api", "executor", "runner", "history"})


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
        return str(raw)
    except ValueError:
        raise ConfigError(f"{source} has value {raw!r}: not a valid {name} setting") from None


def load_settings(
    flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Builds Settings from flags (None = not given) over PLAIT_* env over defaults."""
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
    settings = dataclasses.replace(Settings(), **values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.mode is Mode.PRODUCTION:
        if not s.redis_url:
            raise ConfigError("--redis-url (PLAIT_REDIS_URL) is required by `plait start`")
        if not s.database_url:
            raise ConfigError("--database-url (PLAIT_DATABASE_URL) is required by `plait start`")
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
    if s.log_format not in ("console", "json"):
        raise ConfigError(f"--log-format has value {s.log_format!r}: use console or json")
    if s.database_url and not s.database_url.startswith(
        ("postgresql+asyncpg://", "sqlite+aiosqlite://")
    ):
        raise ConfigError(
            f"--database-url has value {s.database_url!r}: "
            "use postgresql+asyncpg://… or sqlite+aiosqlite:///…"
        )
