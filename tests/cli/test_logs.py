"""Log lines: exchanges lead with `METHOD PATH STATUS ttft= time size faults=`; JSON off a TTY."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from chaosstream.cli.logs import ScanFirstConsole, configure_logging, exchange_headline, quiet
from tests.cli.test_commands_process import hammer, served, write_profile

RESET_SECOND = (
    "version: 1\nname: second-cut\nfaults:\n"
    "  - type: disconnect\n    after_events: 2\n    mode: reset\n    requests: [2]\n"
)
HEADLINE = re.compile(
    r"^(?P<method>[A-Z]+) (?P<path>/\S*) (?P<status>\d{3}|-) ttft=(?:\d+ms|-) "
    r"\d+(?:\.\d)?m?s \d+(?:\.\d)?(?:B|KB|MB) faults=\[(?P<faults>[^\]]*)\]  "
)


def exchange(**fields: Any) -> dict[str, Any]:
    """The proxy's `exchange` event as structlog hands it to the renderer."""
    return {
        "event": "exchange",
        "exchange": 3,
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "outcome": "complete",
        "ttft_ms": 52.4,
        "duration_ms": 1234.0,
        "bytes": 2400,
        "faults": ["disconnect:reset"],
        "timestamp": "2024-01-01T00:00:00Z",
        "level": "info",
        **fields,
    }


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    """configure_logging sets structlog for the process: put the previous set-up back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_headline_leads_with_what_a_person_scans_for() -> None:
    """Method, path, status, TTFT, duration, size, faults; the shown fields leave the event."""
    event = exchange()
    assert exchange_headline(event) == (
        "POST /v1/chat/completions 200 ttft=52ms 1.2s 2.4KB faults=[disconnect:reset]"
    )
    assert event == {
        "event": "exchange",
        "exchange": 3,
        "outcome": "complete",
        "timestamp": "2024-01-01T00:00:00Z",
        "level": "info",
    }


@pytest.mark.parametrize(
    ("fields", "headline"),
    [
        (
            {"duration_ms": 850.4, "bytes": 512, "faults": []},
            "POST /v1/chat/completions 200 ttft=52ms 850ms 512B faults=[]",
        ),
        (
            {"status": None, "ttft_ms": None, "duration_ms": None, "bytes": None},
            "POST /v1/chat/completions - ttft=- - - faults=[disconnect:reset]",
        ),
        (
            {"bytes": 3_100_000, "duration_ms": 61_000, "faults": ["latency:x", "buffer:hold"]},
            "POST /v1/chat/completions 200 ttft=52ms 61.0s 3.1MB faults=[latency:x,buffer:hold]",
        ),
    ],
    ids=["small", "unknown", "large"],
)
def test_headline_units(fields: dict[str, Any], headline: str) -> None:
    """ms under a second then s; B, KB, MB in decimal units; `-` for what is not known yet."""
    assert exchange_headline(exchange(**fields)) == headline


def test_console_renderer_puts_the_headline_before_structlog_line() -> None:
    """An exchange line is the headline, two spaces, then time, level, event and the rest."""
    line = ScanFirstConsole(colors=False)(None, "info", exchange())
    head, rest = line.split("  ", 1)
    assert head == "POST /v1/chat/completions 200 ttft=52ms 1.2s 2.4KB faults=[disconnect:reset]"
    assert rest.startswith("2024-01-01T00:00:00Z [info")
    assert "exchange=3" in rest and "outcome=complete" in rest
    assert "method=" not in rest and "bytes=" not in rest


def test_console_renderer_leaves_other_events_alone() -> None:
    """Other events (and an `exchange` without request fields) render as structlog's own."""
    plain = structlog.dev.ConsoleRenderer(colors=False)
    for event in ({"event": "listening", "port": 9}, {"event": "exchange", "exchange": 1}):
        ours = ScanFirstConsole(colors=False)(None, "info", dict(event))
        assert ours == plain(None, "info", dict(event))


def test_json_lines_off_a_terminal_with_level_filter(
    restore_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`auto` off a TTY is JSON, one object a line with level and UTC time; below level dropped."""
    configure_logging("auto", "warning")
    log = structlog.get_logger("t")
    log.info("exchange", method="GET")
    log.warning("slow", ms=5)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert (record["event"], record["ms"], record["level"]) == ("slow", 5, "warning")
    assert record["timestamp"].endswith("Z")


def test_console_format_renders_exchange_headlines(
    restore_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`console` on any stream renders exchanges headline-first, without colour codes off a TTY."""
    configure_logging("console", "info")
    fields = exchange()
    del fields["event"], fields["timestamp"], fields["level"]
    structlog.get_logger("t").info("exchange", **fields)
    line = capsys.readouterr().err
    assert line.startswith("POST /v1/chat/completions 200 ttft=52ms 1.2s 2.4KB faults="), line
    assert "\x1b[" not in line


def test_quiet_keeps_warnings_only(
    restore_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """quiet() (demo, runner) drops info lines and keeps warnings."""
    configure_logging("json", "debug")
    quiet()
    log = structlog.get_logger("t")
    log.info("exchange")
    log.warning("kept", level_no=logging.WARNING)
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["kept"]


def test_console_exchange_lines_lead_with_method_path_status_timings_size_faults(
    tmp_path: Path,
) -> None:
    """Console log: `POST /v1/chat/completions 200 ttft=…ms …s …KB faults=[…]` first, then the
    rest (outcome, exchange id, time)."""
    profile = write_profile(tmp_path / "second-cut.yaml", RESET_SECOND)
    args = ["proxy", "--listen", "127.0.0.1:0", "--profile", profile, "--log-format", "console"]
    with served(args, tmp_path / "proxy.log") as proxy:
        url = proxy.wait_url()
        seen = asyncio.run(hammer(url, 2, 1))
        assert seen == {"status 200": 1, "ClientPayloadError": 1}, seen
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while len(lines) < 2 and time.monotonic() < deadline:
            lines = [ln for ln in proxy.stderr().splitlines() if "/v1/chat/completions " in ln]
            time.sleep(0.05)
    assert len(lines) == 2, proxy.stderr()[-2000:]
    clean, cut = (HEADLINE.match(line) for line in lines)
    assert clean is not None and cut is not None, lines
    assert (clean["method"], clean["path"], clean["status"]) == (
        "POST",
        "/v1/chat/completions",
        "200",
    )
    assert clean["faults"] == "" and cut["faults"] == "disconnect:reset", lines
    assert "outcome=complete" in lines[0] and "outcome=fault" in lines[1], lines
