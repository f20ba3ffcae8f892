"""``chaosstream demo``: the `check` battery against a plain client and the reference one.

Everything runs on loopback and needs no key: the embedded mock model, the
proxy, and two real subprocesses. :mod:`chaosstream.examples.naive_client` is
the OpenAI SDK quickstart with the SDK's defaults, what most first clients
look like; :mod:`chaosstream.examples.resilient_client` is the example to
copy. The table puts them side by side, so what the battery catches is on
screen, then says how to run it on your own client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chaosstream.faults.profile import load_profile
from chaosstream.verify.battery import battery
from chaosstream.verify.scenario import Scenario

if TYPE_CHECKING:
    from chaosstream.clients.runner import RunOptions
    from chaosstream.faults.profile import Profile
    from chaosstream.verify.results import RunReport, ScenarioResult

# The reference client's idle timeout: longer than the battery's slowest first
# token (3 s), short enough that its silent stall costs seconds, not minutes.
IDLE_TIMEOUT_S = 4.0
# Each scenario's time limit in the demo. The naive client keeps the SDK's
# 600 s read timeout, so the silent stall holds it until this limit; 10 s is
# twice what the reference client needs there (idle timeout + retry) and keeps
# both batteries together near 75 s on 2 cores.
SCENARIO_TIMEOUT_S = 10.0

NAIVE_CLIENT = [sys.executable, "-m", "chaosstream.examples.naive_client"]
"""The plain client: OpenAI SDK quickstart, SDK defaults, no handling of its own."""

REFERENCE_CLIENT = [
    sys.executable,
    "-m",
    "chaosstream.examples.resilient_client",
    "--idle-timeout",
    str(IDLE_TIMEOUT_S),
]
"""The reference client, with a demo-sized idle timeout."""

CLIENTS = [("plain SDK client", NAIVE_CLIENT), ("reference client", REFERENCE_CLIENT)]

NEXT_STEP = "chaosstream check -- python your_client.py"


def demo_scenarios(profiles: list[str] | None) -> list[tuple[Scenario, Profile]]:
    """The battery (or one scenario per named profile) with the demo's time limit."""
    if not profiles:
        return battery(SCENARIO_TIMEOUT_S)
    return [
        (Scenario(name=name, profile=name, timeout_s=SCENARIO_TIMEOUT_S), load_profile(name))
        for name in profiles
    ]


def _outcome(r: ScenarioResult) -> Text:
    """PASS/FAIL and what the user of that client saw, in a few words."""
    o = r.observed
    if o.completed:
        what = "full answer" + (" after a retry" if o.retried else "")
    elif o.silent_truncation:
        what = "cut answer shown as complete"
    elif o.surfaced_error:
        what = "said it failed"
    elif r.client.timed_out:
        what = f"hung (killed at {r.client.duration_s:.0f} s)"
    else:
        what = "no answer, no error"
    if not o.respected_retry_after:
        what += ", ignored Retry-After"
    text = Text("PASS " if r.passed else "FAIL ", style="bold green" if r.passed else "bold red")
    return text.append(what)


def side_by_side(reports: list[tuple[str, RunReport]], console: Console) -> None:
    """One row per scenario: the faults that fired, then each client's outcome."""
    from chaosstream.verify.report import fault_label

    table = Table(title=f"chaosstream demo  (seed {reports[0][1].seed}, embedded mock)")
    table.add_column("scenario")
    table.add_column("fault")
    for label, _ in reports:
        table.add_column(label)
    by_name = [{r.name: r for r in report.results} for _, report in reports]
    for name in by_name[0]:
        runs = [results[name] for results in by_name if name in results]
        fired = sorted({fault_label(f) for r in runs for e in r.exchanges for f in e.faults})
        cells = [_outcome(results[name]) if name in results else Text("-") for results in by_name]
        table.add_row(name, ", ".join(fired) or "-", *cells)
    console.print(table)
    for label, report in reports:
        passed = sum(1 for r in report.results if r.passed)
        console.print(f"{label}: {passed}/{len(report.results)} scenarios passed")


def _evidence(label: str, report: RunReport, console: Console) -> None:
    for r in report.results:
        for v in r.verdicts:
            if v.verdict == "fail":
                console.print(Text(f"{label}, {r.name}: ", style="bold red"), end="")
                console.print(v.evidence, markup=False, highlight=False)


def write_demo_html(reports: list[tuple[str, RunReport]], console: Console) -> Path | None:
    """Both clients' runs as one HTML report in the temp folder; print its path.

    Scenarios are named ``<client>: <scenario>``. Without the report extra the
    demo still runs and says how to get the report instead.
    """
    from chaosstream.verify.html import INSTALL_HINT, charts_available, write_html
    from chaosstream.verify.results import RunReport

    if not charts_available():
        console.print(f"HTML report skipped: {INSTALL_HINT}", markup=False, highlight=False)
        return None
    results = [
        dataclasses.replace(r, name=f"{label}: {r.name}")
        for label, report in reports
        for r in report.results
    ]
    first = reports[0][1]
    merged = RunReport(
        seed=first.seed,
        results=results,
        upstream=first.upstream,
        interrupted=any(r.interrupted for _, r in reports),
    )
    fd, name = tempfile.mkstemp(prefix="chaosstream-demo-", suffix=".html")
    os.close(fd)
    write_html(merged, name, title="chaosstream demo")
    console.print(f"\nHTML report (timelines): {name}", markup=False, highlight=False)
    return Path(name)


def run_demo(profiles: list[str] | None, seed: int) -> int:
    """Run both clients through the battery and print them side by side.

    The exit code: 0 when the reference client passed every scenario (the
    plain client failing some is the point), 1 when it did not, 130/143 when
    SIGINT/SIGTERM stopped the demo (the client's group killed, proxy and mock
    closed, as for ``check``).
    """
    from chaosstream.cli.logs import quiet
    from chaosstream.cli.run import Interrupts, collect, run_options, say_interrupted, with_ticks
    from chaosstream.verify.report import TerminalProgress

    scenarios = demo_scenarios(profiles)
    quiet()
    err, out = Console(stderr=True), Console(width=None if sys.stdout.isatty() else 140)
    progress = TerminalProgress(err)
    reports: list[tuple[str, RunReport]] = []
    with Interrupts() as interrupts:
        for label, command in CLIENTS:
            err.print(f"{label}: {' '.join(command[1:])}", markup=False, highlight=False)
            options = run_options(upstream=None, seed=seed, record=None, resilient=True)

            async def main(
                command: list[str] = command, options: RunOptions = options
            ) -> RunReport:
                run = collect(scenarios, command, options, progress, interrupts)
                return await with_ticks(progress, asyncio.ensure_future(run))

            report = asyncio.run(main())
            reports.append((label, report))
            if report.interrupted:
                break
        side_by_side(reports, out)
        for label, report in reports:
            _evidence(label, report, out)
        if interrupts.exit_code is not None:
            say_interrupted(interrupts, sum(len(r.results) for _, r in reports), 2 * len(scenarios))
            return interrupts.exit_code
    write_demo_html(reports, out)
    out.print(f"\nNext: the same battery on your own client:  {NEXT_STEP}", highlight=False)
    return 0 if reports[-1][1].passed else 1
