"""Scenario files: shorthand and options load, and every mistake names file:line: field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaosstream.verify.scenario import (
    BrowserClient,
    CompletesOptions,
    Expect,
    NoOptions,
    RetriesOptions,
    Scenario,
    load_scenarios,
)
from chaosstream.yamlfile import MAX_INPUT_BYTES, InputError

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def bad(tmp_path: Path, text: str) -> str:
    """The message a scenario file gets, asserting it is an input error."""
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_scenarios(path)
    return str(err.value)


# --- loading ---------------------------------------------------------------------------


def test_scenario_file_loads_with_defaults(tmp_path: Path) -> None:
    """Shorthand expectations, options, inline profiles and relative profile paths all load."""
    (tmp_path / "p.yaml").write_text("version: 1\nname: mine\nfaults: []\n", encoding="utf-8")
    path = tmp_path / "s.yaml"
    path.write_text(
        "version: 1\ncommand: [python, c.py]\nscenarios:\n"
        "  - {name: a, profile: p.yaml, expect: [completes, {retries: {max_attempts: 3}}]}\n"
        "  - {name: b, profile: {version: 1, name: inline}, timeout_s: 5}\n",
        encoding="utf-8",
    )
    suite = load_scenarios(path)
    assert suite.command == ["python", "c.py"]
    assert [p.name for p in suite.profiles] == ["mine", "inline"]
    assert [e.name for e in suite.scenarios[0].expect] == ["completes", "retries"]
    assert suite.scenarios[0].expect[1].options.max_attempts == 3  # type: ignore[attr-defined]
    assert suite.scenarios[1].timeout_s == 5


def test_null_options_mean_the_defaults(tmp_path: Path) -> None:
    """`- completes:` and `- retries:` (null options) load with each expectation's defaults."""
    path = write(
        tmp_path,
        "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
        "    expect:\n      - completes:\n      - retries:\n",
    )
    expect = load_scenarios(path).scenarios[0].expect
    assert [(e.name, e.options) for e in expect] == [
        ("completes", CompletesOptions()),
        ("retries", RetriesOptions(max_attempts=5, within_s=30.0)),
    ]


def test_scenario_defaults_without_command_seed_or_client(tmp_path: Path) -> None:
    """A bare scenario: no command (given after `--`), 60 s limit, profile seed, command client."""
    suite = load_scenarios(
        write(tmp_path, "version: 1\nscenarios:\n  - {name: a, profile: clean}\n")
    )
    scenario = suite.scenarios[0]
    assert suite.command is None and suite.source == str(tmp_path / "s.yaml")
    assert (scenario.expect, scenario.timeout_s, scenario.seed, scenario.client) == (
        [Expect(resilient=NoOptions())],
        60.0,
        None,
        None,
    )
    assert [p.name for p in suite.profiles] == ["clean"]


@pytest.mark.parametrize("expect", ["", "    expect: []\n", "    expect:\n"])
def test_no_expectations_means_the_battery_rule(tmp_path: Path, expect: str) -> None:
    """A scenario naming no expectation (left out, empty or null) is judged by `resilient`."""
    path = write(tmp_path, "version: 1\nscenarios:\n  - name: a\n    profile: clean\n" + expect)
    assert [e.name for e in load_scenarios(path).scenarios[0].expect] == ["resilient"]
    assert [e.name for e in Scenario(name="b", profile="clean").expect] == ["resilient"]


def test_run_without_expectations_judges_the_battery_rule(tmp_path: Path) -> None:
    """`chaosstream run` on a scenario with no `expect` judges `resilient`: a cut answer printed
    as complete fails with evidence and exit 1, never an evidence-free pass."""
    path = write(
        tmp_path,
        f"version: 1\ncommand: [{sys.executable!r}, {str(PROGRAMS / 'swallow.py')!r}]\n"
        "scenarios:\n  - {name: no-expect, profile: midstream-reset, timeout_s: 20}\n",
    )
    report = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, "-m", "chaosstream", "run", str(path), "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    verdicts = json.loads(report.read_text())["scenarios"][0]["expectations"]
    assert [(v["name"], v["verdict"]) for v in verdicts] == [("resilient", "fail")]
    assert "silent truncation" in verdicts[0]["evidence"], verdicts


def test_resilient_is_an_expectation_word(tmp_path: Path) -> None:
    """`resilient` (the battery's rule, as check reports it) is accepted in scenario files."""
    path = write(
        tmp_path,
        "version: 1\nscenarios:\n  - name: a\n    profile: clean\n    expect: [resilient]\n",
    )
    suite = load_scenarios(path)
    assert [e.name for e in suite.scenarios[0].expect] == ["resilient"]


