"""`run --timeout-s/--only`, `check --list/--help` and the progress lines off a terminal."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from chaosstream.cli.commands import cli
from chaosstream.verify.battery import BATTERY

CLIENTS = Path(__file__).parent.parent / "programs"


def _run(
    tmp_path: Path, scenarios: str, client: str, *extra: str
) -> tuple[int, str, dict[str, Any]]:
    """`chaosstream run` on a scenario file: (exit code, output, JSON report)."""
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nscenarios:\n" + scenarios, encoding="utf-8")
    report = tmp_path / "r.json"
    client_argv = [sys.executable, str(CLIENTS / client)]
    result = CliRunner().invoke(
        cli,
        ["run", str(path), "--seed", "2", "--json", str(report), *extra, "--", *client_argv],
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return result.exit_code, result.output, data


def test_progress_off_a_terminal_says_when_each_scenario_starts_and_its_limit(
    tmp_path: Path,
) -> None:
    """Off a TTY a line announces each scenario with its time limit; the end line shows it too."""
    code, out, _ = _run(
        tmp_path,
        "  - {name: first, profile: clean, expect: [completes], timeout_s: 7}\n"
        "  - {name: second, profile: clean, expect: [completes], timeout_s: 9.5}\n",
        "well_behaved.py",
    )
    assert code == 0, out
    assert "[1/2] first  started (time limit 7 s)" in out
    assert "[2/2] second  started (time limit 9.5 s)" in out
    assert re.search(r"\[1/2\] first  \d+\.\d s / 7 s  PASS", out), out


def test_run_timeout_s_is_the_default_only_for_scenarios_without_one(tmp_path: Path) -> None:
    """`run --timeout-s 2` kills a hung client at 2 s, but a scenario's own timeout_s wins."""
    started = time.monotonic()
    code, out, data = _run(
        tmp_path,
        "  - {name: unset, profile: clean, expect: [completes]}\n"
        "  - {name: own, profile: clean, expect: [completes], timeout_s: 3}\n",
        "hang.py",
        "--timeout-s",
        "2",
    )
    assert code == 1, out
    assert "[1/2] unset  started (time limit 2 s)" in out
    assert "[2/2] own  started (time limit 3 s)" in out
    # The scenario file's default would be 60 s per hang.
    assert time.monotonic() - started < 30
    assert [s["name"] for s in data["scenarios"]] == ["unset", "own"]


def test_run_only_runs_the_named_scenarios(tmp_path: Path) -> None:
    """`--only NAME` (repeatable) runs those scenarios, in the file's order."""
    code, out, data = _run(
        tmp_path,
        "  - {name: a, profile: clean, expect: [completes]}\n"
        "  - {name: b, profile: clean, expect: [completes]}\n"
        "  - {name: c, profile: clean, expect: [completes]}\n",
        "well_behaved.py",
        "--only",
        "c",
        "--only",
        "a",
    )
    assert code == 0, out
    assert [s["name"] for s in data["scenarios"]] == ["a", "c"]


def test_run_only_an_unknown_name_is_bad_input(tmp_path: Path) -> None:
    """An `--only` name the file lacks: exit 2, the name cut short, the known names listed."""
    code, out, data = _run(
        tmp_path,
        "  - {name: clean-run, profile: clean, expect: [completes]}\n",
        "well_behaved.py",
        "--only",
        "clean-rn" + "x" * 300,
    )
    assert code == 2, out
    assert "clean-run" in out and "x" * 100 not in out
    assert "Traceback" not in out and data == {}


def test_check_list_prints_the_battery_without_a_command() -> None:
    """`check --list`: one line per battery scenario, in order, with what it does; exit 0."""
    result = CliRunner().invoke(cli, ["check", "--list"])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert names == [name for name, _ in BATTERY]
    assert "Retry-After" in result.output  # the 429 scenario says what it does


def test_check_help_lists_battery_environment_and_exit_codes() -> None:
    """`check --help` names every battery scenario, the client's variables, every exit code."""
    result = CliRunner().invoke(cli, ["check", "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    for name, _ in BATTERY:
        assert name in text
    for var in ("CHAOSSTREAM_URL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY"):
        assert var in text
    for code in ("130", "143"):
        assert re.search(rf"^\s+{code}\s", text, re.M), text
    assert "--list" in text
