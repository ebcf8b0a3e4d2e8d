"""OpenTelemetry settings: the standard OTEL_* variables, read through load_settings."""

from __future__ import annotations

import pytest

from server.config import load_settings
from server.errors import ConfigError
from server.telemetry import Telemetry
from server.telemetry.otlp import OtlpConfig


def config(env: dict[str, str]) -> OtlpConfig | None:
    return OtlpConfig.from_settings(load_settings({}, env))


def test_without_otel_variables_nothing_is_exported() -> None:
    assert config({}) is None
    telemetry = Telemetry(load_settings({}, {}))
    assert not telemetry.tracing


def test_an_endpoint_turns_export_on_over_grpc() -> None:
    found = config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert found is not None
    assert (found.protocol, found.endpoint, found.insecure) == (
        "grpc", "http://collector:4317", True)
    assert found.resource["service.name"] == "plait"


def test_a_service_name_alone_exports_to_the_default_collector() -> None:
    found = config({"OTEL_SERVICE_NAME": "plait-eu"})
    assert found is not None
    assert found.endpoint == "http://localhost:4317"
    assert found.resource["service.name"] == "plait-eu"


def test_http_appends_the_traces_path_to_the_general_endpoint_only() -> None:
    general = config({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example.com/",
                      "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert general is not None
    assert general.endpoint == "https://otlp.example.com/v1/traces"
    specific = config({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://x.example.com/spans",
                       "OTEL_EXPORTER_OTLP_ENDPOINT": "https://ignored.example.com",
                       "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
    assert specific is not None
    assert specific.endpoint == "https://x.example.com/spans"


def test_headers_resource_attributes_timeout_and_compression_are_read() -> None:
    found = config({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=abc%20def,x-other=1",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=ignored",
        "OTEL_SERVICE_NAME": "plait-prod",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    })
    assert found is not None
    assert found.insecure
    assert found.headers == {"x-honeycomb-team": "abc def", "x-other": "1"}
    assert found.resource["deployment.environment"] == "prod"
    assert found.resource["service.name"] == "plait-prod"
    assert found.timeout_s == 2.5 and found.gzip


def test_plait_variables_and_flags_win_over_the_standard_ones() -> None:
    settings = load_settings(
        {"otel_service_name": "from-flag"},
        {"OTEL_SERVICE_NAME": "std", "PLAIT_OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1",
         "OTEL_EXPORTER_OTLP_ENDPOINT": "http://b:2"})
    assert settings.otel_service_name == "from-flag"
    assert settings.otel_exporter_otlp_endpoint == "http://a:1"


@pytest.mark.parametrize("off", [
    {"OTEL_SDK_DISABLED": "true"},
    {"OTEL_TRACES_EXPORTER": "none"},
    {"OTEL_TRACES_SAMPLER": "always_off"},
])
def test_export_can_be_turned_off(off: dict[str, str]) -> None:
    assert config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", **off}) is None


def test_a_ratio_sampler_keeps_whole_runs() -> None:
    found = config({"OTEL_SERVICE_NAME": "p", "OTEL_TRACES_SAMPLER": "traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert found is not None and found.ratio == 0.25


@pytest.mark.parametrize(("env", "message"), [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     r"--otel-exporter-otlp-protocol \(OTEL_EXPORTER_OTLP_PROTOCOL\) has value 'http/json'"),
    ({"OTEL_TRACES_SAMPLER_ARG": "2"}, r"OTEL_TRACES_SAMPLER_ARG\) has value '2'"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, r"OTEL_EXPORTER_OTLP_HEADERS\) has an entry"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT has value 'soon'"),
    ({"OTEL_SDK_DISABLED": "maybe"}, r"OTEL_SDK_DISABLED\) has value 'maybe'"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://x"}, r"OTEL_EXPORTER_OTLP_ENDPOINT\) has value"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
])
def test_a_bad_otel_variable_is_named_in_the_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({}, env)
