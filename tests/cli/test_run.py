"""`chaosstream run` end to end: real proxy, mock and client subprocesses of known behaviour."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chaosstream.cli.commands import cli

CLIENTS = Path(__file__).parent.parent / "programs"

RESET_3 = (
    "{version: 1, name: reset-3, faults: [{type: disconnect, after_events: 3, mode: reset,"
    " match: {stream: true}, requests: [1]}]}"
)
ALWAYS_RESET = (
    "{version: 1, name: always-reset, faults: [{type: disconnect, after_events: 3,"
    " mode: reset, match: {stream: true}}]}"
)
RATE_LIMITED = (
    "{version: 1, name: rate-limited, faults: [{type: http_error, status: 429,"
    " retry_after_s: 1, requests: [1]}]}"
)

BASE = {
    "attempts": 1,
    "retried": False,
    "fell_back": False,
    "resumed": False,
    "completed": True,
    "surfaced_error": False,
    "silent_truncation": False,
    "respected_retry_after": True,
    "exit_code": 0,
    "fault_met": True,
}


def run(
    tmp_path: Path, scenarios: str, client: str, *extra: str
) -> tuple[int, dict[str, Any], str]:
    """Write the scenario file, run the CLI on `client`, return (exit code, JSON report, output)."""
    path = tmp_path / "scenarios.yaml"
    path.write_text("version: 1\nscenarios:\n" + scenarios, encoding="utf-8")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(path),
            "--seed",
            "3",
            "--json",
            str(report),
            *extra,
            "--",
            sys.executable,
            str(CLIENTS / client),
        ],
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return result.exit_code, data, result.output


def scenario(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["scenarios"] if s["name"] == name)


def observed(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The observed block without its timing numbers (which vary run to run)."""
    obs = dict(scenario(data, name)["observed"])
    for key in ("ttft_ms", "ttft_shown_ms"):
        value = obs.pop(key)
        assert value is None or isinstance(value, float), (key, value)
    obs["faults"] = [(f["type"], f["request"]) for f in obs["faults"]]
    return obs


def verdicts(data: dict[str, Any], name: str) -> dict[str, str]:
    return {e["name"]: e["verdict"] for e in scenario(data, name)["expectations"]}


def test_well_behaved_client_under_several_profiles(tmp_path: Path) -> None:
    """A client that retries and honours Retry-After passes clean, reset, close and 429."""
    code, data, out = run(
        tmp_path,
        f"""
  - name: clean
    profile: clean
    expect: [completes]
  - name: reset
    profile: {RESET_3}
    expect: [completes, retries]
  - name: close
    profile: midstream-close
    expect: [completes, {{retries: {{max_attempts: 2, within_s: 5}}}}]
  - name: rate-limited
    profile: {RATE_LIMITED}
    expect: [completes, retries]
""",
        "well_behaved.py",
    )
    assert code == 0, out
    assert data["tool"] == "chaosstream" and data["seed"] == 3 and data["passed"] is True
    assert set(data) == {"tool", "version", "seed", "passed", "scenarios"}
    first = data["scenarios"][0]
    assert set(first) == {
        "name",
        "profile",
        "passed",
        "observed",
        "repro",
        "repro_run",
        "expectations",
    }
    assert observed(data, "clean") == {**BASE, "fault_met": None, "faults": []}
    assert observed(data, "reset") == {
        **BASE,
        "attempts": 2,
        "retried": True,
        "faults": [("disconnect", 1)],
    }
    assert observed(data, "close") == {
        **BASE,
        "attempts": 2,
        "retried": True,
        "faults": [("disconnect", 1)],
    }
    assert observed(data, "rate-limited") == {
        **BASE,
        "attempts": 2,
        "retried": True,
        "faults": [("http_error", 1)],
    }
    assert isinstance(first["observed"]["ttft_ms"], float)
    evidence = scenario(data, "rate-limited")["expectations"][1]["evidence"]
    assert "Retry-After 1" in evidence and "#1" in evidence


