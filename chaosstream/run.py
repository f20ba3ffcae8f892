"""The runner: mock + proxy + the client command, once per scenario.

For each scenario the proxy gets a fresh state (profile, seed, request
counters), the client is started with the environment of DESIGN.md pointing it
at the proxy, and when it ends (or is killed at ``timeout_s``: a hang) the
recorded exchanges and the client's signals go to the verifier.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import random
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs

from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock
from chaosstream.profile import Profile
from chaosstream.proxy import ChaosProxy
from chaosstream.record import Exchange, JsonlSink, Recorder
from chaosstream.scenario import Scenario
from chaosstream.verify import ClientRun, Evidence, Observed, Verdict, evaluate
from chaosstream.yamlfile import InputError

if TYPE_CHECKING:
    from chaosstream.browser import PageDriver

__all__ = [
    "DUMMY_KEY",
    "Progress",
    "RunOptions",
    "RunReport",
    "ScenarioResult",
    "check_command",
    "client_env",
    "run_scenarios",
]

DUMMY_KEY = "chaosstream-mock-key"
"""The API key clients get when the upstream is the embedded mock (it takes any)."""
# After the client exits, the proxy may still be finishing its side of an
# exchange (a cancelled stall, a RST grace period); wait this long at most.
SETTLE_S = 2.0
# Output kept per stream of the client; more is cut from the middle.
OUTPUT_LIMIT = 4 * 1024 * 1024
# Arrival times kept for the client's stdout (one per pipe read): enough for any
# answer's first text; a client printing a byte at a time stops being stamped there.
STDOUT_STAMPS = 100_000


@dataclass(slots=True)
class RunOptions:
    """How to run a list of scenarios."""

    upstream: str | None = None
    """A real model server; None starts the embedded mock."""
    mock_settings: MockSettings = field(default_factory=MockSettings)
    seed: int | None = None
    """Overrides every scenario's and profile's seed."""
    record: str | Path | None = None
    """Append every exchange to this JSONL file."""
    resilient: bool = False
    """Add the `check` battery's rule as an expectation of every scenario."""
    insecure: bool = False
    ca_file: str | None = None
    page_driver: PageDriver | None = None
    """A started browser for page scenarios; None starts one when a scenario needs it."""
    artifacts_dir: str | Path = "chaosstream-artifacts"
    """Where a failed page scenario's screenshot and console log go."""


@dataclass(slots=True)
class ScenarioResult:
    """One scenario's outcome."""

    name: str
    profile: str
    seed: int
    observed: Observed
    verdicts: list[Verdict]
    client: ClientRun
    exchanges: list[Exchange]

    @property
    def passed(self) -> bool:
        """Every verdict passed."""
        return all(v.verdict == "pass" for v in self.verdicts)


@dataclass(slots=True)
class RunReport:
    """All scenarios of one run."""

    seed: int
    results: list[ScenarioResult]
    upstream: str
    interrupted: bool = False
    """A signal stopped the run: ``results`` holds only the scenarios that finished."""

    @property
    def passed(self) -> bool:
        """Every scenario ran and passed (an interrupted run proved nothing about the rest)."""
        return not self.interrupted and all(r.passed for r in self.results)


class Progress(Protocol):
    """Told when each scenario starts and ends (the terminal spinner, or nothing)."""

    def start(self, name: str, index: int, total: int, timeout_s: float) -> None: ...

    def end(self, result: ScenarioResult) -> None: ...


def check_command(command: Sequence[str]) -> None:
    """Raise :class:`InputError` unless ``command[0]`` is a program that can be run."""
    if not command:
        raise InputError("no client command: give one after `--` or as `command:` in the file")
    program = command[0]
    if os.sep in program:
        if not Path(program).is_file():
            raise InputError(f"client command not found: {program!r} is not a file")
        if not os.access(program, os.X_OK):
            raise InputError(f"client command not executable: {program!r}")
    elif shutil.which(program) is None:
        raise InputError(f"client command not found: {program!r} is not on PATH")


