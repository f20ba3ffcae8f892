"""The ``run`` and ``check`` commands: scenarios against a client command, with reports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from chaosstream.mock import MockSettings
    from chaosstream.profile import Profile
    from chaosstream.scenario import Scenario

__all__ = ["check", "execute", "run"]


def _url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{value!r} is not an http:// or https:// URL", param_hint="--upstream"
        )
    return value


def execute(
    scenarios: Sequence[tuple[Scenario, Profile]],
    command: Sequence[str],
    *,
    upstream: str | None,
    seed: int | None,
    json_path: str | None,
    junit_path: str | None,
    record: str | None,
    resilient: bool,
    title: str,
    mock_settings: MockSettings | None = None,
) -> int:
    """Run, print progress and the table, write the reports; the exit code (0 or 1)."""
    from rich.console import Console

    from chaosstream.logs import quiet
    from chaosstream.mock import MockSettings
    from chaosstream.report import TerminalProgress, print_report, write_json, write_junit
    from chaosstream.run import RunOptions, RunReport, check_command, run_scenarios

    if any(s.client is None for s, _ in scenarios):
        check_command(command)
    quiet()
    err = Console(stderr=True)
    progress = TerminalProgress(err)
    options = RunOptions(
        upstream=upstream,
        seed=seed if seed is not None else random.SystemRandom().randrange(2**31),
        record=record,
        resilient=resilient,
        mock_settings=mock_settings or MockSettings(),
        # A failed page scenario's screenshot and console log go next to the report.
        artifacts_dir=Path(json_path or junit_path or ".").parent / "chaosstream-artifacts",
    )

    async def main() -> RunReport:
        async def tick() -> None:
            while True:
                progress.tick()
                await asyncio.sleep(0.1)

        ticker = asyncio.create_task(tick())
        try:
            return await run_scenarios(scenarios, command, options, progress)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    report = asyncio.run(main())
    # Off a terminal (CI logs) rich would wrap the table at 80 columns.
    print_report(report, Console(width=None if sys.stdout.isatty() else 140), title=title)
    if json_path is not None:
        write_json(report, json_path)
    if junit_path is not None:
        write_junit(report, junit_path)
    return 0 if report.passed else 1


_REPORT_OPTIONS = [
    click.option("--json", "json_path", metavar="FILE", help="Write the JSON report here."),
    click.option("--junit", "junit_path", metavar="FILE", help="Write a JUnit XML report here."),
    click.option(
        "--record", metavar="FILE", help="Append every exchange to this file as JSON lines."
    ),
    click.option(
        "--upstream",
        metavar="URL",
        callback=lambda _c, _p, v: _url(v),
        help="Model server to use (http:// or https://). Default: the embedded mock.",
    ),
    click.option(
        "--seed", type=int, default=None, help="Seed for every scenario (default: random, shown)."
    ),
    click.option(
        "--chromium",
        metavar="PATH",
        expose_value=False,
        callback=lambda _c, _p, v: _chromium(v),
        help="Browser for page clients [env: CHAOSSTREAM_CHROMIUM]. Default: Playwright's own "
        "Chromium, else chromium, chromium-browser, google-chrome(-stable) on PATH.",
    ),
]


def _chromium(value: str | None) -> None:
    # browser.launch_chromium reads the variable: the runner starts its PageDriver without one.
    if value:
        os.environ["CHAOSSTREAM_CHROMIUM"] = value


def _report_options(f: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_REPORT_OPTIONS):
        f = option(f)
    return f


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("scenario_file", metavar="SCENARIO.yaml", type=click.Path(dir_okay=False))
@_report_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD [ARGS...]]")
def run(
    scenario_file: str,
    json_path: str | None,
    junit_path: str | None,
    record: str | None,
    upstream: str | None,
    seed: int | None,
    command: tuple[str, ...],
) -> None:
    """Run the scenarios of SCENARIO.yaml against a client command and verify it.

    The command comes after `--`, or from `command:` in the file. Each scenario
    starts it once with OPENAI_BASE_URL, ANTHROPIC_BASE_URL and CHAOSSTREAM_URL
    pointing at the proxy. Exit 0 when every expectation held, 1 when one
    failed, 2 on bad input.
    """
    from chaosstream.scenario import load_scenarios

    suite = load_scenarios(Path(scenario_file))
    argv = list(command) or list(suite.command or [])
    raise SystemExit(
        execute(
            list(zip(suite.scenarios, suite.profiles, strict=False)),
            argv,
            upstream=upstream,
            seed=seed,
            json_path=json_path,
            junit_path=junit_path,
            record=record,
            resilient=False,
            title=f"chaosstream run {scenario_file}",
        )
    )


@click.command(context_settings={"ignore_unknown_options": True})
@_report_options
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Kill the client after this long in each scenario (a hang).",
)
@click.option(
    "--browser",
    "page_url",
    metavar="URL",
    help="Run the battery against a chat page in headless Chromium instead of a command. "
    "A path is taken on the proxy (`/` is the reference page); {proxy} in a URL is "
    "replaced by the proxy's address.",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS...]")
def check(
    json_path: str | None,
    junit_path: str | None,
    record: str | None,
    upstream: str | None,
    seed: int | None,
    timeout_s: float,
    page_url: str | None,
    command: tuple[str, ...],
) -> None:
    """The resilience scorecard: the standard battery of faults against a client command.

    Each scenario passes when the client completes or surfaces the error,
    never presents truncated text as complete, makes at most 5 attempts and
    never retries sooner than Retry-After.
    """
    from chaosstream.battery import battery

    scenarios = battery(timeout_s)
    if page_url is not None:
        from chaosstream.browser import page_battery

        if command:
            raise click.UsageError("give either --browser URL or a command after --, not both")
        scenarios = page_battery(scenarios, page_url)
    elif not command:
        raise click.UsageError("give a client command after -- (or --browser URL)")
    raise SystemExit(
        execute(
            scenarios,
            list(command),
            upstream=upstream,
            seed=seed,
            json_path=json_path,
            junit_path=junit_path,
            record=record,
            resilient=True,
            title="chaosstream check",
        )
    )
