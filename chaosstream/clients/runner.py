"""The runner: mock + proxy + the client command, once per scenario.

For each scenario the proxy gets a fresh state (profile, seed, request
counters), the client is started with the environment of DESIGN.md pointing it
at the proxy, and when it ends (or is killed at ``timeout_s``: a hang) the
recorded exchanges and the client's signals go to the verifier.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs

from chaosstream.clients.cassette import (
    CASSETTE_SCHEME,
    CassetteOptions,
    is_cassette,
    open_cassette,
    recorded_answer,
)
from chaosstream.clients.command import check_command, client_env, run_client
from chaosstream.faults.profile import Profile
from chaosstream.mock import MockServer, MockSettings, answer_text, mock_answer, start_mock
from chaosstream.proxy.record import Exchange, JsonlSink, Recorder
from chaosstream.proxy.server import ChaosProxy
from chaosstream.verify.expectations import Evidence, evaluate, main_request
from chaosstream.verify.results import RunReport, ScenarioResult
from chaosstream.verify.scenario import AppServer, Scenario

if TYPE_CHECKING:
    from chaosstream.clients.app import AppProcess
    from chaosstream.clients.browser import PageDriver
    from chaosstream.mock.cassette import ReplayServer
    from chaosstream.proxy.intercept import InterceptProxy

__all__ = [
    "Progress",
    "RunOptions",
    "expected_answer",
    "run_scenarios",
]

# After the client exits, the proxy may still be finishing its side of an
# exchange (a cancelled stall, a RST grace period); wait this long at most.
SETTLE_S = 2.0


@dataclass(slots=True)
class RunOptions:
    """How to run a list of scenarios."""

    upstream: str | None = None
    """A real model server, or ``cassette:DIR`` to replay a recording offline; None starts
    the embedded mock."""
    replay_speed: float = 1.0
    """With a cassette: the multiple of the recorded pace (0: as fast as possible)."""
    match_on: tuple[str, ...] | None = None
    """With a cassette: what a request must share with a recorded one (None: the default)."""
    mock_settings: MockSettings = field(default_factory=MockSettings)
    seed: int | None = None
    """Overrides every scenario's and profile's seed."""
    record: str | Path | None = None
    """Append every exchange to this JSONL file."""
    resilient: bool = False
    """Add the `check` battery's rule as an expectation of every scenario."""
    insecure: bool = False
    ca_file: str | None = None
    intercept: bool = False
    """Start the intercepting front (proxy/intercept.py): the client gets HTTPS_PROXY and
    the CA, not base URLs. With ``upstream`` "real", requests go to the hosts called."""
    ca_dir: str | None = None
    """The intercepting proxy's CA folder; None: ~/.chaosstream or $CHAOSSTREAM_HOME."""
    app: AppServer | None = None
    """The user's app server between page and model (``server:``, ``check --app``): pages
    are then driven through a browser-side proxy in front of it (clients/app.py)."""
    model_listen: int | None = None
    """Port of the model-side proxy (``--model-listen``); None: a free one."""
    browser_hop: ChaosProxy | None = None
    """Set by the runner while a two-hop run runs: the browser-side proxy."""
    page_driver: PageDriver | None = None
    """A started browser for page scenarios; None starts one when a scenario needs it."""
    artifacts_dir: str | Path = "chaosstream-artifacts"
    """Where a failed page scenario's screenshot and console log go."""
    on_proxy: Callable[[ChaosProxy], None] | None = None
    """Called with the proxy before it starts (``--otel`` attaches its tracing here)."""


class Progress(Protocol):
    """Told when each scenario starts and ends (the terminal spinner, or nothing)."""

    def start(self, name: str, index: int, total: int, timeout_s: float) -> None: ...

    def end(self, result: ScenarioResult) -> None: ...


def expected_answer(exchanges: list[Exchange], settings: MockSettings | None) -> str | None:
    """The full answer to the client's request.

    From an exchange where upstream produced a whole answer (not a resumed
    tail: those carry Last-Event-ID), which also covers a client that set the
    mock's per-request overrides; else, when the upstream is the mock, from
    its deterministic text.
    """
    first = main_request(exchanges)
    if first is None:
        return None
    for ex in exchanges:
        if ex.fingerprint == first.fingerprint and ex.upstream_complete and not ex.last_event_id:
            return ex.response_text
    if settings is not None:
        if first.provider in ("openai", "anthropic", "openai-responses", "gemini", "bedrock"):
            return answer_text(first.request_body, settings.tokens)
        if first.path.rstrip("/").endswith("/sse"):
            query = parse_qs(first.query)
            tokens = query.get("tokens", [""])[0]
            count = int(tokens) if tokens.isdigit() else settings.tokens
            return answer_text(query.get("prompt", [""])[0], count)
        # Ollama and the UI stream key the answer on the messages' text only.
        return mock_answer(first.provider, first.request_body, settings.tokens)
    return None


