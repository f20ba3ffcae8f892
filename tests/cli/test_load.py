"""`chaosstream load` on the command line: the CI gate's exit codes and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CMD = [sys.executable, "-m", "chaosstream", "load"]
QUICK = ["--users", "6", "--spawn-rate", "20", "--run-time", "2s", "--mock-ttft-ms", "50"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)


def test_objectives_met_exit_0(tmp_path: Path) -> None:
    """clean meets a 50 % goodput objective under a 2 s TTFT SLO: exit 0, passed true."""
    out = tmp_path / "ok.json"
    result = _run(*QUICK, "--mix", "clean=1", "--min-goodput", "0.5", "--ttft-slo-ms", "2000",
                  "--max-interruption-rate", "0", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["overall"]["goodput"] >= 0.5
    assert "overall" in result.stdout


def test_objective_missed_exit_1(tmp_path: Path) -> None:
    """Every user's first stream is reset: a 0 % interruption objective fails with exit 1."""
    out, page = tmp_path / "bad.json", tmp_path / "bad.html"
    result = _run(*QUICK, "--mix", "midstream-reset=1", "--max-interruption-rate", "0",
                  "--json", str(out), "--html", str(page))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "objective missed: interruption rate" in result.stdout
    doc = json.loads(out.read_text())
    assert doc["passed"] is False and doc["objectives"]["missed"]
    assert page.read_text().count("<svg") == 4


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--users", "5", "--spawn-rate", "5", "--mix", "nowhere=1"], "unknown profile"),
        (["--users", "5", "--spawn-rate", "5", "--mix", "clean=abc"], "is not a number"),
        (["--users", "5", "--spawn-rate", "5", "--run-time", "soon"], "is not a duration"),
        (["--users", "5", "--spawn-rate", "5", "--master", "--worker"], "not both"),
        (["--spawn-rate", "5"], "--users and --spawn-rate are required"),
        (["--users", "5", "--spawn-rate", "5", "--prompt-file", "/nonexistent/p"], "cannot read"),
        (["--users", "5", "--spawn-rate", "5", "--upstream", "ftp://x"], "not an http"),
    ],
)
def test_bad_input_exit_2(args: list[str], words: str) -> None:
    """Bad input: one line naming the problem, exit 2, no traceback."""
    result = _run(*args, timeout=30)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


def test_help_does_not_import_locust() -> None:
    """`chaosstream --help` and `load --help` stay light: Locust is not imported."""
    code = (
        "import sys; from click.testing import CliRunner; from chaosstream.cli import cli; "
        "r = CliRunner().invoke(cli, ['load', '--help']); "
        "assert r.exit_code == 0 and '--mix' in r.output, r.output; "
        "assert 'locust' not in sys.modules and 'gevent' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