def test_swallowing_client_is_caught_truncating(tmp_path: Path) -> None:
    """Printing a cut answer with exit 0 is silent truncation, unless error_signal matches."""
    code, data, out = run(
        tmp_path,
        """
  - name: close
    profile: midstream-close
    expect: [completes, surfaces_error]
  - name: clean
    profile: clean
    expect: [completes]
""",
        "swallow.py",
    )
    assert code == 1
    assert observed(data, "close") == {
        **BASE,
        "completed": False,
        "silent_truncation": True,
        "faults": [("disconnect", 1)],
    }
    assert verdicts(data, "close") == {"completes": "fail", "surfaces_error": "fail"}
    assert scenario(data, "clean")["passed"] is True
    assert "FAIL close / completes" in out

    path = tmp_path / "scenarios.yaml"
    path.write_text(
        "version: 1\nscenarios:\n  - name: close-says-error\n    profile: midstream-close\n"
        "    expect: [surfaces_error]\n"
        '    error_signal: {stdout_regex: "^error: ", exit_code: 0}\n',
        encoding="utf-8",
    )
    report = tmp_path / "report.json"
    client = [sys.executable, str(CLIENTS / "swallow.py"), "--say-error"]
    result = CliRunner().invoke(cli, ["run", str(path), "--json", str(report), "--", *client])
    data = json.loads(report.read_text())
    assert result.exit_code == 0, result.output
    assert observed(data, "close-says-error") == {
        **BASE,
        "completed": False,
        "surfaced_error": True,
        "faults": [("disconnect", 1)],
    }


def test_storming_client_breaks_the_attempt_limit(tmp_path: Path) -> None:
    """Eight immediate retries against a link that always breaks is a retry storm."""
    code, data, _ = run(
        tmp_path,
        f"""
  - name: storm
    profile: {ALWAYS_RESET}
    expect: [retries, surfaces_error]
""",
        "storm.py",
    )
    assert code == 1
    assert observed(data, "storm") == {
        **BASE,
        "attempts": 8,
        "retried": True,
        "completed": False,
        "surfaced_error": True,
        "exit_code": 1,
        "faults": [("disconnect", i) for i in range(1, 9)],
    }
    assert verdicts(data, "storm") == {"retries": "fail", "surfaces_error": "pass"}
    assert (
        "retry storm: 8 attempts > max_attempts 5"
        in scenario(data, "storm")["expectations"][0]["evidence"]
    )


def test_impatient_client_ignores_retry_after(tmp_path: Path) -> None:
    """Retrying 0.1 s after a 429 with Retry-After: 1 fails `retries` with the gap as evidence."""
    code, data, _ = run(
        tmp_path,
        f"""
  - name: rate-limited
    profile: {RATE_LIMITED}
    expect: [retries, completes]
""",
        "impatient.py",
    )
    assert code == 1
    assert observed(data, "rate-limited") == {
        **BASE,
        "attempts": 2,
        "retried": True,
        "respected_retry_after": False,
        "faults": [("http_error", 1)],
    }
    assert verdicts(data, "rate-limited") == {"retries": "fail", "completes": "pass"}
    assert "too soon" in scenario(data, "rate-limited")["expectations"][0]["evidence"]


def test_hanging_client_is_a_hang_not_an_error(tmp_path: Path) -> None:
    """A client killed at timeout_s has no exit code and did not surface an error."""
    code, data, _ = run(
        tmp_path,
        """
  - name: stall
    profile: silent-stall
    expect: [surfaces_error]
    timeout_s: 1.5
""",
        "hang.py",
    )
    assert code == 1
    assert observed(data, "stall") == {
        **BASE,
        "completed": False,
        "exit_code": None,
        "faults": [("disconnect", 1)],
    }
    assert "hung" in scenario(data, "stall")["expectations"][0]["evidence"]