async def _settle(recorder: Recorder, mock: MockServer | None) -> None:
    # Polling, bounded: the proxy has no "all exchanges ended" event, and this
    # runs once per scenario. An exchange a previous scenario left open is not waited on.
    for _ in range(int(SETTLE_S / 0.02)):
        if not recorder.pending() and not (mock is not None and mock.open_streams):
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
    # Delivery times are stamped for the HTML report's timelines (verify/timeline.py).
    recorder = Recorder(keep=10_000, stamps=True)
    sink = JsonlSink(options.record) if options.record is not None else None
    if sink is not None:
        recorder.listeners.append(sink)
    mock: MockServer | None = None
    replay: ReplayServer | None = None
    own_driver: PageDriver | None = None
    given = options.page_driver
    results: list[ScenarioResult] = []
    try:
        if options.upstream is None:
            mock = await start_mock(settings=options.mock_settings)
        elif is_cassette(options.upstream):
            # Offline: the cassette's replay server is the proxy's upstream
            # (docs/cassettes.md); the proxy and its faults work as in front of a server.
            folder = options.upstream[len(CASSETTE_SCHEME) :]
            opts = CassetteOptions(folder, "none", (), (), options.match_on, options.replay_speed)
            replay = (await open_cassette(opts, options.upstream))[2]
        upstream = (replay.url if replay is not None else options.upstream) or (
            mock.url if mock is not None else ""
        )
        real = options.intercept and upstream == "real"
        if real:
            upstream = "https://chaosstream.invalid"  # proxy.intercept.NOWHERE: never called
        first_profile = scenarios[0][1] if scenarios else Profile(version=1, name="clean")
        proxy = ChaosProxy(
            upstream,
            first_profile,
            seed=run_seed,
            recorder=recorder,
            insecure=options.insecure,
            ca_file=options.ca_file,
        )
        if options.on_proxy is not None:
            options.on_proxy(proxy)
        front: InterceptProxy | None = None
        ca: tuple[str, str] | None = None
        if options.intercept:
            # Here, not at the top: cryptography loads only for --intercept.
            from chaosstream.proxy.ca import CertificateAuthority
            from chaosstream.proxy.intercept import (
                DEFAULT_INTERCEPT_HOSTS,
                InterceptProxy,
                profile_hosts,
            )

            front = InterceptProxy(
                proxy,
                CertificateAuthority(options.ca_dir),
                upstream=None if real else upstream,
                hosts=DEFAULT_INTERCEPT_HOSTS
                + tuple(h for _, p in scenarios for h in profile_hosts(p)),
            )
            url = await front.start()
            ca = (str(front.ca.cert_path), str(front.ca.bundle()))
        else:
            url = await proxy.start(port=options.model_listen or 0)
        app: AppProcess | None = None
        try:
            if options.app is not None:
                app, options.browser_hop = await _start_app(options, url, mock, run_seed)
            pages = any(s.client for s, _ in scenarios)
            if pages and (options.page_driver is None or front is not None):
                from chaosstream.clients.browser import PageDriver, intercept_args

                # With --intercept the page's browser sends the intercepted hosts to the
                # front (a driver handed in cannot: its flags are set at launch).
                own_driver = PageDriver(
                    given.executable if given is not None else None,
                    extra_args=()
                    if front is None
                    else intercept_args(front.url, front.hosts, front.ca.spki_pin()),
                )
                await own_driver.start()
                options.page_driver = own_driver
            for index, (scenario, profile) in enumerate(scenarios):
                if progress is not None:
                    progress.start(scenario.name, index, len(scenarios), scenario.timeout_s)
                missed = len(replay.player.unmatched) if replay is not None else 0
                result = await _run_one(
                    scenario,
                    profile,
                    command,
                    options,
                    proxy,
                    url,
                    mock,
                    run_seed,
                    ca,
                    replay=replay,
                )
                if replay is not None:
                    # This scenario's cassette misses (`--strict` fails the run on them).
                    result.unmatched = replay.player.unmatched[missed:]
                results.append(result)
                if progress is not None:
                    progress.end(result)
        finally:
            if own_driver is not None:
                options.page_driver = given
                await own_driver.close()
            if front is not None:
                await front.close()
                front.ca.close()
            if options.browser_hop is not None:
                await options.browser_hop.close()
                options.browser_hop = None
            if app is not None:
                await app.close()
            await proxy.close()
    finally:
        if mock is not None:
            await mock.close()
        if replay is not None:
            await replay.close()
        if sink is not None:
            sink.close()
    return RunReport(
        seed=run_seed,
        results=results,
        upstream=options.upstream or "embedded mock",
    )


