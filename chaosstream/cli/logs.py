"""structlog set-up: readable lines on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

LogFormat = Literal["auto", "console", "json"]

# The fields of the proxy's `exchange` line (record.Exchange.summary) that lead a console line.
_HEAD_FIELDS = ("method", "path", "status", "ttft_ms", "duration_ms", "bytes", "faults")


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}ms"


def _duration(ms: Any) -> str:
    """``850ms`` under a second, ``1.2s`` from there."""
    if ms is None:
        return "-"
    ms = float(ms)
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


def _size(n: Any) -> str:
    """``512B``, ``2.4KB``, ``3.1MB`` (decimal units, as a person reads them)."""
    if n is None:
        return "-"
    n = int(n)
    if n < 1000:
        return f"{n}B"
    if n < 1_000_000:
        return f"{n / 1000:.1f}KB"
    return f"{n / 1_000_000:.1f}MB"


def exchange_headline(event_dict: EventDict) -> str:
    """``POST /v1/chat/completions 200 ttft=52ms 1.2s 2.4KB faults=[…]``; pops what it shows."""
    fields = {key: event_dict.pop(key, None) for key in _HEAD_FIELDS}
    status = fields["status"] if fields["status"] is not None else "-"
    faults = ",".join(str(f) for f in fields["faults"] or ())
    return (
        f"{fields['method']} {fields['path']} {status} ttft={_ms(fields['ttft_ms'])} "
        f"{_duration(fields['duration_ms'])} {_size(fields['bytes'])} faults=[{faults}]"
    )


class ScanFirstConsole:
    """Console renderer: an exchange line leads with what a person scans for (issue 11.10).

    The rest (time, level, outcome, exchange id, seed) follows as structlog's
    console renderer prints it. Other events are rendered unchanged; JSON logs
    do not pass through here.
    """

    def __init__(self, colors: bool) -> None:
        self._inner = structlog.dev.ConsoleRenderer(colors=colors)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        if event_dict.get("event") != "exchange" or "method" not in event_dict:
            return str(self._inner(logger, name, event_dict))
        head = exchange_headline(event_dict)
        return f"{head}  {self._inner(logger, name, event_dict)}"


def configure_logging(fmt: LogFormat = "auto", level: str = "info") -> None:
    """Send structlog output to stderr in the chosen format."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = ScanFirstConsole(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # WriteLogger: a line and its newline in one write, where PrintLogger's print()
        # makes two system calls (one exchange line per request: issue 17).
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def quiet() -> None:
    """Drop proxy log lines below warning (the demo and the runner print their own report)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
