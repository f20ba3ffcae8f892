"""Reports: the JSON contract, JUnit XML, the terminal table and progress lines, fault labels."""

from __future__ import annotations

import io
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from chaosstream._version import __version__
from chaosstream.cli.commands import cli
from chaosstream.faults.base import FaultEvent
from chaosstream.faults.profile import load_profile, profile_from_data
from chaosstream.proxy.record import Exchange
from chaosstream.verify.expectations import ClientRun, Evidence, evaluate
from chaosstream.verify.report import (
    TerminalProgress,
    fault_label,
    print_report,
    repro,
    repro_run,
    to_json,
    to_junit,
    write_json,
    write_junit,
)
from chaosstream.verify.results import RunReport, ScenarioResult
from chaosstream.verify.scenario import Expect, NoOptions, RetriesOptions

CLIENTS = Path(__file__).parent.parent / "programs"
ANSWER = "Hello there, streaming world."
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
OBSERVED_KEYS = [
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
]


def streamed(i: int, start: float, *, done: bool, cut: bool = False) -> Exchange:
    """A chat stream the proxy recorded; ``cut``: a disconnect fault ended it after one event."""
    ex = Exchange(
        id=i,
        method="POST",
        path="/v1/chat/completions",
        provider="openai",
        stream=True,
        started=start,
        request_body=BODY,
        status=200,
        content_type="text/event-stream",
        first_byte=start + 0.05,
        ended=start + 0.2,
        outcome="fault" if cut else "complete",
    )
    ex.upstream_chunks.append(b'data: {"choices":[{"delta":{"content":"Hello"}}]}\n\n')
    if done:
        ex.upstream_chunks.append(
            b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % ANSWER[5:].encode()
        )
        ex.upstream_chunks.append(b"data: [DONE]\n\n")
    if cut:
        ex.faults.append(FaultEvent(i, "disconnect", 0, "reset", 120.0, events=1, bytes=50))
    return ex


def clean_pass() -> ScenarioResult:
    """A clean run that printed the whole answer: `completes` passes."""
    client = ClientRun(["client"], 0, False, ANSWER, "", 0.5)
    exchanges = [streamed(1, 0.0, done=True)]
    observed, verdicts = evaluate(
        Evidence(client, exchanges, ANSWER, profile=load_profile("clean")),
        [Expect(completes=NoOptions())],
    )
    return ScenarioResult("clean", "clean", 7, observed, verdicts, client, exchanges)


def cut_swallowed(profile: str = "midstream-reset", stdout: str = "Hello") -> ScenarioResult:
    """A cut the client hid (exit 0, partial text): `completes` fails, `retries` fails."""
    client = ClientRun(["client"], 0, False, stdout, "boom <&> on stderr", 1.5)
    exchanges = [streamed(1, 0.0, done=False, cut=True)]
    loaded = (
        load_profile(profile)
        if profile == "midstream-reset"
        else profile_from_data(
            {"version": 1, "name": profile, "faults": [{"type": "disconnect", "after_events": 1}]},
            "<test>",
        )
    )
    observed, verdicts = evaluate(
        Evidence(client, exchanges, ANSWER, profile=loaded),
        [Expect(completes=NoOptions()), Expect(retries=RetriesOptions())],
    )
    return ScenarioResult(profile, profile, 7, observed, verdicts, client, exchanges)


# --- JSON ----------------------------------------------------------------------------------


def test_json_report_has_exactly_the_contract_keys(tmp_path: Path) -> None:
    """to_json/write_json: the DESIGN.md keys, observed in contract order, evidence per verdict."""
    report = RunReport(7, [clean_pass(), cut_swallowed()], "embedded mock")
    data = to_json(report)
    assert list(data) == ["tool", "version", "seed", "passed", "scenarios"]
    assert (data["tool"], data["version"], data["seed"], data["passed"]) == (
        "chaosstream",
        __version__,
        7,
        False,
    )
    clean, cut = data["scenarios"]
    for scenario in (clean, cut):
        assert list(scenario) == [
            "name",
            "profile",
            "passed",
            "observed",
            "repro",
            "repro_run",
            "expectations",
        ]
        assert list(scenario["observed"]) == OBSERVED_KEYS
    assert clean["passed"] and clean["expectations"][0]["verdict"] == "pass"
    assert cut["observed"]["silent_truncation"] and cut["observed"]["fault_met"]
    assert [(e["name"], e["verdict"]) for e in cut["expectations"]] == [
        ("completes", "fail"),
        ("retries", "fail"),
    ]
    assert all(e["evidence"] for e in cut["expectations"])
    assert cut["repro"] == "chaosstream proxy --profile midstream-reset --seed 7"

    path = tmp_path / "r.json"
    write_json(report, path)
    assert json.loads(path.read_text(encoding="utf-8")) == data
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_interrupted_is_in_the_json_only_when_a_signal_stopped_the_run() -> None:
    """`interrupted: true` (and passed false) after a signal; no such key on a normal run."""
    assert "interrupted" not in to_json(RunReport(7, [clean_pass()], "embedded mock"))
    stopped = to_json(RunReport(7, [clean_pass()], "embedded mock", interrupted=True))
    assert stopped["interrupted"] is True and stopped["passed"] is False
    assert list(stopped) == ["tool", "version", "seed", "passed", "interrupted", "scenarios"]


