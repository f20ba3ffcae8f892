"""`chaosstream check`: the built-in battery and its scorecard rule."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from chaosstream.cli.commands import cli
from chaosstream.verify.battery import BATTERY

CLIENTS = Path(__file__).parent.parent / "programs"


def test_swallowing_client_fails_the_scorecard(tmp_path: Path) -> None:
    """A client printing whatever arrived with exit 0 fails the cut scenarios; exit 1."""
    report, junit = tmp_path / "c.json", tmp_path / "c.xml"
    result = CliRunner().invoke(
        cli,
        [
            "check",
            "--seed",
            "5",
            "--timeout-s",
            "6",
            "--json",
            str(report),
            "--junit",
            str(junit),
            "--",
            sys.executable,
            str(CLIENTS / "swallow.py"),
        ],
    )
    assert result.exit_code == 1
    data = json.loads(report.read_text())
    assert set(data) == {"tool", "version", "seed", "passed", "scenarios"}
    assert data["seed"] == 5 and data["passed"] is False
    passed = {s["name"]: s["passed"] for s in data["scenarios"]}
    # It survives what does not break the stream. Its 2 s read timeout cuts the
    # 3 s first token short (silently); an HTTP error escapes it as a traceback
    # and exit 1, which does surface the error.
    assert passed == {
        "clean": True,
        "slow-first-token": False,
        "midstream-reset": False,
        "midstream-close": False,
        "silent-stall": False,
        "keepalive-stall": False,
        "rate-limited-429": True,
        "unavailable-503": True,
        "overloaded-in-stream": False,
        "malformed-event": False,
        "buffering-middlebox": True,
        "length-stop": False,
        "mobile-3g-lossy": True,
    }
    close = next(s for s in data["scenarios"] if s["name"] == "midstream-close")
    assert close["observed"]["silent_truncation"] is True
    assert set(close["observed"]) == {
        "attempts",
        "retried",
        "fell_back",
        "resumed",
        "completed",
        "surfaced_error",
        "silent_truncation",
        "respected_retry_after",
        "exit_code",
        "ttft_ms",
        "ttft_shown_ms",
        "fault_met",
        "faults",
    }
    assert close["observed"]["fault_met"] is True
    assert close["repro"] == "chaosstream proxy --profile midstream-close --seed 5"
    assert "chaosstream proxy --profile midstream-close --seed 5" in result.output
    assert set(close) == {
        "name",
        "profile",
        "passed",
        "observed",
        "repro",
        "repro_run",
        "expectations",
    }
    assert close["observed"]["faults"][0]["type"] == "disconnect"
    assert set(close["observed"]["faults"][0]) == {"type", "request", "at_ms"}
    assert close["expectations"][0]["evidence"].startswith("silent truncation: exit 0")
    assert "characters shown" in close["expectations"][0]["evidence"]
    assert "FAIL midstream-close / resilient: silent truncation" in result.output
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert len(cases) == len(BATTERY)
    assert sum(1 for c in cases if c.find("failure") is not None) == 8


def test_check_needs_a_command() -> None:
    """`check` without a client command is a usage error (exit 2)."""
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli, ["check", "--", "/nonexistent/client"])
    assert result.exit_code == 2
    assert "client command not found" in result.output


def test_false_fails_every_scenario(tmp_path: Path) -> None:
    """`check -- false` sends nothing through the proxy: 0/13, attempts 0, fault_met false."""
    report = tmp_path / "c.json"
    result = CliRunner().invoke(
        cli, ["check", "--seed", "5", "--timeout-s", "5", "--json", str(report), "--", "false"]
    )
    assert result.exit_code == 1, result.output
    data = json.loads(report.read_text())
    assert data["passed"] is False
    assert [s["passed"] for s in data["scenarios"]] == [False] * len(BATTERY)
    for s in data["scenarios"]:
        assert s["observed"]["attempts"] == 0
        assert s["observed"]["fault_met"] is (None if s["name"] == "clean" else False)
        evidence = s["expectations"][0]["evidence"]
        assert evidence.startswith("the client sent no request through the proxy"), evidence
        assert "silent truncation" not in evidence
        assert s["repro"] == f"chaosstream proxy --profile {s['profile']} --seed 5"
    assert f"0/{len(BATTERY)} scenarios passed" in result.output
