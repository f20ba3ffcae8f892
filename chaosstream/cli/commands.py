"""The ``chaosstream`` command: a thin click layer over the library."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import click

from chaosstream._version import __version__
from chaosstream.cli.args import (
    BadInput,
    ca_file_option,
    hostport_option,
    writable_file_option,
)
from chaosstream.cli.cassette import (
    RECORD_MODES,
    CassetteOptions,
    match_on_option,
    upstream_or_cassette,
)
from chaosstream.cli.intercept import InterceptOptions, intercept_options, real_or
from chaosstream.cli.telemetry import open_telemetry, otel_option
from chaosstream.yamlfile import InputError

MIB = 1024 * 1024
# Defaults of the proxy's limits, written out so `--help` and `profiles list` do not
# import aiohttp (0.6 s); tests/test_cli.py keeps them equal to chaosstream.proxy.server's
# and chaosstream.proxy.record's constants of the same names.
MAX_EVENT_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 60.0
UPSTREAM_HEAD_TIMEOUT_S = 300.0
RECORD_BUDGET = 64 * MIB
BODY_LIMIT = 8 * MIB
MAX_SCOPES = 1024  # chaosstream.proxy.scopes.MAX_SCOPES
# A day: a timeout is a bound, not a way to switch one off (0 does that where allowed).
MAX_TIMEOUT_S = 86_400.0


def _replay_options(f: Any) -> Any:
    """The options that say how a cassette is matched and replayed (mock and proxy)."""
    f = click.option(
        "--replay-speed",
        type=click.FloatRange(min=0),
        default=1.0,
        show_default=True,
        help="Replay a cassette's frames at this multiple of their recorded pace (0 = as fast "
        "as possible).",
    )(f)
    f = click.option(
        "--match-on",
        callback=match_on_option,
        default=None,
        metavar="LIST",
        help="What a request must share with a recorded one: some of method,path,query,body,"
        "stream. [default: method,path,body, the streaming flag set aside]",
    )(f)
    f = click.option(
        "--redact-field",
        "redact_fields",
        multiple=True,
        metavar="NAME",
        help="JSON field to redact before a cassette is written, at any depth of the request "
        "body and of the response's JSON (SSE data, NDJSON lines, a JSON body) (repeatable). "
        "Secret headers are always redacted: docs/cassettes.md.",
    )(f)
    f = click.option(
        "--redact-header",
        "redact_headers",
        multiple=True,
        metavar="NAME",
        help="Another header to redact before a cassette is written (repeatable).",
    )(f)
    return f


class ChaosGroup(click.Group):
    """Turns every :class:`InputError` into exit code 2 with its message, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as e:
            raise BadInput(str(e)) from None


def builtin_profile_rows() -> list[tuple[str, str]]:
    """(name, first sentence of the description) for every built-in profile."""
    from chaosstream.faults.profile import builtin_names, load_profile

    rows = []
    for name in builtin_names():
        text = " ".join(load_profile(name).description.split())
        rows.append((name, re.split(r"(?<=[.!?]) ", text, maxsplit=1)[0].rstrip(".")))
    return rows