def test_repro_names_the_proxy_command_or_nothing() -> None:
    """A built-in profile replays by name and seed (with --upstream off the mock, a cassette
    too); a file's own profile has no name to give."""
    result = cut_swallowed()
    assert repro(result, "embedded mock") == (
        "chaosstream proxy --profile midstream-reset --seed 7"
    )
    assert repro(result, "https://api.example.test/v1?x=1&y=2") == (
        "chaosstream proxy --upstream 'https://api.example.test/v1?x=1&y=2' "
        "--profile midstream-reset --seed 7"
    )
    assert repro(result, "cassette:tapes/chat") == (
        "chaosstream proxy --upstream cassette:tapes/chat --profile midstream-reset --seed 7"
    )
    inline = cut_swallowed(profile="my-own-cut")
    assert repro(inline, "embedded mock") is None
    assert to_json(RunReport(7, [inline], "embedded mock"))["scenarios"][0]["repro"] is None


def test_repro_run_is_the_run_s_own_command_for_one_scenario() -> None:
    """repro_run: `chaosstream` + the run's origin + --only NAME --seed N + `--` and the client
    command, shell-quoted; a page has no command; no origin (not from the CLI), no repro_run."""
    result = cut_swallowed()
    origin = ["check", "--upstream", "cassette:my tapes", "--timeout-s", "10"]
    report = RunReport(7, [result], "cassette:my tapes", command=["sh", "-c", "a && b"])
    assert repro_run(result, report) is None
    assert to_json(report)["scenarios"][0]["repro_run"] is None
    report.origin = origin
    assert repro_run(result, report) == (
        "chaosstream check --upstream 'cassette:my tapes' --timeout-s 10 "
        "--only midstream-reset --seed 7 -- sh -c 'a && b'"
    )
    assert to_json(report)["scenarios"][0]["repro_run"] == repro_run(result, report)
    page = RunReport(7, [result], "embedded mock", origin=["check", "--browser", "/"])
    assert repro_run(result, page) == (
        "chaosstream check --browser / --only midstream-reset --seed 7"
    )


def test_strict_fails_a_run_whose_cassette_missed_a_request() -> None:
    """A scenario's cassette misses are in its JSON as `unmatched`; with strict they fail the
    run (passed false, a JUnit failure listing them), without it they fail nothing."""
    miss = "chaosstream cassette: no recorded request matches POST /v1/x; nearest is interaction 1"
    result = clean_pass()
    result.unmatched = [miss, miss]
    lenient = RunReport(7, [result], "cassette:t")
    assert lenient.passed and to_json(lenient)["scenarios"][0]["unmatched"] == [miss, miss]
    assert "unmatched" not in to_json(RunReport(7, [clean_pass()], "cassette:t"))["scenarios"][0]
    strict = RunReport(7, [result], "cassette:t", strict=True)
    assert not strict.passed and to_json(strict)["passed"] is False
    root = to_junit(strict)
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    case = root.findall(".//testcase")[-1]
    assert (case.get("classname"), case.get("name")) == ("chaosstream.cassette", "strict")
    failure = case.find("failure")
    assert failure is not None and failure.text == f"{miss}\n{miss}"
    console = Console(record=True, width=300, file=io.StringIO(), color_system=None)
    print_report(strict, console)
    text = console.export_text()
    assert f"UNMATCHED clean (2x): {miss}" in text
    assert "--strict: 2 request(s) matched no recording" in text


# --- JUnit ---------------------------------------------------------------------------------


