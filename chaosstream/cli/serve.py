"""Running the proxy as a long-lived command (``chaosstream proxy``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from chaosstream.cli.args import BadInput, cut
from chaosstream.cli.cassette import CassetteOptions, open_cassette
from chaosstream.cli.intercept import REAL, InterceptOptions, describe, start_front
from chaosstream.cli.workers import WorkerLink, serve_health
from chaosstream.faults.profile import Profile
from chaosstream.mock import MockServer, start_mock
from chaosstream.proxy.record import BODY_LIMIT, RECORD_BUDGET, JsonlSink, Recorder
from chaosstream.proxy.scopes import MAX_SCOPES
from chaosstream.proxy.server import (
    IDLE_TIMEOUT_S,
    MAX_EVENT_BYTES,
    UPSTREAM_HEAD_TIMEOUT_S,
    ChaosProxy,
    tune_gc,
)

if TYPE_CHECKING:
    from chaosstream.integrations.otel import ProxyTelemetry
    from chaosstream.proxy.intercept import InterceptProxy

T = TypeVar("T")


@dataclass(frozen=True)
class ProxyLimits:
    """The caps and timeouts of ``chaosstream proxy`` (defaults: ChaosProxy's and Recorder's).

    ``upstream_head_timeout_s`` None waits for the upstream's response head forever.
    """

    max_event_bytes: int = MAX_EVENT_BYTES
    idle_timeout_s: float = IDLE_TIMEOUT_S
    upstream_head_timeout_s: float | None = UPSTREAM_HEAD_TIMEOUT_S
    record_budget_bytes: int = RECORD_BUDGET
    record_body_limit: int = BODY_LIMIT
    max_scopes: int = MAX_SCOPES


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """A worker of ``--workers N`` prints no banner: the front prints the one users read."""


def pick_loop(choice: str = "auto") -> str:
    """The event loop ``chaosstream proxy --loop choice`` runs on.

    ``auto`` is uvloop where it is installed (a dependency everywhere but Windows,
    which it does not support), else asyncio's own loop. In the benchmarks the proxy
    costs 14-15 % less CPU per event on uvloop at 1,000-3,000 paced streams, most of
    it per stream: 259 against 338 us (README, Benchmarks). ``asyncio`` is there to
    rule the loop out when chasing a bug.
    """
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise click.BadParameter(
                "uvloop is not installed (it does not support Windows); use --loop asyncio",
                param_hint="--loop",
            ) from None
        return "asyncio"
    return "uvloop"


def run_loop(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """Run ``main`` on the loop ``pick_loop(loop)`` names; give back what it returns."""
    if pick_loop(loop) == "asyncio":
        return asyncio.run(main)
    # Imported here, not in pick_loop's `try`: an error while serving must not be
    # chained to (and reported as) a missing uvloop.
    import uvloop

    return uvloop.run(main)


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the banner says the proxy runs on."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


async def serve_proxy(
    *,
    upstream: str | None,
    profile: Profile,
    listen: tuple[str, int],
    seed: int | None = None,
    insecure: bool = False,
    ca_file: str | None = None,
    control: tuple[str, int] | None = None,
    control_token: str | None = None,
    record: str | None = None,
    limits: ProxyLimits = ProxyLimits(),
    toxiproxy_url: str | None = None,
    control_allow_hosts: tuple[str, ...] = (),
    telemetry: ProxyTelemetry | None = None,
    cassette: CassetteOptions | None = None,
    worker: WorkerLink | None = None,
    intercept: InterceptOptions | None = None,
    strict: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM; with no upstream, start the embedded mock first.

    ``record`` appends every finished exchange to that file as one JSON line.
    ``limits`` sets the proxy's caps and timeouts and the recorder's memory budget.

    ``control`` also serves the control API there (with the Toxiproxy API); a
    profile's ``toxiproxy:`` section is applied at start and removed at exit.
    Its Toxiproxy is ``toxiproxy_url``, else the start profile's ``url``, else
    Toxiproxy's default: profiles pushed over the API may only use that one.
    ``control_allow_hosts`` are extra ``Host`` names the control API answers to.
    ``telemetry`` (``--otel``: chaosstream.cli.telemetry) traces every exchange, scoped
    ones too; what it still holds is exported at exit.
    ``cassette`` records to (and per its mode replays from) a cassette; an
    ``upstream`` of ``cassette:DIR`` replays DIR (chaosstream.cli.cassette); with
    ``strict``, a request that matched no recording makes the exit code 1 at the end.
    ``worker`` serves as one of ``--workers N`` (chaosstream.cli.workers): on a private
    loopback port, handed its connections by the front, quiet, and only worker 0
    applies a ``toxiproxy:`` section (one Toxiproxy is shared by all).
    """
    from chaosstream.faults.toxiproxy_section import (
        DEFAULT_URL,
        AppliedToxics,
        ToxiproxyError,
        apply_toxiproxy,
        check_url,
        remove_toxiproxy,
        timeout_from_env,
    )
    from chaosstream.integrations.control import ControlServer
    from chaosstream.toxiproxy import ToxiproxyServer
    from chaosstream.yamlfile import InputError

    if toxiproxy_url is not None:
        try:
            check_url(toxiproxy_url)
        except ValueError as e:
            raise InputError(f"--toxiproxy: {e}") from None
    section = profile.toxiproxy
    # The command line (or the profile file it names) decides where Toxiproxy is;
    # a profile pushed over the control API later may not (SSRF).
    toxiproxy_url = toxiproxy_url or (section.url if section is not None else DEFAULT_URL)
    if section is not None:
        section = section.model_copy(update={"url": toxiproxy_url})
    try:
        toxiproxy_timeout_s = timeout_from_env()
    except ValueError as e:
        raise InputError(str(e)) from None

    mock: MockServer | None = None
    panel: ControlServer | None = None
    external: AppliedToxics | None = None
    asked = upstream
    # ``--mode intercept --upstream real``: each request goes to the host it names.
    real = intercept is not None and upstream == REAL
    front: InterceptProxy | None = None
    unmatched: list[str] = []
    upstream, tap, replay = await open_cassette(cassette, None if real else upstream)
    if upstream is None and not real:
        mock = await start_mock()
        upstream = mock.url
    recorder = Recorder(
        budget_bytes=limits.record_budget_bytes, body_limit=limits.record_body_limit
    )
    try:
        sink = JsonlSink(record) if record is not None else None
    except OSError as e:  # checked by the command line already; a race or a /proc path
        raise BadInput(f"--record {cut(record or '')}: {e.strerror or e}") from None
    if sink is not None:
        recorder.listeners.append(sink)
    proxy = ChaosProxy(
        upstream or "https://chaosstream.invalid",  # proxy.intercept.NOWHERE: never called
        profile,
        seed=seed,
        recorder=recorder,
        insecure=insecure,
        ca_file=ca_file,
        max_event_bytes=limits.max_event_bytes,
        idle_timeout_s=limits.idle_timeout_s,
        upstream_head_timeout_s=limits.upstream_head_timeout_s,
        max_scopes=limits.max_scopes,
        cassette=tap,
    )
    if sink is not None:
        # Scoped exchanges go to --record too (each scope numbers its exchanges from 1).
        proxy.scopes.listeners.append(lambda _scope, ex: sink(ex))
    if telemetry is not None:
        telemetry.attach(proxy)  # before start: it adds a middleware
    try:
        # Handlers first: a SIGTERM during start-up still runs the clean-up below.
        stop = asyncio.Event()
        echo = click.echo if worker is None else _quiet
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if intercept is not None:
            front = await start_front(proxy, intercept, upstream, profile, listen)
            url = front.url
        else:
            try:
                url = await (worker.start(proxy) if worker else serve_health(proxy, *listen))
            except OSError as e:
                addr = f"{listen[0]}:{listen[1]}"
                raise BadInput(f"cannot listen on {addr}: {e.strerror or e}") from None
        tune_gc()  # once serving: start-up's objects frozen, fewer collections (issue 17)
        echo(f"chaosstream proxy listening on {url}", err=True)
        if front is not None:
            for line in describe(front, mock is not None):
                echo(line, err=True)
        else:
            echo(f"  upstream: {upstream}{' (embedded mock)' if mock else ''}", err=True)
        echo(
            f"  profile:  {profile.name}   seed: {proxy.seed}   loop: {running_loop_name()}",
            err=True,
        )
        if tap is not None or replay is not None:
            doing = "recording to" if tap is not None else "replaying"
            where = tap.path if tap is not None else (cassette.path if cassette else "") or asked
            echo(f"  cassette: {doing} {where}", err=True)
        if front is None:
            echo(f"  clients:  OPENAI_BASE_URL={url}/v1  ANTHROPIC_BASE_URL={url}", err=True)
        if telemetry is not None:
            echo(f"  otel:     {telemetry.where}", err=True)
        if section is not None and (worker is None or worker.index == 0):
            try:
                external = await apply_toxiproxy(section, toxiproxy_timeout_s)
            except ToxiproxyError as e:
                raise click.ClickException(str(e)) from None
            echo(
                f"  toxiproxy: {len(external.added)} toxic(s) on {section.proxy!r} "
                f"at {section.url}",
                err=True,
            )
        if control is not None:
            panel = ControlServer(
                proxy,
                token=control_token,
                toxiproxy=ToxiproxyServer(seed=proxy.seed),
                external=external,
                toxiproxy_url=toxiproxy_url,
                toxiproxy_timeout_s=toxiproxy_timeout_s,
                allow_hosts=control_allow_hosts,
            )
            try:
                control_url = await panel.start(*control)
            except OSError as e:
                raise BadInput(
                    f"cannot listen on {control[0]}:{control[1]}: {e.strerror or e}"
                ) from None
            echo(f"  control:  {control_url}  (metrics: {control_url}/metrics)", err=True)
        if worker is not None:
            await worker.ready(url, panel.url if panel is not None else None, stop)
        await stop.wait()
    finally:
        if panel is not None:
            # It owns the toxics now (a profile switched over the API brings its own)
            # and removes them once no swap is running.
            await panel.close()
        elif external is not None:
            with contextlib.suppress(ToxiproxyError):
                await remove_toxiproxy(external)
        if front is not None:
            await front.close()
            front.ca.close()
        await proxy.close()
        if worker is not None:
            await worker.close()
        if telemetry is not None:
            # A blocking export of what is batched (bounded by the exporter's timeout).
            await asyncio.to_thread(telemetry.shutdown)
        if mock is not None:
            await mock.close()
        if replay is not None:
            unmatched = list(replay.player.unmatched)
            await replay.close()
        if sink is not None:
            sink.close()
    if strict and unmatched:
        for reason in unmatched[:20]:
            click.echo(reason, err=True)
        click.echo(f"--strict: {len(unmatched)} request(s) matched no recording", err=True)
        raise SystemExit(1)
