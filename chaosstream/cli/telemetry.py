"""``--otel`` on ``proxy``, ``run`` and ``check``: when to export OpenTelemetry, and how.

Light on purpose (click and os only): the commands import it for the option,
and ``chaosstream --help`` must not pay for the OpenTelemetry SDK or aiohttp.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import click

from chaosstream.cli.args import BadInput

if TYPE_CHECKING:
    from chaosstream.integrations.otel import ProxyTelemetry

__all__ = ["INSTALL_HINT", "OTEL_ENDPOINTS", "open_telemetry", "otel_option"]

INSTALL_HINT = "pip install 'chaosstream[otel]'"
# Any of these set (and OTEL_SDK_DISABLED not true) turns telemetry on without --otel:
# the standard variables a team already sets for its own services.
OTEL_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)

otel_option = click.option(
    "--otel/--no-otel",
    "otel",
    default=None,
    help="Export a span per exchange (a child of the client's traceparent, an event per "
    "fault) and GenAI metrics over OTLP/HTTP to $OTEL_EXPORTER_OTLP_ENDPOINT (default "
    "http://localhost:4318); OTEL_SERVICE_NAME and the other OTEL_* variables apply. "
    f"Default: on when an OTLP endpoint variable is set. Needs {INSTALL_HINT}.",
)


def open_telemetry(
    flag: bool | None, env: Mapping[str, str] | None = None
) -> ProxyTelemetry | None:
    """The telemetry for ``--otel`` (True), ``--no-otel`` (False) or neither (None: on
    when an OTLP endpoint is in ``env``); None when off.

    Bad input (exit 2): ``--otel`` without the SDK installed, or OTEL_* settings
    chaosstream cannot honour. Without ``--otel``, a missing SDK is one line on
    stderr and the command goes on untraced.
    """
    env = os.environ if env is None else env
    if flag is False or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if flag is None and not any(env.get(name, "").strip() for name in OTEL_ENDPOINTS):
        return None
    try:
        from chaosstream.integrations.otel import configure
    except ImportError as e:
        if flag:
            raise BadInput(
                f"--otel needs the OpenTelemetry SDK ({e.name} is missing): {INSTALL_HINT}"
            ) from None
        click.echo(
            "chaosstream: an OTLP endpoint is set but the OpenTelemetry SDK is not installed "
            f"({INSTALL_HINT}): no spans or metrics are exported",
            err=True,
        )
        return None
    try:
        return configure(env)
    except ValueError as e:
        raise BadInput(str(e)) from None