def _arm(proxy: ChaosProxy, browser: ChaosProxy | None, profile: Profile, seed: int) -> None:
    """Fresh state for a scenario: the profile (split by hop when there are two), no records."""
    if browser is None:
        proxy.set_profile(profile, seed)
    else:
        from chaosstream.clients.app import split_hops

        model_profile, browser_profile = split_hops(profile)
        proxy.set_profile(model_profile, seed)
        browser.set_profile(browser_profile, seed)
        browser.fault_log.clear()
        browser.recorder.clear()
    proxy.fault_log.clear()
    proxy.recorder.clear()


async def _start_app(
    options: RunOptions, model_url: str, mock: MockServer | None, seed: int
) -> tuple[AppProcess, ChaosProxy]:
    """Start the app server pointed at the model proxy, and the browser proxy in front of it."""
    from chaosstream.clients.app import AppProcess

    assert options.app is not None
    app = AppProcess(options.app, Path(options.artifacts_dir) / "app-server.log")
    # Dummy keys when no real upstream is called (the mock, or a cassette).
    env = client_env(model_url, "app-server", mock is not None or is_cassette(options.upstream))
    try:
        app_url = await app.start(env)
        browser = ChaosProxy(
            app_url,
            Profile(version=1, name="page-load"),
            seed=seed,
            recorder=Recorder(keep=10_000, stamps=True),
        )
        await browser.start()
    except BaseException:
        await app.close()
        raise
    return app, browser


async def _run_one(
    scenario: Scenario,
    profile: Profile,
    command: Sequence[str],
    options: RunOptions,
    proxy: ChaosProxy,
    url: str,
    mock: MockServer | None,
    run_seed: int,
    ca: tuple[str, str] | None = None,
    replay: ReplayServer | None = None,
) -> ScenarioResult:
    if options.seed is not None:
        seed = options.seed
    elif scenario.seed is not None:
        seed = scenario.seed
    elif profile.seed is not None:
        seed = profile.seed
    else:
        seed = run_seed
    browser = options.browser_hop
    _arm(proxy, browser, profile, seed)
    closed_before = mock.closed_early if mock is not None else 0
    page = None
    if scenario.client is not None:
        from chaosstream.clients.browser import drive_scenario
        from chaosstream.verify.page import api_exchanges

        def arm() -> None:
            _arm(proxy, browser, profile, seed)

        # The page loads through a clean proxy; the profile is armed right before Send.
        proxy.set_profile(Profile(version=1, name="page-load"), seed)
        if browser is not None:
            browser.set_profile(Profile(version=1, name="page-load"), seed)
        assert options.page_driver is not None
        page_url = url if browser is None else browser.url
        page, client = await drive_scenario(options.page_driver, page_url, scenario, arm)
    else:
        # Dummy keys when no real upstream is called: the mock, or a cassette.
        env = client_env(url, scenario.name, mock is not None or replay is not None, ca=ca)
        client = await run_client(command, env, scenario.timeout_s)
    await _settle(proxy.recorder, mock)
    # This scenario's exchanges, still-open ones included (a hang is judged too); never
    # one a previous scenario left open (Recorder.clear() let go of those).
    exchanges = sorted(proxy.recorder.current(), key=lambda e: e.id)
    judged = exchanges if page is None else api_exchanges(exchanges)
    # With two hops the answer is the model's: the app may pass on a cut one as whole.
    model_hop = judged
    if browser is not None:
        from chaosstream.clients.app import merge_hops
        from chaosstream.verify.page import api_exchanges as page_api

        await _settle(browser.recorder, None)
        hop = browser.recorder.current()
        exchanges = merge_hops(exchanges, sorted(hop, key=lambda e: e.id))
        judged = [*model_hop, *(e for e in page_api(exchanges) if e.scope == "hop:browser")]
    answer = expected_answer(model_hop, options.mock_settings if mock is not None else None)
    if answer is None and replay is not None:
        # Every live attempt was cut: the recording still knows the whole answer.
        answer = recorded_answer(replay.player, model_hop)
    evidence = Evidence(
        client=client,
        exchanges=judged,
        answer=answer,
        mock_closed_early=(mock.closed_early - closed_before) if mock is not None else None,
        error_signal=scenario.error_signal,
        page=page,
        profile=profile,
    )
    observed, verdicts = evaluate(evidence, scenario.expect, resilient=options.resilient)
    if page is not None and any(v.verdict == "fail" for v in verdicts):
        from chaosstream.clients.browser import write_artifacts

        observed.artifacts = write_artifacts(page, options.artifacts_dir, scenario.name)
    return ScenarioResult(
        name=scenario.name,
        profile=profile.name,
        seed=seed,
        observed=observed,
        verdicts=verdicts,
        client=client,
        exchanges=exchanges,
        page=page,
        answer=evidence.answer,
    )