def test_resuming_client_carries_last_event_id(tmp_path: Path) -> None:
    """A reconnect with Last-Event-ID of the last delivered event is a resume."""
    code, data, out = run(
        tmp_path,
        """
  - name: resume
    profile:
      {version: 1, name: sse-cut,
       faults: [{type: disconnect, after_events: 5, mode: reset, requests: [1]}]}
    expect: [resumes, completes]
""",
        "resume.py",
    )
    assert code == 0, out
    assert observed(data, "resume") == {
        **BASE,
        "attempts": 2,
        "retried": True,
        "resumed": True,
        "faults": [("disconnect", 1)],
    }
    assert "Last-Event-ID '5'" in scenario(data, "resume")["expectations"][0]["evidence"]


def test_fallback_client_and_no_fallback(tmp_path: Path) -> None:
    """A non-streaming retry after a failed stream is a fallback; a plain retry is not."""
    code, data, out = run(
        tmp_path,
        f"""
  - name: reset
    profile: {RESET_3}
    expect: [falls_back, completes]
""",
        "fallback.py",
    )
    assert code == 0, out
    assert observed(data, "reset") == {
        **BASE,
        "attempts": 2,
        "retried": True,
        "fell_back": True,
        "faults": [("disconnect", 1)],
    }
    code, data, _ = run(
        tmp_path,
        f"  - name: reset\n    profile: {RESET_3}\n    expect: [falls_back]\n",
        "well_behaved.py",
    )
    assert code == 1
    assert verdicts(data, "reset") == {"falls_back": "fail"}


def test_cancels_upstream_when_client_hangs_up(tmp_path: Path) -> None:
    """A client that hangs up mid-stream: proxy and mock both see the stream closed."""
    code, data, out = run(
        tmp_path,
        "  - name: stop\n    profile: clean\n    expect: [cancels_upstream, surfaces_error]\n",
        "quitter.py",
    )
    assert code == 0, out
    assert observed(data, "stop") == {
        **BASE,
        "completed": False,
        "surfaced_error": True,
        "exit_code": 2,
        "fault_met": None,
        "faults": [],
    }
    assert (
        "the mock saw 1 stream(s) closed early"
        in scenario(data, "stop")["expectations"][0]["evidence"]
    )


def test_bad_scenario_file_is_exit_2_with_line(tmp_path: Path) -> None:
    """A scenario file error names file:line: field, exit 2, no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
        "    expect: [retries: {max_attempts: 0}]\n"
        "  - name: b\n    profile: {version: 1, name: x, faults: [{type: disconnect,"
        " mode: sideways, after_events: 1}]}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["run", str(path), "--", "true"])
    assert result.exit_code == 2
    assert f"{path}:5: scenarios[0].expect[0].retries.max_attempts:" in result.output
    assert "Traceback" not in result.output
    path.write_text(
        "version: 1\nscenarios:\n  - name: b\n    profile: {version: 1, name: x, faults:"
        " [{type: disconnect, mode: sideways, after_events: 1}]}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["run", str(path), "--", "true"])
    assert result.exit_code == 2
    assert f"{path}:4: scenarios[0].profile.faults[0].mode:" in result.output


def test_missing_client_command_is_exit_2(tmp_path: Path) -> None:
    """A client command that does not exist is bad input: exit 2 and a clear message."""
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nscenarios:\n  - {name: a, profile: clean}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(path), "--", "no-such-client-xyz", "--flag"])
    assert result.exit_code == 2
    assert "client command not found: 'no-such-client-xyz'" in result.output
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2
    assert "no client command" in result.output


def test_client_that_sends_nothing_fails_every_scenario(tmp_path: Path) -> None:
    """A missing script or a client dying before its first request fails, with attempts 0."""
    scenarios = """
  - {name: clean, profile: clean, expect: [surfaces_error]}
  - {name: reset, profile: midstream-reset, expect: [surfaces_error]}