def test_junit_has_a_testcase_per_expectation_with_evidence(tmp_path: Path) -> None:
    """One testcase per scenario x expectation; a failure carries evidence, profile, observed."""
    report = RunReport(7, [clean_pass(), cut_swallowed()], "embedded mock")
    path = tmp_path / "r.xml"
    write_junit(report, path)
    assert path.read_text(encoding="utf-8").startswith("<?xml version='1.0' encoding='utf-8'?>")
    root = ET.parse(path).getroot()
    assert (root.tag, root.get("tests"), root.get("failures")) == ("testsuites", "3", "2")
    suite = root.find("testsuite")
    assert suite is not None
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "3",
        "failures": "2",
        "errors": "0",
        "skipped": "0",
        "time": "2.000",
    }
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"seed": "7", "upstream": "embedded mock"}
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name"), c.get("time")) for c in cases] == [
        ("chaosstream.clean", "completes", "0.500"),
        ("chaosstream.midstream-reset", "completes", "0.750"),
        ("chaosstream.midstream-reset", "retries", "0.750"),
    ]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("type") == "ExpectationFailed"
    evidence = report.results[1].verdicts[0].evidence
    assert failure.get("message") == evidence
    text = failure.text or ""
    assert text.startswith(f"{evidence}\n\nprofile: midstream-reset (seed 7)\nobserved: {{")
    assert json.loads(text.split("observed: ", 1)[1])["silent_truncation"] is True
    assert cases[1].findtext("system-out") == "Hello"
    assert cases[1].findtext("system-err") == "boom <&> on stderr"
    assert cases[1].find("properties") is None  # no command line, no repro_run


def test_junit_failed_testcases_carry_the_repro_run_property() -> None:
    """A failed testcase has a repro_run property (first child) and a rerun line in its
    failure text; a passed one has neither."""
    result = cut_swallowed()
    result.verdicts[1].verdict = "pass"
    report = RunReport(7, [result], "embedded mock", command=["app"], origin=["check"])
    failed, passed = to_junit(report).findall(".//testcase")
    rerun = "chaosstream check --only midstream-reset --seed 7 -- app"
    assert failed[0].tag == "properties"
    assert [(p.get("name"), p.get("value")) for p in failed.iter("property")] == [
        ("repro_run", rerun)
    ]
    assert (failed.findtext("failure") or "").endswith(f"\nrerun: {rerun}")
    assert passed.find("properties") is None


def test_junit_marks_an_interrupted_run_and_clips_long_output() -> None:
    """An interrupted run says so in a property; 30,000 chars of stdout are cut to 20,000."""
    long = cut_swallowed(stdout="x" * 30_000)
    root = to_junit(RunReport(7, [long], "embedded mock", interrupted=True))
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["interrupted"] == "true"
    out = root.findtext(".//system-out") or ""
    assert out == "x" * 20_000 + "\n... (cut)"


def test_junit_attaches_artifacts_of_a_failed_scenario() -> None:
    """Saved files go in system-out as [[ATTACHMENT|path]], for failed testcases only."""
    result = cut_swallowed()
    result.observed.artifacts = {"screenshot": "/tmp/a.png", "console": "/tmp/a.log"}
    result.verdicts[1].verdict = "pass"
    cases = to_junit(RunReport(7, [result], "embedded mock")).findall(".//testcase")
    failed, passed = (c.findtext("system-out") or "" for c in cases)
    assert failed == "Hello\n[[ATTACHMENT|/tmp/a.png]]\n[[ATTACHMENT|/tmp/a.log]]"
    assert passed == "Hello"


