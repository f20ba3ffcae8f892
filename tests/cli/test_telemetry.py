"""--otel: when telemetry is on, what the environment decides, and bad settings as bad input."""

from __future__ import annotations

import sys

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from chaosstream.cli.args import BadInput
from chaosstream.cli.telemetry import INSTALL_HINT, open_telemetry

ENDPOINT = "http://127.0.0.1:9"  # discard: nothing is exported in these tests


def test_off_unless_asked_or_an_endpoint_is_set() -> None:
    """No flag and no OTLP endpoint: off; --no-otel beats an endpoint; the SDK kill switch too."""
    assert open_telemetry(None, {}) is None
    assert open_telemetry(False, {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}) is None
    assert open_telemetry(True, {"OTEL_SDK_DISABLED": "true"}) is None
    assert open_telemetry(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}) is None


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{ENDPOINT}/v1/traces"},
    ],
)
def test_an_endpoint_in_the_environment_turns_it_on(env: dict[str, str]) -> None:
    """Any OTLP endpoint variable turns spans and metrics on, through the lean exporter."""
    telemetry = open_telemetry(None, env)
    assert telemetry is not None
    try:
        assert telemetry.owned and telemetry.exporter is not None
        assert telemetry.tracer_provider is None and telemetry.meter_provider is None
        assert telemetry.lean_spans and telemetry.exporter.collect is not None
        assert telemetry.where.startswith("spans and metrics over OTLP/HTTP to ")
    finally:
        telemetry.shutdown(0.5)


def test_a_setting_only_the_sdk_honours_sends_that_signal_through_the_sdk() -> None:
    """A sampler: spans via the SDK; delta temporality: metrics via the SDK; both honoured."""
    sampled = open_telemetry(True, {"OTEL_TRACES_SAMPLER": "traceidratio"})
    delta = open_telemetry(True, {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"})
    assert sampled is not None and delta is not None
    try:
        assert isinstance(sampled.tracer_provider, TracerProvider)
        assert sampled.exporter is not None and sampled.exporter.traces is None
        assert sampled.exporter.metrics is not None
        assert isinstance(delta.meter_provider, MeterProvider)
        assert delta.exporter is not None and delta.exporter.metrics is None
        assert delta.lean_spans
    finally:
        sampled.shutdown(0.5)
        delta.shutdown(0.5)


def test_the_flag_alone_uses_the_default_endpoint_and_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--otel with no endpoint: localhost:4318 as the spec's default, service chaosstream."""
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    telemetry = open_telemetry(True, {})
    assert telemetry is not None
    try:
        assert "to http://localhost:4318 as service chaosstream" in telemetry.where
    finally:
        telemetry.shutdown(0.5)


def test_an_exporter_set_to_none_leaves_that_signal_out() -> None:
    """OTEL_TRACES_EXPORTER=none: metrics only; OTEL_METRICS_EXPORTER=none: spans only."""
    only_metrics = open_telemetry(True, {"OTEL_TRACES_EXPORTER": "none"})
    only_spans = open_telemetry(True, {"OTEL_METRICS_EXPORTER": "none"})
    assert only_metrics is not None and only_spans is not None
    try:
        assert only_metrics.exporter is not None and only_spans.exporter is not None
        assert only_metrics.exporter.traces is None and only_metrics.exporter.metrics is not None
        assert only_spans.exporter.metrics is None and only_spans.exporter.traces is not None
        assert only_spans.where.startswith("spans over")
        assert only_metrics.where.startswith("metrics over")
    finally:
        only_metrics.shutdown(0.5)
        only_spans.shutdown(0.5)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_METRICS"),
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, "OTEL_METRICS_EXPORTER"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "br"}, "OTEL_EXPORTER_OTLP_COMPRESSION"),
    ],
)
def test_settings_it_cannot_honour_are_bad_input_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    """A protocol, exporter or setting chaosstream cannot use: BadInput (exit 2) naming it."""
    with pytest.raises(BadInput, match=named):
        open_telemetry(True, env)


def test_a_missing_sdk_is_bad_input_with_the_flag_and_a_notice_without(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the extra: --otel exits 2 with the install line; the environment alone warns."""
    monkeypatch.delitem(sys.modules, "chaosstream.integrations.otel", raising=False)
    for name in [m for m in sys.modules if m.split(".")[0] == "opentelemetry"] or ["opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BadInput, match=r"opentelemetry.*chaosstream\[otel\]"):
        open_telemetry(True, {})
    assert open_telemetry(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}) is None
    err = capsys.readouterr().err
    assert INSTALL_HINT in err and "no spans or metrics" in err