"""
    missing = str(tmp_path / "my_client.py")
    for client in (missing, str(CLIENTS / "no_request.py")):
        path = tmp_path / "scenarios.yaml"
        path.write_text("version: 1\nscenarios:\n" + scenarios, encoding="utf-8")
        report = tmp_path / "report.json"
        result = CliRunner().invoke(
            cli, ["run", str(path), "--json", str(report), "--", sys.executable, client]
        )
        assert result.exit_code == 1, result.output
        data = json.loads(report.read_text())
        assert data["passed"] is False
        for name, met in (("clean", None), ("reset", False)):
            obs = scenario(data, name)["observed"]
            assert (obs["attempts"], obs["fault_met"], obs["faults"]) == (0, met, [])
            assert obs["silent_truncation"] is False and obs["completed"] is False
            evidence = scenario(data, name)["expectations"][0]["evidence"]
            assert evidence.startswith("the client sent no request through the proxy"), evidence
            assert "$OPENAI_BASE_URL" in evidence and "exit code" in evidence
        assert "it never met the fault" in scenario(data, "reset")["expectations"][0]["evidence"]


def test_fault_never_met_is_no_pass(tmp_path: Path) -> None:
    """A non-streaming client never meets a stream-only cut: the scenario fails, fault_met false."""
    code, data, out = run(
        tmp_path,
        """
  - {name: reset, profile: midstream-reset, expect: [completes]}
  - {name: clean, profile: clean, expect: [completes]}
""",
        "non_stream.py",
    )
    assert code == 1, out
    assert observed(data, "reset") == {**BASE, "fault_met": False, "faults": []}
    assert observed(data, "clean") == {**BASE, "fault_met": None, "faults": []}
    assert verdicts(data, "reset") == {"completes": "fail"}
    assert verdicts(data, "clean") == {"completes": "pass"}
    evidence = scenario(data, "reset")["expectations"][0]["evidence"]
    assert "none of the profile's faults fired" in evidence and "#1 non-stream 200" in evidence
    assert "chaosstream proxy --profile midstream-reset --seed 3" in out


def test_ttft_shown_is_when_text_reaches_stdout(tmp_path: Path) -> None:
    """A client that prints 0.6 s after the stream: ttft_shown_ms trails ttft_ms by >= 0.6 s."""
    code, data, out = run(
        tmp_path, "  - {name: clean, profile: clean, expect: [completes]}\n", "slow_print.py"
    )
    assert code == 0, out
    obs = scenario(data, "clean")["observed"]
    wire, shown = obs["ttft_ms"], obs["ttft_shown_ms"]
    assert isinstance(wire, float) and isinstance(shown, float)
    assert 550.0 <= shown - wire <= 5000.0, (wire, shown)
    assert "shown ms" in out and f"{shown:.0f}" in out


def test_dropped_word_is_named_with_its_place(tmp_path: Path) -> None:
    """A client that prints the answer less one word: evidence counts by alignment, names it."""
    code, data, out = run(
        tmp_path, "  - {name: clean, profile: clean, expect: [completes]}\n", "drop_word.py"
    )
    assert code == 1, out
    obs = scenario(data, "clean")["observed"]
    assert obs["silent_truncation"] is True and obs["completed"] is False
    evidence = scenario(data, "clean")["expectations"][0]["evidence"]
    shown, total = (int(n) for n in evidence.split(" characters shown")[0].split()[-3::2])
    assert 0 < total - shown <= 20, evidence
    assert re.search(r"; ' \S+' missing at character \d+", evidence), evidence


@pytest.mark.browser
def test_page_that_bypasses_the_proxy_fails(tmp_path: Path) -> None:
    """A page talking to the model directly sends nothing through the proxy: fail, no truncation."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mock = subprocess.Popen(
        [sys.executable, "-m", "chaosstream", "mock", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.1)
        code, data, out = run(
            tmp_path,
            f"""
  - name: bypass
    profile: midstream-reset
    expect: [completes, surfaces_error]
    timeout_s: 20
    client: {{browser: {{url: "http://127.0.0.1:{port}/"}}}}
""",
            "well_behaved.py",
        )
    finally:
        mock.terminate()
        mock.wait(10)
    assert code == 1, out
    obs = scenario(data, "bypass")["observed"]
    assert (obs["attempts"], obs["fault_met"], obs["silent_truncation"]) == (0, False, False)
    for item in scenario(data, "bypass")["expectations"]:
        assert item["evidence"].startswith("the client sent no request through the proxy: it"), item
        assert "does the page send its requests to the proxy" in item["evidence"]