def test_scenario_file_with_a_browser_client(tmp_path: Path) -> None:
    """A scenario file names a page client, its selectors and the page-only expectations."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "version: 1\n"
        "scenarios:\n"
        "  - name: page\n"
        "    profile: clean\n"
        "    client: {browser: {prompt: hi, selectors: {output: '#answer'}}}\n"
        "    expect: [shows_typing, {stable_layout: {max_cls: 0.05}}]\n"
    )
    suite = load_scenarios(path)
    client = suite.scenarios[0].client
    assert client is not None and client.browser == BrowserClient(
        prompt="hi", selectors={"output": "#answer"}
    )
    assert client.browser.selectors.stop == '[data-testid="stop"]'


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: 1\nscenarios:\n  - {name: a, profile: clean, expect: [waits]}\n",
            ":3: scenarios[0].expect[0]: unknown expectation 'waits'",
        ),
        (
            "version: 1\nscenarios:\n  - name: a\n    profile: nope-nope\n",
            ":4: scenarios[0].profile: unknown profile 'nope-nope'",
        ),
        (
            "version: 1\nscenarios:\n  - {name: a, profile: clean}\n"
            "  - {name: a, profile: clean}\n",
            ":4: scenarios[1].name: duplicate scenario name 'a'",
        ),
        ("version: 1\nscenarios: []\n", ":2: scenarios: List should have at least 1 item"),
    ],
)
def test_scenario_errors_name_file_line_field(tmp_path: Path, text: str, message: str) -> None:
    """Each scenario file mistake is an InputError naming file:line: field."""
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_scenarios(path)
    assert f"{path}{message}" in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
            "    expect:\n      - {completes: {}, resumes: {}}\n",
            ":6: scenarios[0].expect[0]: give exactly one expectation per entry, one of "
            "surfaces_error, retries, falls_back, resumes, reinitializes, completes, "
            "flags_incomplete, cancels_upstream, shows_typing, stable_layout, resilient "
            "(got resumes, completes)",
        ),
        ("version: 2\nscenarios:\n  - {name: a, profile: clean}\n", ":1: version: "),
        (
            "version: 1\ncommand: []\nscenarios:\n  - {name: a, profile: clean}\n",
            ":2: command: List should have at least 1 item",
        ),
        (
            "version: 1\nscenarioz: []\nscenarios:\n  - {name: a, profile: clean}\n",
            ":2: scenarioz: unknown field; did you mean 'scenarios'?",
        ),
        (
            "version: 1\nscenarios:\n  - name: a\n    profile: clean\n    timeout_s: 0\n",
            ":5: scenarios[0].timeout_s: Input should be greater than 0",
        ),
        ("- a\n- b\n", ":1: expected a mapping at the top level, got list"),
        (
            "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
            "    client: {browser: {}}\n    expect: [{stable_layout: {max_cls: -1}}]\n",
            ":6: scenarios[0].expect[0].stable_layout.max_cls: "
            "Input should be greater than or equal to 0",
        ),
        (
            "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
            "    client: {browser: {selectors: {outptu: x}}}\n",
            ":5: scenarios[0].client.browser.selectors.outptu: unknown field; "
            "did you mean 'output'?",
        ),
        (
            "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
            "    expect: [{retries: {max_attempts: 0}}]\n",
            ":5: scenarios[0].expect[0].retries.max_attempts: "
            "Input should be greater than or equal to 1",
        ),
        (
            "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
            "    error_signal: {stderr_regex: '('}\n",
            ":5: scenarios[0].error_signal.stderr_regex: not a regular expression "
            "(missing ), unterminated subpattern at position 0)",
        ),
        (
            "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
            "    error_signal:\n      stdout_regex: 'a[b'\n",
            ":6: scenarios[0].error_signal.stdout_regex: not a regular expression "
            "(unterminated character set at position 1)",
        ),
        (
            "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
            "    expect: [{flags_incomplete: {pattern: '*stop'}}]\n",
            ":5: scenarios[0].expect[0].flags_incomplete.pattern: not a regular expression "
            "(nothing to repeat at position 0)",
        ),
    ],
    ids=[
        "two-in-one-entry",
        "version-2",
        "empty-command",
        "unknown-top-level-field",
        "zero-timeout",
        "not-a-mapping",
        "negative-max-cls",
        "unknown-selector",
        "zero-attempts",
        "bad-stderr-regex",
        "bad-stdout-regex",
        "bad-flags-pattern",
    ],
)
def test_more_mistakes_name_file_line_field(tmp_path: Path, text: str, message: str) -> None:
    """Field, option and shape mistakes, browser spec included, each name file:line: field."""
    msg = bad(tmp_path, text)
    assert f"{tmp_path / 's.yaml'}{message}" in msg, msg
    assert "Value error" not in msg and "Traceback" not in msg, msg


def test_run_refuses_a_bad_regex_before_the_client_runs(tmp_path: Path) -> None:
    """`chaosstream run` on an `error_signal` regex that does not compile exits 2 with
    file:line: field, no traceback, and never starts the client."""
    marker = tmp_path / "client-ran"
    path = write(
        tmp_path,
        "version: 1\nscenarios:\n  - name: a\n    profile: clean\n    expect: [surfaces_error]\n"
        '    error_signal: {stderr_regex: "("}\n',
    )
    done = subprocess.run(
        [sys.executable, "-m", "chaosstream", "run", str(path), "--", "touch", str(marker)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert f"{path}:6: scenarios[0].error_signal.stderr_regex: not a regular expression" in out
    assert "Traceback" not in out and not marker.exists(), out


def test_inline_profile_errors_point_inside_the_scenario(tmp_path: Path) -> None:
    """A mistake inside an inline profile names the scenario's profile path and its own line."""
    msg = bad(
        tmp_path,
        "version: 1\nscenarios:\n  - name: a\n    profile:\n      version: 1\n      name: x\n"
        "      network: {latency_ms: -1}\n      faults:\n        - {type: disconnect, mode: x}\n",
    )
    lines = msg.splitlines()
    path = tmp_path / "s.yaml"
    assert lines[0] == (
        f"{path}:7: scenarios[0].profile.network.latency_ms: "
        "Input should be greater than or equal to 0"
    ), msg
    assert lines[1].startswith(f"{path}:9: scenarios[0].profile.faults[0].mode: "), msg
    assert len(lines) == 2, msg