def client_env(proxy_url: str, scenario: str, mock: bool) -> dict[str, str]:
    """The client's environment: ours plus the variables that point it at the proxy."""
    env = dict(os.environ)
    env.update(
        CHAOSSTREAM_URL=proxy_url,
        CHAOSSTREAM_SCENARIO=scenario,
        OPENAI_BASE_URL=f"{proxy_url}/v1",
        ANTHROPIC_BASE_URL=proxy_url,
        # Python clients print as they go, so a killed client's output is not lost.
        PYTHONUNBUFFERED="1",
    )
    if mock:
        env.update(OPENAI_API_KEY=DUMMY_KEY, ANTHROPIC_API_KEY=DUMMY_KEY)
    return env


async def _read_all(
    stream: asyncio.StreamReader | None,
    into: bytearray,
    stamps: list[tuple[float, int]] | None = None,
) -> None:
    if stream is None:
        return
    # With ``stamps``: when each piece arrived and how many characters the output
    # had then, so the verifier can tell when the answer's first text appeared.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chars = 0
    while chunk := await stream.read(65536):
        if len(into) < OUTPUT_LIMIT:
            into.extend(chunk)
            if stamps is not None and len(stamps) < STDOUT_STAMPS:
                chars += len(decoder.decode(chunk))
                stamps.append((time.monotonic(), chars))


def _kill(proc: asyncio.subprocess.Process) -> None:
    # The client runs in its own session: kill its whole group (a shell's children too).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def run_client(command: Sequence[str], env: dict[str, str], timeout_s: float) -> ClientRun:
    """Run the client to its end, or kill it at ``timeout_s``."""
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as e:
        raise InputError(f"cannot start client command {command[0]!r}: {e.strerror or e}") from None
    out, err = bytearray(), bytearray()
    stamps: list[tuple[float, int]] = []
    readers = asyncio.gather(_read_all(proc.stdout, out, stamps), _read_all(proc.stderr, err))
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except asyncio.TimeoutError:
        timed_out = True
        _kill(proc)
        await proc.wait()
    except BaseException:
        _kill(proc)
        await proc.wait()
        raise
    finally:
        # Grandchildren may keep the pipes open: never wait on them for long.
        try:
            await asyncio.wait_for(readers, 2.0)
        except asyncio.TimeoutError:
            readers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await readers
    return ClientRun(
        command=list(command),
        exit_code=proc.returncode,
        timed_out=timed_out,
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
        duration_s=time.monotonic() - started,
        stdout_times=stamps,
    )


def expected_answer(exchanges: list[Exchange], settings: MockSettings | None) -> str | None:
    """The full answer to the client's request.

    From an exchange where upstream produced a whole answer (not a resumed
    tail: those carry Last-Event-ID), which also covers a client that set the
    mock's per-request overrides; else, when the upstream is the mock, from
    its deterministic text.
    """
    if not exchanges:
        return None
    first = exchanges[0]
    for ex in exchanges:
        if ex.fingerprint == first.fingerprint and ex.upstream_complete and not ex.last_event_id:
            return ex.response_text
    if settings is not None:
        if first.provider in ("openai", "anthropic"):
            return answer_text(first.request_body, settings.tokens)
        if first.path.rstrip("/").endswith("/sse"):
            query = parse_qs(first.query)
            tokens = query.get("tokens", [""])[0]
            count = int(tokens) if tokens.isdigit() else settings.tokens
            return answer_text(query.get("prompt", [""])[0], count)
    return None


async def _settle(recorder: Recorder, mock: MockServer | None) -> None:
    # Polling, bounded: the proxy has no "all exchanges ended" event, and this
    # runs once per scenario.
    for _ in range(int(SETTLE_S / 0.02)):
        if not recorder.open and not (mock is not None and mock.open_streams):
            return
        await asyncio.sleep(0.02)