class ProxyCommand(click.Command):
    """`proxy --help` ends with the built-in profiles: what `--profile NAME` can name."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        rows = builtin_profile_rows()
        pad = max(len(name) for name, _ in rows) + 2
        with formatter.section("Built-in profiles (chaosstream profiles show NAME)"):
            room = max(formatter.width - formatter.current_indent - pad, 20)
            for name, first in rows:
                # One line each: the first sentence, cut to the terminal's width.
                text = first if len(first) <= room else first[: room - 1].rstrip() + "…"
                formatter.write(f"{'':>{formatter.current_indent}}{name:<{pad}}{text}\n")


@click.group(cls=ChaosGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chaosstream")
def cli() -> None:
    """Network chaos for streaming AI responses.

    Put chaosstream between a client and a model server, inject the faults
    real users meet (mobile latency, loss, mid-stream cuts, overloaded APIs),
    and check that the client surfaced the error, retried, resumed or fell back.
    """


@cli.command()
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    metavar="NAME|FILE",
    help="Profile(s) to show instead of the default set (repeatable).",
)
@click.option(
    "--seed", type=int, default=7, show_default=True, help="Seed for every random choice."
)
def demo(profiles: tuple[str, ...], seed: int) -> None:
    """Run the built-in client through chaos on the embedded mock and print what happened.

    Starts the mock model and the proxy on free loopback ports; needs no keys
    and no network.
    """
    from chaosstream.cli.demo import run_demo

    sys.exit(run_demo(list(profiles) or None, seed))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 = any free port).",
)
@click.option(
    "--ttft-ms",
    default=50.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Delay before the first token.",
)
@click.option(
    "--tokens-per-s",
    default=200.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Pace of tokens after the first (0 = as fast as possible).",
)
@click.option(
    "--tokens", default=40, show_default=True, type=click.IntRange(min=1), help="Tokens per answer."
)
@click.option(
    "--head-timeout-s",
    type=click.FloatRange(min=0, min_open=True, max=86_400),
    default=None,
    metavar="SECONDS",
    help="Close a connection whose request head is not complete this long after it opened "
    "(slowloris). [default: 30; env: CHAOSSTREAM_MOCK_HEAD_TIMEOUT_S]",
)
@click.option(
    "--idle-timeout-s",
    type=click.FloatRange(min=0, min_open=True, max=86_400),
    default=None,
    metavar="SECONDS",
    help="Close a kept-alive connection idle this long; a streaming answer is never cut. "
    "[default: 75; env: CHAOSSTREAM_MOCK_IDLE_TIMEOUT_S]",
)
@click.option(
    "--cassette",
    metavar="DIR",
    default=None,
    help="Replay the cassette in DIR (DIR/cassette.yaml) instead of the synthetic model: "
    "docs/cassettes.md.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="With --cassette: exit 1 at the end when a request matched no recorded one.",
)
@_replay_options
def mock(
    host: str,
    port: int,
    ttft_ms: float,
    tokens_per_s: float,
    tokens: int,
    head_timeout_s: float | None,
    idle_timeout_s: float | None,
    cassette: str | None,
    strict: bool,
    redact_headers: tuple[str, ...],
    redact_fields: tuple[str, ...],
    match_on: tuple[str, ...] | None,
    replay_speed: float,
) -> None:
    """Serve the embedded mock model (OpenAI, Anthropic, /sse, /ws), or replay a cassette.

    Answers are deterministic per prompt, so a verifier knows the full text.
    Limits and timeouts: docs/limits.md.
    """
    import dataclasses

    if cassette is not None:
        _replay(
            CassetteOptions(
                cassette, "none", redact_headers, redact_fields, match_on, replay_speed
            ),
            host,
            port,
            strict,
        )
        return

    from chaosstream.mock import MockLimits, MockSettings, run_mock

    try:
        settings = MockSettings(ttft_ms=ttft_ms, tokens_per_s=tokens_per_s, tokens=tokens)
        limits = MockLimits.from_env()
        if head_timeout_s is not None:
            limits = dataclasses.replace(limits, head_timeout_s=head_timeout_s)
        if idle_timeout_s is not None:
            limits = dataclasses.replace(limits, idle_timeout_s=idle_timeout_s)
    except ValueError as e:
        raise BadInput(str(e)) from None

    def ready(url: str) -> None:
        click.echo(f"chaosstream mock listening on {url}", err=True)
        click.echo(f"  OpenAI:    OPENAI_BASE_URL={url}/v1", err=True)
        click.echo(f"  Anthropic: ANTHROPIC_BASE_URL={url}", err=True)

    try:
        run_mock(host, port, settings, on_ready=ready, limits=limits)
    except OSError as e:
        raise BadInput(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _replay(opts: CassetteOptions, host: str, port: int, strict: bool) -> None:
    from chaosstream.cli.cassette import player_for
    from chaosstream.mock.cassette import run_replay

    player = player_for(opts)

    def ready(url: str) -> None:
        n = len(player.cassette.interactions)
        click.echo(f"chaosstream mock listening on {url}", err=True)
        click.echo(f"  replaying {n} interaction(s) from {opts.path}", err=True)

    try:
        run_replay(player, host, port, opts.speed, on_ready=ready)
    except OSError as e:
        raise BadInput(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    if strict and player.unmatched:
        for reason in player.unmatched[:20]:
            click.echo(reason, err=True)
        click.echo(f"--strict: {len(player.unmatched)} request(s) matched no recording", err=True)
        sys.exit(1)


@cli.command(cls=ProxyCommand)
@click.option(
    "--strict",
    is_flag=True,
    help="With --upstream cassette:DIR: exit 1 at the end when a request matched no "
    "recorded one (each is named with the nearest recording).",
)
@click.option(
    "--upstream",
    metavar="URL",
    callback=real_or(upstream_or_cassette),
    help="Model server to forward to (http:// or https://), cassette:DIR to replay a "
    "cassette, or (--mode intercept) real: the host each client calls. Default: start the "
    "embedded mock.",
)
@click.option(
    "--profile",
    "profile_name",
    default="clean",
    show_default=True,
    metavar="NAME|FILE",
    help="Built-in profile name or profile file.",
)
@click.option(
    "--listen",
    callback=hostport_option,
    default="127.0.0.1:8080",
    metavar="HOST:PORT",
    show_default=True,
    help="Address the proxy listens on.",
)
@click.option(
    "--control",
    callback=hostport_option,
    default=None,
    metavar="HOST:PORT",
    help="Serve the control API (profile, faults, exchanges, /metrics, Toxiproxy API) here.",
)
@click.option(
    "--control-token",
    envvar="CHAOSSTREAM_CONTROL_TOKEN",
    default=None,
    metavar="TOKEN",
    help="Bearer token the control API requires; needed when --control is not loopback. "
    "[env: CHAOSSTREAM_CONTROL_TOKEN]",
)
@click.option(
    "--control-allow-host",
    "control_allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Another Host name the control API answers to (repeatable; loopback names and the "
    "bound address always work; others are refused against DNS rebinding). "
    "[env: CHAOSSTREAM_CONTROL_ALLOW_HOST, space-separated]",
)
@click.option(
    "--toxiproxy",
    "toxiproxy_url",
    metavar="URL",
    default=None,
    help="Toxiproxy API for profiles' toxiproxy: sections (default: the start profile's url, "
    "else http://127.0.0.1:8474); profiles pushed over the control API may not name another.",
)
@click.option("--seed", type=int, default=None, help="Override the profile's seed.")
@click.option(
    "--record",
    metavar="FILE",
    default=None,
    callback=writable_file_option,
    help="Append every exchange to FILE as JSON lines.",
)
@click.option("--insecure", is_flag=True, help="Do not verify the upstream's TLS certificate.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    callback=ca_file_option,
    help="CA bundle (PEM) to verify the upstream's TLS certificate with, instead of the "
    "system's trust store (like curl --cacert).",
)
@click.option(
    "--max-event-bytes",
    type=click.IntRange(min=1),
    default=MAX_EVENT_BYTES,
    show_default=True,
    help="Largest SSE event framed while a fault that counts events is armed; past it the rest "
    "of the body passes on unframed, faults no longer acting on it.",
)
@click.option(
    "--idle-timeout-s",
    type=click.FloatRange(min=0, min_open=True, max=MAX_TIMEOUT_S),
    default=IDLE_TIMEOUT_S,
    show_default=True,
    help="Close a client connection with no complete request head for this long since it "
    "opened or since its last response ended (idle keep-alive and slowloris alike).",
)
@click.option(
    "--upstream-timeout-s",
    type=click.FloatRange(min=0, max=MAX_TIMEOUT_S),
    default=UPSTREAM_HEAD_TIMEOUT_S,
    show_default=True,
    help="Answer 504 (in the provider's error shape) when the upstream sends no response head "
    "within this long; 0 waits forever.",
)
@click.option(
    "--record-budget-mib",
    type=click.IntRange(min=1),
    default=RECORD_BUDGET // MIB,
    show_default=True,
    help="Memory for recorded bodies across exchanges; past it the oldest are compacted "
    "(texts cut, bodies dropped), then forgotten.",
)
@click.option(
    "--record-body-limit-mib",
    type=click.IntRange(min=1),
    default=BODY_LIMIT // MIB,
    show_default=True,
    help="Recorded bytes of one body; past it the exchange is marked truncated.",
)
@click.option(
    "--max-scopes",
    type=click.IntRange(min=1, max=1_000_000),
    default=MAX_SCOPES,
    show_default=True,
    help="Scopes (/~/<scope>/ or X-Chaosstream-Scope) held at once; past it the least "
    "recently used idle one is forgotten, and a new scope gets 503 while all are busy.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Proxy processes behind the one port: each scope is served by one of them, unscoped "
    "requests by the first; /metrics and GET /chaos/scopes merge them all (docs/fleet.md).",
)
@click.option(
    "--loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",
    show_default=True,
    help="Event loop: auto is uvloop where installed (everywhere but Windows), else asyncio's.",
)
@click.option("--worker-link", hidden=True, default=None, help="Internal: FD:INDEX:N of a worker.")
@otel_option
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    help="Log lines: console on a terminal, JSON otherwise.",
)
@click.option(
    "--cassette",
    metavar="DIR",
    default=None,
    help="Record upstream's exchanges to DIR/cassette.yaml (secrets redacted; frames with "
    "their arrival times): docs/cassettes.md.",
)
@click.option(
    "--record-mode",
    type=click.Choice(RECORD_MODES),
    default="once",
    show_default=True,
    help="With --cassette, as in VCR.py: once (record if no cassette yet, else replay), "
    "new_episodes (replay matches, record the rest), all (record all), none (replay only).",
)
@_replay_options
@intercept_options
def proxy(
    strict: bool,
    upstream: str | None,
    profile_name: str,
    listen: tuple[str, int],
    control: tuple[str, int] | None,
    control_token: str | None,
    control_allow_hosts: tuple[str, ...],
    toxiproxy_url: str | None,
    seed: int | None,
    record: str | None,
    insecure: bool,
    ca_file: str | None,
    max_event_bytes: int,
    idle_timeout_s: float,
    upstream_timeout_s: float,
    record_budget_mib: int,
    record_body_limit_mib: int,
    max_scopes: int,
    workers: int,
    loop: str,
    worker_link: str | None,
    log_format: str,
    otel: bool | None,
    cassette: str | None,
    record_mode: str,
    redact_headers: tuple[str, ...],
    redact_fields: tuple[str, ...],
    match_on: tuple[str, ...] | None,
    replay_speed: float,
    intercept: InterceptOptions | None,
) -> None:
    """Run the chaos proxy in front of a model server (or a cassette: docs/cassettes.md).

    With --mode intercept it is an HTTPS_PROXY for clients that call the providers'
    own URLs: docs/intercept.md.
    """
    from chaosstream.cli.logs import configure_logging
    from chaosstream.cli.serve import ProxyLimits, pick_loop, run_loop, serve_proxy
    from chaosstream.cli.workers import WorkerLink
    from chaosstream.faults.profile import load_profile
    from chaosstream.integrations.control import ControlError, check_bind

    configure_logging(log_format)  # type: ignore[arg-type]
    pick_loop(loop)  # a missing uvloop is bad input before anything starts
    telemetry = open_telemetry(otel)
    profile = load_profile(profile_name)
    if control is not None:
        try:
            check_bind(control[0], control_token)
        except ControlError as e:
            raise BadInput(f"--control {control[0]}:{control[1]}: {e}") from None
    if intercept is not None and (workers > 1 or worker_link is not None):
        raise click.BadParameter("--mode intercept runs in one process", param_hint="--workers")
    if workers > 1 and worker_link is None:
        from chaosstream.cli.workers import serve_workers, worker_args

        ctx = click.get_current_context()
        sys.exit(
            run_loop(
                serve_workers(workers, worker_args(ctx), listen, control, control_allow_hosts),
                loop,
            )
        )
    run_loop(
        serve_proxy(
            upstream=upstream,
            profile=profile,
            listen=listen,
            seed=seed,
            insecure=insecure,
            ca_file=ca_file,
            control=control,
            control_token=control_token,
            record=record,
            limits=ProxyLimits(
                max_event_bytes=max_event_bytes,
                idle_timeout_s=idle_timeout_s,
                upstream_head_timeout_s=upstream_timeout_s or None,
                record_budget_bytes=record_budget_mib * MIB,
                record_body_limit=record_body_limit_mib * MIB,
                max_scopes=max_scopes,
            ),
            toxiproxy_url=toxiproxy_url,
            control_allow_hosts=control_allow_hosts,
            telemetry=telemetry,
            cassette=None
            if cassette is None and not (upstream or "").startswith("cassette:")
            else CassetteOptions(
                cassette or "",
                record_mode,
                redact_headers,
                redact_fields,
                match_on,
                replay_speed,
            ),
            worker=None if worker_link is None else WorkerLink.parse(worker_link),
            intercept=intercept,
            strict=strict,
        ),
        loop,
    )


@cli.group()
def profiles() -> None:
    """List, show, validate built-in and custom profiles; print their JSON Schema."""


@profiles.command("list")
def profiles_list() -> None:
    """Built-in profiles with their descriptions."""
    for name, first in builtin_profile_rows():
        click.echo(f"{name:<20} {first}")


@profiles.command("show")
@click.argument("name", metavar="NAME|FILE")
def profiles_show(name: str) -> None:
    """Print a profile (built-in name or file) as YAML, validated."""
    import yaml

    from chaosstream.faults.profile import load_profile

    profile = load_profile(name)
    data = profile.model_dump(mode="json", exclude_unset=True)
    data["description"] = profile.description.strip()
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@profiles.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def profiles_validate(files: tuple[str, ...]) -> None:
    """Check profile files; print every problem with file, line and field."""
    from chaosstream.faults.profile import load_profile

    problems = []
    for path in files:
        try:
            load_profile(path if "/" in path or path.endswith((".yaml", ".yml")) else f"./{path}")
            click.echo(f"{path}: ok")
        except InputError as e:
            problems.append(str(e))
    if problems:
        raise BadInput("\n".join(problems))


@profiles.command("schema")
def profiles_schema() -> None:
    """Print the JSON Schema of profile files (for editors and CI)."""
    from chaosstream.faults.profile import profile_schema

    click.echo(json.dumps(profile_schema(), indent=2))


def _add_run_commands() -> None:
    # `run` and `check` live in their own module; registered here so `--help` lists them.
    from chaosstream.cli.run import check, run

    cli.add_command(run)
    cli.add_command(check)
    from chaosstream.cli.load import load  # `load` imports Locust only when it runs

    cli.add_command(load)
    from chaosstream.cli.ca import ca  # click only: cryptography loads when `ca` runs

    cli.add_command(ca)


_add_run_commands()


def main() -> None:
    """Console-script entry point.

    SIGPIPE keeps Python's default (ignored): restoring SIG_DFL for quiet pipes
    would let a write to a socket the peer closed kill ``mock`` and ``proxy``
    silently (exit 141). A closed stdout is handled where output is printed:
    click turns EPIPE inside a command into exit 1, and the last flush below
    follows the recipe in the Python docs ("Note on SIGPIPE", signal module).
    """
    try:
        try:
            cli(prog_name="chaosstream")
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at devnull so that raises nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
