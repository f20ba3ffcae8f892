"""The ``run`` and ``check`` commands: scenarios against a client command, with reports."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import re
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import click

from chaosstream.cli.args import writable_file_option
from chaosstream.cli.ca import ca_dir_option, open_ca
from chaosstream.cli.cassette import match_on_option, upstream_or_cassette
from chaosstream.cli.intercept import REAL, real_or
from chaosstream.cli.telemetry import open_telemetry, otel_option

if TYPE_CHECKING:
    from chaosstream.clients.runner import Progress, RunOptions
    from chaosstream.faults.profile import Profile
    from chaosstream.mock import MockSettings
    from chaosstream.verify.report import TerminalProgress
    from chaosstream.verify.results import RunReport, ScenarioResult
    from chaosstream.verify.scenario import AppServer, Scenario

__all__ = [
    "EXIT_CODES",
    "Interrupts",
    "RunSettings",
    "check",
    "collect",
    "execute",
    "run",
    "run_options",
]

EXIT_CODES = [
    ("0", "every expectation held"),
    ("1", "an expectation failed"),
    ("2", "bad input (scenario file, profile, arguments, client command not found)"),
    (
        "130",
        "interrupted by SIGINT (Ctrl-C): the client's process group is killed and the "
        'report of the finished scenarios is written, marked "interrupted": true',
    ),
    ("143", "interrupted by SIGTERM (a CI timeout, a cancelled job): the same"),
]
"""`run`'s and `check`'s exit codes (DESIGN.md), for their --help."""


class Interrupts:
    """SIGINT/SIGTERM while a run is on: cancel the run instead of dying in it.

    Cancelling unwinds every ``finally`` of the runner: the client's process
    group is killed (it runs in its own session, so a signal to us never
    reaches it), the proxy and the mock close. The first signal is kept for
    the exit code (128 + its number, the shell's convention); a second one
    stops waiting for that cleanup.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._task: asyncio.Future[RunReport] | None = None
        self._old: dict[int, signal._HANDLER] = {}

    def __enter__(self) -> Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            raise SystemExit(128 + self.signum)
        self.signum = signum
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # A Python-level handler runs between bytecodes: wake the loop's select.
            task.get_loop().call_soon_threadsafe(lambda: None)

    @property
    def exit_code(self) -> int | None:
        """128 + the first signal's number, or None when no signal came."""
        return None if self.signum is None else 128 + self.signum

    @property
    def name(self) -> str:
        """The first signal's name, e.g. ``SIGTERM``."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    async def guard(self, run: asyncio.Future[RunReport]) -> RunReport:
        """Await ``run``; a signal (now, or one that came before) cancels it."""
        self._task = run
        if self.signum is not None:
            run.cancel()
        try:
            return await run
        finally:
            self._task = None


class _Finished:
    """Passes progress on and keeps each finished scenario, for an interrupted report."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self.results: list[ScenarioResult] = []

    def start(self, name: str, index: int, total: int, timeout_s: float) -> None:
        self.inner.start(name, index, total, timeout_s)

    def end(self, result: ScenarioResult) -> None:
        self.results.append(result)
        self.inner.end(result)


async def collect(
    scenarios: Sequence[tuple[Scenario, Profile]],
    command: Sequence[str],
    options: RunOptions,
    progress: Progress,
    interrupts: Interrupts,
) -> RunReport:
    """Run the scenarios; on a signal, the report of those that finished, marked interrupted."""
    from chaosstream.clients.runner import run_scenarios
    from chaosstream.verify.results import RunReport

    finished = _Finished(progress)
    task = asyncio.ensure_future(run_scenarios(scenarios, command, options, finished))
    try:
        return await interrupts.guard(task)
    except asyncio.CancelledError:
        if interrupts.signum is None:
            raise
        return RunReport(
            seed=options.seed if options.seed is not None else 0,
            results=finished.results,
            upstream=options.upstream or "embedded mock",
            interrupted=True,
        )


def run_options(
    *,
    upstream: str | None,
    seed: int | None,
    record: str | None,
    resilient: bool,
    mock_settings: MockSettings | None = None,
    replay_speed: float = 1.0,
    match_on: tuple[str, ...] | None = None,
    report_path: str | None = None,
    intercept: bool = False,
    ca_dir: str | None = None,
) -> RunOptions:
    """The runner's options; the seed is drawn here so an interrupted report shows it too."""
    from chaosstream.clients.runner import RunOptions
    from chaosstream.mock import MockSettings

    return RunOptions(
        upstream=upstream,
        seed=seed if seed is not None else random.SystemRandom().randrange(2**31),
        record=record,
        resilient=resilient,
        mock_settings=mock_settings or MockSettings(),
        replay_speed=replay_speed,
        match_on=match_on,
        # A failed page scenario's screenshot and console log go next to the report.
        artifacts_dir=Path(report_path or ".").parent / "chaosstream-artifacts",
        intercept=intercept,
        ca_dir=ca_dir,
    )


async def with_ticks(progress: TerminalProgress, run: asyncio.Future[RunReport]) -> RunReport:
    """Await ``run`` while the progress line's clock ticks."""

    async def tick() -> None:
        while True:
            progress.tick()
            await asyncio.sleep(0.25)

    ticker = asyncio.ensure_future(tick())
    try:
        return await run
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def say_interrupted(interrupts: Interrupts, finished: int, total: int) -> None:
    """One line on stderr: which signal, how many scenarios the report covers."""
    click.echo(
        f"chaosstream: interrupted by {interrupts.name}: {finished} of {total} scenarios "
        "finished; the report covers those",
        err=True,
    )


def execute(
    scenarios: Sequence[tuple[Scenario, Profile]],
    command: Sequence[str],
    settings: RunSettings,
    *,
    resilient: bool,
    title: str,
    app: AppServer | None = None,
    origin: Sequence[str] = (),
) -> int:
    """Run, print progress and the table, write the reports; the exit code:
    0, 1, or 130/143 when SIGINT/SIGTERM stopped the run (see :class:`Interrupts`).
    ``origin``: the command-line words that set the run up (:attr:`RunReport.origin`), for
    each scenario's ``repro_run``."""
    from rich.console import Console

    from chaosstream.cli.logs import quiet
    from chaosstream.clients.cassette import is_cassette
    from chaosstream.clients.command import check_command
    from chaosstream.verify.report import TerminalProgress, print_report, write_json, write_junit

    upstream, intercept, ca_dir = settings.upstream, settings.intercept, settings.ca_dir
    if any(s.client is None for s, _ in scenarios):
        check_command(command)
    replays = settings.replay_speed != 1.0 or settings.match_on is not None or settings.strict
    if replays and not is_cassette(upstream):
        raise click.BadParameter(
            "--replay-speed, --match-on and --strict replay a cassette: give --upstream "
            "cassette:DIR",
            param_hint="--upstream",
        )
    if upstream == REAL and not intercept:
        raise click.BadParameter(
            "`real` (the host each client calls) needs --intercept", param_hint="--upstream"
        )
    if intercept:
        open_ca(ca_dir).close()  # made now, or its problem is exit 2 before any scenario
    quiet()
    progress = TerminalProgress(Console(stderr=True))
    json_path, junit_path, html_path = settings.json_path, settings.junit_path, settings.html_path
    options = run_options(
        upstream=upstream,
        seed=settings.seed,
        record=settings.record,
        resilient=resilient,
        replay_speed=settings.replay_speed,
        match_on=settings.match_on,
        report_path=json_path or junit_path or html_path,
        intercept=intercept,
        ca_dir=ca_dir,
    )
    options.app = app
    options.model_listen = settings.model_listen
    telemetry = open_telemetry(settings.otel)
    if telemetry is not None:
        options.on_proxy = telemetry.attach
    with Interrupts() as interrupts:

        async def main() -> RunReport:
            run = collect(scenarios, command, options, progress, interrupts)
            return await with_ticks(progress, asyncio.ensure_future(run))

        try:
            report = asyncio.run(main())
        finally:
            if telemetry is not None:
                telemetry.shutdown()  # exports what is still batched
        report.command, report.origin = list(command), list(origin)
        report.strict = settings.strict
        # Off a terminal (CI logs) rich would wrap the table at 80 columns.
        print_report(report, Console(width=None if sys.stdout.isatty() else 140), title=title)
        if json_path is not None:
            write_json(report, json_path)
        if junit_path is not None:
            write_junit(report, junit_path)
        if html_path is not None:
            from chaosstream.verify.html import write_html

            write_html(report, html_path, title=title)
        if interrupts.exit_code is not None:
            say_interrupted(interrupts, len(report.results), len(scenarios))
            return interrupts.exit_code
    return 0 if report.passed else 1


# Output paths are checked before the run: a missing folder is not found after the scenarios.
_REPORT_OPTIONS = [
    click.option(
        "--model-listen",
        "model_listen",
        type=click.IntRange(1, 65535),
        metavar="PORT",
        help="With an app server (`server:`, --app): the model-side proxy's port, fixed for "
        "an app that reads OPENAI_BASE_URL once or runs already. Default: a free port.",
    ),
    click.option(
        "--json",
        "json_path",
        metavar="FILE",
        callback=writable_file_option,
        help="Write the JSON report here.",
    ),
    click.option(
        "--junit",
        "junit_path",
        metavar="FILE",
        callback=writable_file_option,
        help="Write a JUnit XML report here.",
    ),
    click.option(
        "--html",
        "html_path",
        metavar="FILE",
        callback=lambda c, p, v: _html_option(c, p, v),
        help="Write a self-contained HTML report with a timeline per scenario here "
        "(needs the report extra: pip install 'chaosstream[report]').",
    ),
    click.option(
        "--record",
        metavar="FILE",
        callback=writable_file_option,
        help="Append every exchange to this file as JSON lines.",
    ),
    click.option(
        "--upstream",
        metavar="URL",
        callback=real_or(upstream_or_cassette),
        help="Model server to use (http:// or https://), cassette:DIR to replay a recorded "
        "cassette offline (docs/cassettes.md), or with --intercept `real`: the host the "
        "client calls. Default: the embedded mock.",
    ),
    click.option(
        "--intercept",
        is_flag=True,
        help="Give the client HTTPS_PROXY/HTTP_PROXY/NO_PROXY and the CA variables "
        "(SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS) instead of base URLs, so an "
        "unmodified client calling the providers' own hostnames is tested; a --browser page's "
        "Chromium sends those hosts to the proxy and trusts its CA: docs/intercept.md.",
    ),
    ca_dir_option,
    click.option(
        "--seed", type=int, default=None, help="Seed for every scenario (default: random, shown)."
    ),
    click.option(
        "--replay-speed",
        type=click.FloatRange(min=0),
        default=1.0,
        show_default=True,
        help="With --upstream cassette:DIR: replay the frames at this multiple of their "
        "recorded pace (0 = as fast as possible).",
    ),
    click.option(
        "--strict",
        is_flag=True,
        help="With --upstream cassette:DIR: a request that matched no recording fails the run "
        "(exit 1, a line naming it and the nearest recording), as `mock --strict` does.",
    ),
    click.option(
        "--match-on",
        callback=match_on_option,
        default=None,
        metavar="LIST",
        help="With --upstream cassette:DIR: what a request must share with a recorded one: "
        "some of method,path,query,body,stream. [default: method,path,body, the streaming "
        "flag set aside]",
    ),
    otel_option,
    click.option(
        "--chromium",
        metavar="PATH",
        expose_value=False,
        callback=lambda _c, _p, v: _chromium(v),
        help="Browser for page clients [env: CHAOSSTREAM_CHROMIUM]. Default: Playwright's own "
        "Chromium, else chromium, chromium-browser, google-chrome(-stable) on PATH.",
    ),
]


def _html_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--html: a writable file, and the charting libraries installed (else exit 2, how to)."""
    value = writable_file_option(ctx, param, value)
    if value is not None:
        from chaosstream.verify.html import INSTALL_HINT, charts_available

        if not charts_available():
            raise click.BadParameter(
                f"the HTML report needs its charting libraries: {INSTALL_HINT}"
            )
    return value


def _chromium(value: str | None) -> None:
    # browser.launch_chromium reads the variable: the runner starts its PageDriver without one.
    if value:
        os.environ["CHAOSSTREAM_CHROMIUM"] = value


@dataclass(frozen=True)
class RunSettings:
    """The options `run` and `check` share (:data:`_REPORT_OPTIONS`): the model side,
    a cassette's replay, where reports go."""

    upstream: str | None = None
    seed: int | None = None
    json_path: str | None = None
    junit_path: str | None = None
    html_path: str | None = None
    record: str | None = None
    replay_speed: float = 1.0
    match_on: tuple[str, ...] | None = None
    strict: bool = False
    otel: bool | None = None
    model_listen: int | None = None
    intercept: bool = False
    ca_dir: str | None = None


_SETTINGS = tuple(f.name for f in fields(RunSettings))


def _report_options(f: Callable[..., None]) -> Callable[..., None]:
    """The shared options, handed to the command as one ``settings: RunSettings``."""

    @functools.wraps(f)
    def command(**kwargs: Any) -> None:
        settings = RunSettings(**{name: kwargs.pop(name) for name in _SETTINGS})
        f(settings=settings, **kwargs)

    for option in reversed(_REPORT_OPTIONS):
        command = option(command)
    return command


DEFAULT_TIMEOUT_S = 60.0
"""A scenario's time limit when nothing sets one: then its client is killed as hung."""

_ONLY = click.option(
    "--only",
    "only",
    multiple=True,
    metavar="NAME",
    help="Run only the scenario of this name (repeatable); the order stays the file's.",
)


def _only(
    pairs: list[tuple[Scenario, Profile]], names: tuple[str, ...]
) -> list[tuple[Scenario, Profile]]:
    """The scenarios named in ``names`` (all when empty); an unknown name is bad input."""
    known = [s.name for s, _ in pairs]
    for name in names:
        if name not in known:
            listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
            raise click.BadParameter(
                f"no scenario named {name[:80]!r}; the scenarios are: {listed}",
                param_hint="--only",
            )
    return [(s, p) for s, p in pairs if not names or s.name in names]


def _number(value: float) -> str:
    """A float as a command-line word: short (``10``), exact when short would round."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _origin(
    head: Sequence[str],
    settings: RunSettings,
    timeout_s: float | None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The words after ``chaosstream`` that set this run up again (``RunReport.origin``):
    what decides which faults meet which client and upstream, never where reports go.
    ``--only``, ``--seed`` and the client command are each scenario's ``repro_run``'s."""
    words = list(head)
    if settings.upstream is not None:
        words += ["--upstream", settings.upstream]
    if settings.intercept:
        words.append("--intercept")
        if settings.ca_dir is not None:
            words += ["--ca-dir", settings.ca_dir]
    if settings.replay_speed != 1.0:
        words += ["--replay-speed", _number(settings.replay_speed)]
    if settings.match_on is not None:
        words += ["--match-on", ",".join(settings.match_on)]
    if settings.strict:
        words.append("--strict")
    if settings.model_listen is not None:
        words += ["--model-listen", str(settings.model_listen)]
    if timeout_s is not None:
        words += ["--timeout-s", _number(timeout_s)]
    return [*words, *extra]


def _env_rows() -> list[tuple[str, str]]:
    """The variables the runner sets for the client (from the code that sets them)."""
    from chaosstream.clients.command import client_env

    url = "http://127.0.0.1:PORT"
    ours = client_env(url, "NAME", mock=False)
    mocked = client_env(url, "NAME", mock=True)
    rows = [(k, v) for k, v in ours.items() if os.environ.get(k) != v]
    rows += [
        (k, f"{v} (only when the upstream is the embedded mock or a cassette)")
        for k, v in mocked.items()
        if ours.get(k) != v
    ]
    intercepted = client_env(url, "NAME", mock=False, ca=("CA.pem", "CA-BUNDLE.pem"))
    rows += [
        (k, f"{v} (with --intercept, instead of the base URLs)")
        for k, v in intercepted.items()
        if ours.get(k) != v
    ]
    return rows


class _RunnerCommand(click.Command):
    """`run` and `check`: --help ends with the client's environment and the exit codes."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("The client command runs with"):
            formatter.write_dl(_env_rows())
        with formatter.section("Exit codes"):
            formatter.write_dl(EXIT_CODES)


class _CheckCommand(_RunnerCommand):
    """`check --help` lists the battery first."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from chaosstream.verify.battery import battery

        with formatter.section("The battery, in order (chaosstream check --list)"):
            formatter.write_dl([(s.name, _describe(p)) for s, p in battery()])
        super().format_epilog(ctx, formatter)


def _describe(profile: Profile) -> str:
    """The first sentence of the profile's description, on one line."""
    text = " ".join((profile.description or "").split())
    return re.split(r"(?<=[.!?]) ", text, maxsplit=1)[0] or f"profile {profile.name}"


# No ignore_unknown_options: a mistyped option before `--` is a usage error, not the client
# command; the client's own options come after `--`, where click takes every word as is.
@click.command(cls=_RunnerCommand)
@click.argument("scenario_file", metavar="SCENARIO.yaml", type=click.Path(dir_okay=False))
@_report_options
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help=f"Time limit of the scenarios that set no timeout_s (default: {DEFAULT_TIMEOUT_S:g}); "
    "past it the client is killed as hung.",
)
@_ONLY
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD [ARGS...]]")
def run(
    settings: RunSettings,
    scenario_file: str,
    timeout_s: float | None,
    only: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Run the scenarios of SCENARIO.yaml against a client command and verify it.

    The command comes after `--`, or from `command:` in the file. Each scenario
    starts it once, pointed at the proxy (the variables below).
    """
    from chaosstream.verify.scenario import load_scenarios

    suite = load_scenarios(Path(scenario_file))
    argv = list(command) or list(suite.command or [])
    pairs = _only(list(zip(suite.scenarios, suite.profiles, strict=False)), only)
    if timeout_s is not None:
        # Only where the file is silent: a scenario's own timeout_s is a decision.
        pairs = [
            (
                s
                if "timeout_s" in s.model_fields_set
                else s.model_copy(update={"timeout_s": timeout_s}),
                p,
            )
            for s, p in pairs
        ]
    origin = _origin(["run", scenario_file], settings, timeout_s)
    raise SystemExit(
        execute(
            pairs,
            argv,
            settings,
            resilient=False,
            title=f"chaosstream run {scenario_file}",
            app=suite.server,
            origin=origin,
        )
    )


def _app_server(value: str | None) -> AppServer | None:
    """``--app CMD|URL`` as a ``server:`` spec; a bad one is exit 2."""
    if value is None:
        return None
    import shlex

    from pydantic import ValidationError

    from chaosstream.verify.scenario import AppServer

    try:
        if value.startswith(("http://", "https://")):
            return AppServer(url=value)
        return AppServer(command=shlex.split(value))
    except (ValueError, ValidationError) as e:
        raise click.BadParameter(f"{value!r}: {e}", param_hint="--app") from None


def _selectors(values: tuple[str, ...]) -> dict[str, str]:
    """``--selector PART=CSS`` values as a mapping; a bad one is exit 2 naming it."""
    from chaosstream.verify.scenario import Selectors

    parts = tuple(Selectors.model_fields)
    out: dict[str, str] = {}
    for value in values:
        part, eq, css = value.partition("=")
        part, css = part.strip(), css.strip()
        if not eq or not css:
            raise click.BadParameter(f"{value!r}: expected PART=CSS", param_hint="--selector")
        if part not in parts:
            raise click.BadParameter(
                f"{part!r} is not a page part; one of {', '.join(parts)}", param_hint="--selector"
            )
        out[part] = css
    return out


@click.command(cls=_CheckCommand)
@_report_options
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Kill the client after this long in each scenario (a hang). The stall scenarios "
    "wait this long for a client without its own timeout.",
)
@_ONLY
@click.option("--list", "list_only", is_flag=True, help="Print the battery and exit.")
@click.option(
    "--browser",
    "page_url",
    metavar="URL",
    help="Run the battery against a chat page in headless Chromium instead of a command. "
    "A path is taken on the proxy (`/` is the reference page); {proxy} in a URL is "
    "replaced by the proxy's address.",
)
@click.option(
    "--selector",
    "selectors",
    multiple=True,
    metavar="PART=CSS",
    callback=lambda ctx, param, value: _selectors(value),
    help="With --browser: the CSS selector of a page part (input, send, output, error, retry, "
    "stop, typing); repeatable. Parts not given are found by role and text: "
    "docs/web-app.md, 'Which elements'.",
)
@click.option(
    "--app",
    metavar="CMD|URL",
    help="With --browser: the app server between the page and the model, as a command to "
    "start (given PORT and OPENAI_BASE_URL ... of the model-side proxy) or the URL of one "
    "running. The page is then driven through a second, browser-side proxy and the battery's "
    "faults act on the model hop: docs/web-app.md.",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS...]")
def check(
    settings: RunSettings,
    timeout_s: float,
    only: tuple[str, ...],
    list_only: bool,
    page_url: str | None,
    selectors: dict[str, str],
    app: str | None,
    command: tuple[str, ...],
) -> None:
    """The resilience scorecard: the standard battery of faults against a client command.

    Each scenario passes when the client completes or surfaces the error,
    never presents truncated text as complete, makes at most 5 attempts and
    never retries sooner than Retry-After.
    """
    from chaosstream.verify.battery import battery

    app_server = _app_server(app)
    scenarios = _only(battery(timeout_s), only)
    if list_only:
        width = max(len(s.name) for s, _ in scenarios)
        for s, p in scenarios:
            click.echo(f"{s.name:<{width}}  {s.timeout_s:g} s  {_describe(p)}")
        return
    if page_url is not None:
        from chaosstream.clients.browser import page_battery

        if command:
            raise click.UsageError("give either --browser URL or a command after --, not both")
        scenarios = page_battery(scenarios, page_url, selectors)
    elif selectors or app:
        what = "--selector" if selectors else "--app"
        raise click.UsageError(f"{what} is for pages: give --browser URL too")
    elif not command:
        raise click.UsageError("give a client command after -- (or --browser URL)")
    # How this run was set up, for each scenario's repro_run: a page's words are here.
    page_words = [] if page_url is None else ["--browser", page_url]
    page_words += [w for part, css in selectors.items() for w in ("--selector", f"{part}={css}")]
    page_words += [] if app is None else ["--app", app]
    timeout = None if timeout_s == DEFAULT_TIMEOUT_S else timeout_s
    origin = _origin(["check"], settings, timeout, extra=page_words)
    raise SystemExit(
        execute(
            scenarios,
            list(command),
            settings,
            resilient=True,
            title="chaosstream check",
            app=app_server,
            origin=origin,
        )
    )
