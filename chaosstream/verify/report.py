"""Reports of a run: the terminal table, JSON (the contract in DESIGN.md) and JUnit XML."""

from __future__ import annotations

import json
import shlex
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from chaosstream._version import __version__
from chaosstream.faults.base import FaultEvent
from chaosstream.faults.profile import builtin_names
from chaosstream.verify.results import RunReport, ScenarioResult

__all__ = [
    "TerminalProgress",
    "fault_label",
    "print_report",
    "repro",
    "repro_run",
    "to_json",
    "to_junit",
    "write_json",
    "write_junit",
]


def to_json(report: RunReport) -> dict[str, Any]:
    """The report as the JSON contract: exactly these keys (plus ``interrupted`` when a
    signal stopped the run, so a CI job can tell a cancelled run from a failed one), and per
    scenario ``repro_run`` (the command re-running it with the same client) and, when a
    cassette had no recording for some request, ``unmatched``."""
    out: dict[str, Any] = {
        "tool": "chaosstream",
        "version": __version__,
        "seed": report.seed,
        "passed": report.passed,
    }
    if report.interrupted:
        out["interrupted"] = True
    scenarios = []
    for r in report.results:
        scenario: dict[str, Any] = {
            "name": r.name,
            "profile": r.profile,
            "passed": r.passed,
            "observed": r.observed.as_dict(),
            "repro": repro(r, report.upstream),
            "repro_run": repro_run(r, report),
            "expectations": [v.as_dict() for v in r.verdicts],
        }
        if r.unmatched:
            # Only when a cassette missed: a report on a hit cassette (or none) keeps its keys.
            scenario["unmatched"] = list(r.unmatched)
        scenarios.append(scenario)
    return {**out, "scenarios": scenarios}


def repro(result: ScenarioResult, upstream: str) -> str | None:
    """The one command that replays a scenario's faults: the proxy with its profile and seed.

    Same seed + same request sequence = same faults (DESIGN.md, profiles), so pointing
    the client at this proxy meets what it met here. None for a profile that is not a
    built-in (a scenario file's own): there is no name to give.
    """
    if result.profile not in builtin_names():
        return None
    command = ["chaosstream", "proxy"]
    # Not the embedded mock: a server, or a cassette (docs/cassettes.md), which makes the
    # repro offline and the upstream's answers the same as in the failed run.
    if upstream.startswith(("http://", "https://", "cassette:")):
        command += ["--upstream", upstream]
    return shlex.join([*command, "--profile", result.profile, "--seed", str(result.seed)])


def repro_run(result: ScenarioResult, report: RunReport) -> str | None:
    """The one command that re-runs just this scenario with the same client, e.g.
    ``chaosstream check --upstream cassette:tapes --only midstream-close --seed 7 -- python
    app.py``: the run's own command line (``report.origin``) with ``--only`` and ``--seed``.

    The seed is the scenario's own (a scenario file may set one per scenario), so the
    same faults fire on the same requests. None when no command line started the run.
    """
    if not report.origin:
        return None
    words = ["chaosstream", *report.origin, "--only", result.name, "--seed", str(result.seed)]
    # A page scenario has no client command; the browser words are in the origin.
    if report.command and result.page is None:
        words += ["--", *report.command]
    return shlex.join(words)


def write_json(report: RunReport, path: str | Path) -> None:
    """Write :func:`to_json` to ``path``."""
    Path(path).write_text(json.dumps(to_json(report), indent=2) + "\n", encoding="utf-8")


