"""The reference client (chaosstream.examples.resilient_client) against the real battery."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner

from chaosstream.cli.commands import cli
from chaosstream.verify.battery import BATTERY
from chaosstream.verify.expectations import RESILIENT

CLIENT = [sys.executable, "-m", "chaosstream.examples.resilient_client", "--idle-timeout", "4"]


def test_reference_client_passes_the_whole_check_battery(tmp_path: Path) -> None:
    """Every battery scenario passes: the client completes each one, honouring Retry-After,
    and tells its user when a length stop left the answer incomplete."""
    report = tmp_path / "check.json"
    result = CliRunner().invoke(
        cli, ["check", "--seed", "7", "--timeout-s", "30", "--json", str(report), "--", *CLIENT]
    )
    data = json.loads(report.read_text())
    assert result.exit_code == 0, result.output
    assert data["passed"] is True
    assert len(data["scenarios"]) == len(BATTERY)
    for s in data["scenarios"]:
        assert [e["name"] for e in s["expectations"]] == [RESILIENT]
        obs = s["observed"]
        stopped = s["name"] == "length-stop"  # a stop is flagged, not completed
        assert obs["completed"] is not stopped and not obs["silent_truncation"], s
        assert obs["attempts"] <= 4 and obs["respected_retry_after"], s
    by_name = {s["name"]: s["observed"] for s in data["scenarios"]}
    assert by_name["clean"]["attempts"] == 1
    stop = by_name["length-stop"]
    assert (stop["attempts"], stop["exit_code"]) == (1, 0)
    for cut in (
        "midstream-reset",
        "midstream-close",
        "silent-stall",
        "keepalive-stall",
        "rate-limited-429",
    ):
        assert by_name[cut]["retried"] is True, cut


def test_reference_client_gives_up_loudly(tmp_path: Path) -> None:
    """Against an always-503 API it makes 4 attempts, then exits 1 with a clear message."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "version: 1\nscenarios:\n  - name: down\n"
        "    profile: {version: 1, name: down, faults: [{type: http_error, status: 503}]}\n"
        "    expect: [surfaces_error, {retries: {max_attempts: 4}}]\n",
        encoding="utf-8",
    )
    report = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["run", str(path), "--json", str(report), "--", *CLIENT])
    assert result.exit_code == 0, result.output
    obs = json.loads(report.read_text())["scenarios"][0]["observed"]
    assert (obs["attempts"], obs["exit_code"], obs["surfaced_error"]) == (4, 1, True)
    assert (
        "gave up after 4 attempts"
        in json.loads(report.read_text())["scenarios"][0]["expectations"][0]["evidence"]
    )


def test_reference_client_falls_back_after_two_stream_failures(tmp_path: Path) -> None:
    """When every stream is cut, the third attempt is a non-streaming request that completes."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "version: 1\nscenarios:\n  - name: streams-break\n"
        "    profile: {version: 1, name: b, faults: [{type: disconnect, after_events: 3, "
        "mode: reset, match: {stream: true}}]}\n"
        "    expect: [falls_back, completes, {retries: {max_attempts: 4}}]\n",
        encoding="utf-8",
    )
    report = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["run", str(path), "--json", str(report), "--", *CLIENT])
    assert result.exit_code == 0, result.output
    obs = json.loads(report.read_text())["scenarios"][0]["observed"]
    assert (obs["attempts"], obs["fell_back"], obs["completed"]) == (3, True, True)