def test_missing_profile_file_is_named_relative_to_the_scenario_file(tmp_path: Path) -> None:
    """A profile path is resolved next to the scenario file; a missing one names that path."""
    msg = bad(tmp_path, "version: 1\nscenarios:\n  - name: a\n    profile: sub/none.yaml\n")
    assert msg == (
        f"{tmp_path / 's.yaml'}:4: scenarios[0].profile: {tmp_path / 'sub' / 'none.yaml'}: "
        "no such file"
    ), msg


def test_page_expectation_without_a_page_is_bad_input(tmp_path: Path) -> None:
    """shows_typing on a command client is an error naming the file, line and field."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "version: 1\nscenarios:\n  - name: cmd\n    profile: clean\n    expect: [shows_typing]\n"
    )
    with pytest.raises(InputError, match=r"s\.yaml:3: scenarios\[0\].*only be judged on a page"):
        load_scenarios(path)


def test_no_pydantic_prefix_in_messages(tmp_path: Path) -> None:
    """An unknown expectation reads plainly: no "Value error, " and a did-you-mean."""
    path = write(
        tmp_path,
        "version: 1\nscenarios:\n  - name: a\n    profile: clean\n    expect: [complete]\n",
    )
    with pytest.raises(InputError) as err:
        load_scenarios(path)
    msg = str(err.value)
    assert "Value error" not in msg, msg
    assert ":5: scenarios[0].expect[0]: unknown expectation 'complete'" in msg, msg
    assert "did you mean 'completes'?" in msg, msg


def test_duplicate_top_level_key_in_scenario_file(tmp_path: Path) -> None:
    """A scenario file with two `scenarios:` keys is refused, naming both lines."""
    path = write(
        tmp_path,
        "version: 1\nscenarios:\n  - name: a\n    profile: clean\n"
        "scenarios:\n  - name: b\n    profile: clean\n",
    )
    with pytest.raises(
        InputError, match=r"s\.yaml:5: duplicate key 'scenarios' \(first at line 2\)"
    ):
        load_scenarios(path)


def test_scenario_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    """A scenario file one byte over the cap is refused before parsing."""
    path = write(tmp_path, "#" * MAX_INPUT_BYTES + "\n", "big.yaml")
    with pytest.raises(InputError, match="larger than the 1 MiB input cap"):
        load_scenarios(path)


def test_missing_scenario_file_is_bad_input(tmp_path: Path) -> None:
    """A scenario file that does not exist is an InputError naming it, not an OSError."""
    with pytest.raises(InputError, match=r"nothing\.yaml: no such file"):
        load_scenarios(tmp_path / "nothing.yaml")