def to_junit(report: RunReport) -> ET.Element:
    """JUnit XML: one testcase per scenario x expectation, evidence in the failure."""
    verdicts = [(r, v) for r in report.results for v in r.verdicts]
    failures = sum(1 for _, v in verdicts if v.verdict == "fail")
    total_time = sum(r.client.duration_s for r in report.results)
    suites = ET.Element(
        "testsuites", name="chaosstream", tests=str(len(verdicts)), failures=str(failures)
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="chaosstream",
        tests=str(len(verdicts)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{total_time:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="seed", value=str(report.seed))
    ET.SubElement(props, "property", name="upstream", value=report.upstream)
    if report.interrupted:
        ET.SubElement(props, "property", name="interrupted", value="true")
    if report.strict:
        ET.SubElement(props, "property", name="strict", value="true")
    for result in report.results:
        share = result.client.duration_s / max(1, len(result.verdicts))
        rerun = repro_run(result, report)
        for verdict in result.verdicts:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"chaosstream.{result.name}",
                name=verdict.name,
                time=f"{share:.3f}",
            )
            if verdict.verdict == "fail":
                if rerun is not None:
                    # A testcase's <properties> come first (pytest's record_property layout).
                    case_props = ET.SubElement(case, "properties")
                    ET.SubElement(case_props, "property", name="repro_run", value=rerun)
                failure = ET.SubElement(
                    case, "failure", message=verdict.evidence, type="ExpectationFailed"
                )
                failure.text = (
                    f"{verdict.evidence}\n\nprofile: {result.profile} (seed {result.seed})\n"
                    f"observed: {json.dumps(result.observed.as_dict())}"
                    + (f"\nrerun: {rerun}" if rerun is not None else "")
                )
            out = ET.SubElement(case, "system-out")
            out.text = _clip(result.client.stdout)
            if verdict.verdict == "fail" and result.observed.artifacts:
                # The Jenkins/GitLab attachment convention: one [[ATTACHMENT|path]] per file.
                out.text += "".join(
                    f"\n[[ATTACHMENT|{path}]]" for path in result.observed.artifacts.values()
                )
            err = ET.SubElement(case, "system-err")
            err.text = _clip(result.client.stderr)
    if report.strict and report.unmatched:
        # --strict: the cassette misses are a failure of their own, so CI shows them.
        case = ET.SubElement(suite, "testcase", classname="chaosstream.cassette", name="strict")
        failure = ET.SubElement(
            case,
            "failure",
            message=f"{len(report.unmatched)} request(s) matched no recording",
            type="CassetteUnmatched",
        )
        failure.text = "\n".join(report.unmatched)
        for node in (suites, suite):
            node.set("tests", str(len(verdicts) + 1))
            node.set("failures", str(failures + 1))
    return suites


def write_junit(report: RunReport, path: str | Path) -> None:
    """Write :func:`to_junit` to ``path``."""
    tree = ET.ElementTree(to_junit(report))
    ET.indent(tree)
    tree.write(str(path), encoding="utf-8", xml_declaration=True)


def _clip(text: str, limit: int = 20_000) -> str:
    return text if len(text) <= limit else text[:limit] + "\n... (cut)"


def _kbps(detail: str) -> str:
    # Throttle details read "50000 B/s"; a link's speed reads better in kbit/s.
    number = detail.removesuffix(" B/s")
    try:
        return f"{float(number) * 8 / 1000:g} kbit/s"
    except ValueError:
        return detail


def _whole_ms(detail: str) -> str:
    # Latency details read "3000.0 ms"; whole milliseconds are enough to read.
    try:
        return f"{float(detail.removesuffix(' ms')):.0f} ms"
    except ValueError:
        return detail


def fault_label(f: FaultEvent) -> str:
    """A fault as a person says it: ``429 refused``, ``cut after 12 events (RST)``."""
    n, kind, detail = f.events, f.type, f.detail
    if f.action == "refuse":
        return f"{detail.removeprefix('status ')} refused"
    if kind == "disconnect":
        how = {"reset": "(RST)", "close": "(FIN, no end event)", "stall": "then silence"}
        return f"cut after {n} events {how.get(f.action, f'({f.action})')}"
    if kind == "stream_error":
        return f"{f.action.replace('_', ' ')} error event after {n} events"
    if kind == "corrupt":
        return f"{f.action.replace('_', ' ').replace('json', 'JSON')} after {n} events"
    if kind == "buffer":
        return "held back until the end"
    if kind == "latency":
        what = "first byte" if f.action == "delay_first_byte" else "events"
        return f"{what} delayed {_whole_ms(detail)}"
    if kind == "link_delay":
        return f"{'upload ' if f.action == 'delay_upload' else ''}latency {detail}"
    if kind in ("link_down", "link_up"):
        return f"{_kbps(detail)} {'down' if kind == 'link_down' else 'up'}"
    if kind in ("loss", "link_loss"):
        return f"packet loss: {'reset' if f.action == 'reset' else 'stalls'}"
    if kind == "throttle":
        return f"throttled to {detail}"
    return f"{kind} {f.action.replace('_', ' ')}"


def _behaviour(r: ScenarioResult) -> str:
    o = r.observed
    if o.completed:
        what = "completed"
    elif o.silent_truncation:
        what = "SILENT TRUNCATION"
    elif o.surfaced_error:
        what = "surfaced error"
    elif r.client.timed_out:
        what = "hung"
    else:
        what = "no answer"
    extras = [w.replace("_", " ") for w in ("retried", "fell_back", "resumed") if getattr(o, w)]
    if not o.respected_retry_after:
        extras.append("ignored Retry-After")
    code = (
        "page" if o.page is not None else "killed" if o.exit_code is None else f"exit {o.exit_code}"
    )
    return ", ".join([what, *extras, f"{o.attempts} req", code])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_report(report: RunReport, console: Console, title: str = "chaosstream") -> None:
    """The summary table, then the evidence of every failure."""
    table = Table(title=f"{title}  (seed {report.seed}, upstream: {report.upstream})")
    # TTFT: the proxy's first byte to the client; shown: the first answer text on the
    # client's stdout or page (DESIGN.md, "Verdict words").
    columns = ("scenario", "profile", "faults fired", "observed", "TTFT ms", "shown ms", "verdict")
    for column in columns:
        table.add_column(column)
    for r in report.results:
        fired = sorted({fault_label(f) for e in r.exchanges for f in e.faults})
        table.add_row(
            r.name,
            r.profile,
            ", ".join(fired) or "-",
            _behaviour(r),
            _ms(r.observed.ttft_ms),
            _ms(r.observed.ttft_shown_ms),
            Text("PASS", style="bold green") if r.passed else Text("FAIL", style="bold red"),
        )
    console.print(table)
    for r in report.results:
        failed = [v for v in r.verdicts if v.verdict == "fail"]
        for v in failed:
            console.print(Text(f"FAIL {r.name} / {v.name}: ", style="bold red"), end="")
            console.print(v.evidence, markup=False, highlight=False)
        # One line each, never wrapped at the console's width: a command is pasted whole.
        command = repro(r, report.upstream) if failed else None
        if command is not None:
            console.print(f"  reproduce: {command}", markup=False, highlight=False, soft_wrap=True)
        rerun = repro_run(r, report) if failed else None
        if rerun is not None:
            console.print(f"  rerun: {rerun}", markup=False, highlight=False, soft_wrap=True)
    unmatched = report.unmatched
    label = "UNMATCHED" if report.strict else "unmatched"
    for r in report.results:
        # A retrying client repeats its miss: each distinct reason once, with its count.
        for line, n in list(Counter(r.unmatched).items())[:20]:
            times = f" ({n}x)" if n > 1 else ""
            console.print(Text(f"{label} {r.name}{times}: ", style="bold red"), end="")
            console.print(line, markup=False, highlight=False)
    if unmatched and report.strict:
        # The words of `mock --strict` (cli/commands.py).
        line = f"--strict: {len(unmatched)} request(s) matched no recording"
        console.print(Text(line, style="bold red"))
    elif unmatched:
        # Without --strict the misses were only the client's 404s: say so, fail nothing.
        n = len(unmatched)
        console.print(f"cassette: {n} request(s) matched no recording (--strict fails the run)")
    passed = sum(1 for r in report.results if r.passed)
    style = "bold green" if report.passed else "bold red"
    console.print(Text(f"{passed}/{len(report.results)} scenarios passed", style=style))


class TerminalProgress:
    """Scenario name, a spinner, the elapsed time against the scenario's limit on stderr;
    one line per result. Off a terminal (CI logs) the spinner is invisible, so a line
    says when each scenario starts: a long silent stall is not mistaken for a hang."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None
        self._started = 0.0
        self._label = ""
        self._limit = ""

    def start(self, name: str, index: int, total: int, timeout_s: float) -> None:
        """A scenario started; ``timeout_s`` is when its client is killed as hung."""
        self._started = time.monotonic()
        self._label = f"[{index + 1}/{total}] {name}"
        self._limit = f"{timeout_s:g} s"
        if not self.console.is_terminal:
            self.console.print(f"{self._label}  started (time limit {self._limit})", markup=False)
            return
        self._status = self.console.status(self._elapsed(), refresh_per_second=4)
        self._status.start()

    def _elapsed(self) -> str:
        return f"{self._label}  {time.monotonic() - self._started:.0f} s / {self._limit}"

    def tick(self) -> None:
        """Refresh the elapsed time."""
        if self._status is not None:
            self._status.update(self._elapsed())

    def end(self, result: ScenarioResult) -> None:
        """A scenario ended."""
        if self._status is not None:
            self._status.stop()
            self._status = None
        mark = Text("PASS", style="green") if result.passed else Text("FAIL", style="red")
        took = time.monotonic() - self._started
        line = Text(f"{self._label}  {took:.1f} s / {self._limit}  ")
        line.append_text(mark)
        self.console.print(line)