def test_junit_and_record_files(tmp_path: Path) -> None:
    """JUnit: a testcase per scenario x expectation with evidence; --record: JSON lines."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "version: 1\nscenarios:\n"
        "  - {name: close, profile: midstream-close, expect: [completes, surfaces_error]}\n"
        "  - {name: clean, profile: clean, expect: [completes]}\n",
        encoding="utf-8",
    )
    junit, record = tmp_path / "r.xml", tmp_path / "x.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(path),
            "--junit",
            str(junit),
            "--record",
            str(record),
            "--",
            sys.executable,
            str(CLIENTS / "swallow.py"),
        ],
    )
    assert result.exit_code == 1
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("chaosstream.close", "completes"),
        ("chaosstream.close", "surfaces_error"),
        ("chaosstream.clean", "completes"),
    ]
    failure = cases[0].find("failure")
    message = failure.get("message") if failure is not None else ""
    assert message and "characters shown" in message and "to the end" in message, message
    assert cases[2].find("failure") is None
    lines = record.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(r["id"], r["outcome"], r["stream"]) for r in rows] == [
        (1, "fault", True),
        (1, "complete", True),
    ]
    assert rows[0]["client_text"] and rows[1]["response_text"].startswith(rows[0]["client_text"])
    assert (
        rows[0]["faults"][0]["type"] == "disconnect"
        and rows[0]["fingerprint"] == rows[1]["fingerprint"]
    )


# --- terminal --------------------------------------------------------------------------------


def event(kind: str, action: str, detail: str = "", events: int = 0) -> FaultEvent:
    return FaultEvent(1, kind, 0, action, 10.0, events=events, detail=detail)


@pytest.mark.parametrize(
    ("fault", "label"),
    [
        (event("http_error", "refuse", "status 429"), "429 refused"),
        (event("concurrency_limit", "refuse", "status 503"), "503 refused"),
        (event("disconnect", "reset", events=12), "cut after 12 events (RST)"),
        (event("disconnect", "close", events=3), "cut after 3 events (FIN, no end event)"),
        (event("disconnect", "stall", events=0), "cut after 0 events then silence"),
        (event("stream_error", "rate_limit", events=4), "rate limit error event after 4 events"),
        (event("corrupt", "malformed_json", events=2), "malformed JSON after 2 events"),
        (event("corrupt", "drop_terminal", events=9), "drop terminal after 9 events"),
        (event("buffer", "flush", "300 bytes held"), "held back until the end"),
        (event("latency", "delay_first_byte", "3000.0 ms"), "first byte delayed 3000 ms"),
        (event("latency", "delay_events", "12.6 ms"), "events delayed 13 ms"),
        (
            event("link_delay", "delay_upload", "300 ms +/- 40 ms"),
            "upload latency 300 ms +/- 40 ms",
        ),
        (event("link_delay", "delay", "300 ms +/- 0 ms"), "latency 300 ms +/- 0 ms"),
        (event("link_down", "throttle", "50000 B/s"), "400 kbit/s down"),
        (event("link_up", "throttle", "12.5/s"), "12.5/s up"),
        (event("link_loss", "stall", "1 lost, 200 ms"), "packet loss: stalls"),
        (event("loss", "reset", "3 retransmissions lost"), "packet loss: reset"),
        (event("throttle", "throttle", "20/s"), "throttled to 20/s"),
        (event("noop", "pass_through"), "noop pass through"),
    ],
)
def test_fault_labels_read_as_a_person_says_them(fault: FaultEvent, label: str) -> None:
    """Each fault family's log entry becomes a short phrase for the table."""
    assert fault_label(fault) == label


def test_terminal_table_lists_scenarios_failures_and_the_repro() -> None:
    """The table's rows, each failure's evidence, the command that replays it, the tally."""
    report = RunReport(7, [clean_pass(), cut_swallowed()], "embedded mock")
    console = Console(record=True, width=220, file=io.StringIO(), color_system=None)
    print_report(report, console, title="scorecard")
    text = console.export_text()
    assert "scorecard  (seed 7, upstream: embedded mock)" in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert "PASS" in rows["clean"] and "completed, 1 req, exit 0" in rows["clean"]
    assert "FAIL" in rows["midstream-reset"]
    assert "cut after 1 events (RST)" in rows["midstream-reset"]
    assert "SILENT TRUNCATION, 1 req, exit 0" in rows["midstream-reset"]
    for verdict in report.results[1].verdicts:
        assert f"FAIL midstream-reset / {verdict.name}: {verdict.evidence[:40]}" in text
    assert "  reproduce: chaosstream proxy --profile midstream-reset --seed 7" in text
    assert "rerun:" not in text  # no command line started this run
    assert text.rstrip().endswith("1/2 scenarios passed")
    report.origin, report.command = ["check"], ["python", "app.py"]
    print_report(report, console, title="scorecard")
    rerun = "  rerun: chaosstream check --only midstream-reset --seed 7 -- python app.py"
    again = console.export_text()
    assert again.count("rerun:") == 1 and rerun in again


def test_progress_off_a_terminal_prints_a_start_and_an_end_line() -> None:
    """In a CI log each scenario gets a start line with its limit and an end line with PASS/FAIL."""
    out = io.StringIO()
    progress = TerminalProgress(Console(file=out, force_terminal=False, width=120))
    progress.start("clean", 0, 2, 5.0)
    progress.tick()
    progress.end(clean_pass())
    progress.start("midstream-reset", 1, 2, 60.0)
    progress.end(cut_swallowed())
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/2] clean  started (time limit 5 s)"
    assert lines[1].startswith("[1/2] clean  0.") and lines[1].endswith(" s / 5 s  PASS")
    assert lines[2] == "[2/2] midstream-reset  started (time limit 60 s)"
    assert lines[3].endswith(" s / 60 s  FAIL") and len(lines) == 4