async def run_scenarios(
    scenarios: Sequence[tuple[Scenario, Profile]],
    command: Sequence[str],
    options: RunOptions,
    progress: Progress | None = None,
) -> RunReport:
    """Run every scenario in order and verify each; the client is ``command``."""
    if any(s.client is None for s, _ in scenarios):
        check_command(command)
    run_seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    recorder = Recorder(keep=10_000)
    sink = JsonlSink(options.record) if options.record is not None else None
    if sink is not None:
        recorder.listeners.append(sink)
    mock: MockServer | None = None
    own_driver: PageDriver | None = None
    results: list[ScenarioResult] = []
    try:
        if options.upstream is None:
            mock = await start_mock(settings=options.mock_settings)
        upstream = options.upstream or (mock.url if mock is not None else "")
        first_profile = scenarios[0][1] if scenarios else Profile(version=1, name="clean")
        proxy = ChaosProxy(
            upstream,
            first_profile,
            seed=run_seed,
            recorder=recorder,
            insecure=options.insecure,
            ca_file=options.ca_file,
        )
        url = await proxy.start()
        try:
            if options.page_driver is None and any(s.client for s, _ in scenarios):
                from chaosstream.browser import PageDriver

                own_driver = PageDriver()
                await own_driver.start()
                options.page_driver = own_driver
            for index, (scenario, profile) in enumerate(scenarios):
                if progress is not None:
                    progress.start(scenario.name, index, len(scenarios), scenario.timeout_s)
                result = await _run_one(
                    scenario, profile, command, options, proxy, url, mock, run_seed
                )
                results.append(result)
                if progress is not None:
                    progress.end(result)
        finally:
            if own_driver is not None:
                options.page_driver = None
                await own_driver.close()
            await proxy.close()
    finally:
        if mock is not None:
            await mock.close()
        if sink is not None:
            sink.close()
    return RunReport(
        seed=run_seed,
        results=results,
        upstream=options.upstream or "embedded mock",
    )


async def _run_one(
    scenario: Scenario,
    profile: Profile,
    command: Sequence[str],
    options: RunOptions,
    proxy: ChaosProxy,
    url: str,
    mock: MockServer | None,
    run_seed: int,
) -> ScenarioResult:
    if options.seed is not None:
        seed = options.seed
    elif scenario.seed is not None:
        seed = scenario.seed
    elif profile.seed is not None:
        seed = profile.seed
    else:
        seed = run_seed
    proxy.set_profile(profile, seed)
    proxy.fault_log.clear()
    proxy.recorder.clear()
    closed_before = mock.closed_early if mock is not None else 0
    page = None
    if scenario.client is not None:
        from chaosstream.browser import api_exchanges, drive_scenario

        def arm() -> None:
            proxy.set_profile(profile, seed)
            proxy.fault_log.clear()
            proxy.recorder.clear()

        # The page loads through a clean proxy; the profile is armed right before Send.
        proxy.set_profile(Profile(version=1, name="page-load"), seed)
        assert options.page_driver is not None
        page, client = await drive_scenario(options.page_driver, url, scenario, arm)
    else:
        env = client_env(url, scenario.name, mock is not None)
        client = await run_client(command, env, scenario.timeout_s)
    await _settle(proxy.recorder, mock)
    exchanges = sorted(
        [*proxy.recorder.exchanges, *proxy.recorder.open.values()], key=lambda e: e.id
    )
    judged = exchanges if page is None else api_exchanges(exchanges)
    evidence = Evidence(
        client=client,
        exchanges=judged,
        answer=expected_answer(judged, options.mock_settings if mock is not None else None),
        mock_closed_early=(mock.closed_early - closed_before) if mock is not None else None,
        error_signal=scenario.error_signal,
        page=page,
        profile=profile,
    )
    observed, verdicts = evaluate(evidence, scenario.expect, resilient=options.resilient)
    if page is not None and any(v.verdict == "fail" for v in verdicts):
        from chaosstream.browser import write_artifacts

        observed.artifacts = write_artifacts(page, options.artifacts_dir, scenario.name)
    return ScenarioResult(
        name=scenario.name,
        profile=profile.name,
        seed=seed,
        observed=observed,
        verdicts=verdicts,
        client=client,
        exchanges=exchanges,
    )
