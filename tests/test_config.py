"""Settings: flags over PLAIT_* environment over defaults, validated, errors naming the source."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from server.config import Mode, Settings, load_settings
from server.errors import ConfigError

PRODUCTION_URLS = {
    "redis_url": "redis://127.0.0.1:6379/0",
    "database_url": "postgresql+asyncpg://postgres@127.0.0.1/test",
}
SECRETS = {"grpc_tokens": "w1", "event_keys": "k1", "signing_key": "signkey-prod-abcd"}


def test_nothing_given_means_the_defaults() -> None:
    assert load_settings({}, {}) == Settings()
    assert load_settings(None, None) == Settings()


def test_the_environment_overrides_a_default() -> None:
    settings = load_settings({}, {"PLAIT_HTTP_PORT": "9000", "PLAIT_DATA_DIR": "/var/plait"})
    assert settings.http_port == 9000
    assert settings.data_dir == Path("/var/plait")


def test_a_flag_overrides_the_environment() -> None:
    settings = load_settings({"http_port": 9100}, {"PLAIT_HTTP_PORT": "9000"})
    assert settings.http_port == 9100


def test_a_flag_not_given_leaves_the_environment_in_force() -> None:
    settings = load_settings({"http_port": None}, {"PLAIT_HTTP_PORT": "9000"})
    assert settings.http_port == 9000


def test_an_empty_variable_counts_as_unset() -> None:
    assert load_settings({}, {"PLAIT_LOG_FORMAT": ""}).log_format == "console"


def test_variables_without_the_prefix_are_ignored() -> None:
    assert load_settings({}, {"HTTP_PORT": "1", "REDIS_URL": "redis://x"}) == Settings()


def test_the_mode_comes_from_the_flags() -> None:
    settings = load_settings({"mode": Mode.PRODUCTION, **PRODUCTION_URLS, **SECRETS}, {})
    assert settings.mode is Mode.PRODUCTION


def test_a_bad_variable_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match="PLAIT_HTTP_PORT has value 'abc'"):
        load_settings({}, {"PLAIT_HTTP_PORT": "abc"})


def test_a_bad_flag_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match="--lease-ms has value 'soon'"):
        load_settings({"lease_ms": "soon"}, {})


def test_a_port_out_of_range_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match="--grpc-port has value 70000"):
        load_settings({}, {"PLAIT_GRPC_PORT": "70000"})


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"queue_shards": 0}, "--queue-shards has value 0"),
        ({"lease_ms": 10}, "--lease-ms has value 10"),
        ({"lease_ms": 2000, "heartbeat_interval_ms": 1500}, "--heartbeat-interval-ms"),
        ({"log_format": "xml"}, "--log-format has value 'xml'"),
        ({"database_url": "mysql://x"}, "--database-url has value 'mysql://x'"),
    ],
)
def test_values_out_of_bounds_are_rejected(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(flags, {})


def test_production_requires_a_redis_url() -> None:
    with pytest.raises(ConfigError, match=r"--redis-url \(PLAIT_REDIS_URL\) is required"):
        load_settings({"mode": Mode.PRODUCTION}, {})


def test_production_requires_a_database_url() -> None:
    env = {"PLAIT_REDIS_URL": PRODUCTION_URLS["redis_url"]}
    with pytest.raises(ConfigError, match=r"--database-url \(PLAIT_DATABASE_URL\) is required"):
        load_settings({"mode": Mode.PRODUCTION}, env)


def test_dev_mode_needs_no_urls_and_uses_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": tmp_path}, {})
    assert settings.redis_url == ""
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path / 'plait.db'}"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().http_port = 1  # type: ignore[misc]


def test_production_without_tokens_and_keys_refuses_naming_each_flag_and_insecure() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"mode": Mode.PRODUCTION, **PRODUCTION_URLS}, {})
    for named in ("--grpc-tokens (PLAIT_GRPC_TOKENS)", "--event-key (PLAIT_EVENT_KEYS)",
                  "--signing-key (PLAIT_SIGNING_KEY)", "--insecure"):
        assert named in caught.value.message


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_production_missing_any_one_secret_refuses_naming_only_that_one(missing: str) -> None:
    given = {k: v for k, v in SECRETS.items() if k != missing}
    with pytest.raises(ConfigError) as caught:
        load_settings({"mode": Mode.PRODUCTION, **PRODUCTION_URLS, **given}, {})
    flags = {"grpc_tokens": "--grpc-tokens", "event_keys": "--event-key",
             "signing_key": "--signing-key"}
    assert [f for f in flags.values() if f in caught.value.message] == [flags[missing]]


def test_production_with_insecure_starts_without_tokens_and_keys() -> None:
    by_flag = load_settings({"mode": Mode.PRODUCTION, **PRODUCTION_URLS, "insecure": True}, {})
    by_env = load_settings({"mode": Mode.PRODUCTION, **PRODUCTION_URLS}, {"PLAIT_INSECURE": "1"})
    assert by_flag.insecure and by_env.insecure


def test_dev_mode_needs_no_tokens_or_keys() -> None:
    assert load_settings({}, {}).insecure is False


@pytest.mark.parametrize("tokens", ["w1@", "@app", "w1@|", "w1, @a|b"])
def test_a_worker_token_with_an_empty_app_list_or_token_is_refused(tokens: str) -> None:
    with pytest.raises(ConfigError, match="--grpc-tokens has an entry"):
        load_settings({"grpc_tokens": tokens}, {})


def test_worker_tokens_may_name_their_apps_and_admin_tokens_may_not() -> None:
    assert load_settings({"grpc_tokens": "w1@a|b.c, w2"}, {}).grpc_token_list == ["w1@a|b.c", "w2"]
    with pytest.raises(ConfigError, match="--admin-tokens"):
        load_settings({"admin_tokens": "a1@app"}, {})


def test_a_signing_key_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ConfigError, match="--signing-key"):
        load_settings({"signing_key": "signkey-prod-abcd\n"}, {})
