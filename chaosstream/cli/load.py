"""The ``load`` command: streaming load under chaos on Locust (a thin layer over load/)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from chaosstream.cli.args import (
    BadInput,
    ca_file_option,
    cut,
    cut_path,
    upstream_option,
    writable_file_option,
)

__all__ = ["FORMAT_NAMES", "INSTALL_HINT", "load", "parse_duration", "start_mock_process"]

FORMAT_NAMES = ("openai-chat", "openai-responses", "anthropic", "gemini", "ollama", "bedrock")
"""``--format`` choices: the keys of ``load.plan.FORMATS`` (not imported here: it loads
aiohttp, and ``chaosstream --help`` must not; a test keeps the two equal)."""

INSTALL_HINT = "chaosstream load needs Locust: pip install 'chaosstream[load]'"
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")
MOCK_READY_TIMEOUT_S = 30.0


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m`` -> seconds (Locust's --run-time forms)."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise click.BadParameter(f"{cut(text)} is not a duration like 30s, 5m or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise click.BadParameter(f"{cut(text)}: a run lasts more than 0 s")
    return total


def _duration_option(ctx: click.Context, param: click.Parameter, value: str) -> float:
    return parse_duration(value)


@contextlib.contextmanager
def start_mock_process(ttft_ms: float, tokens_per_s: float, tokens: int) -> Iterator[str]:
    """The embedded mock in a child process on a free loopback port; yields its URL.

    A process of its own, not a thread of the load generator: on a small machine the
    mock gets its own core and its pacing does not suffer from the users' CPU.
    """
    cmd = [
        sys.executable,
        "-m",
        "chaosstream",
        "mock",
        "--port",
        "0",
        "--ttft-ms",
        str(ttft_ms),
        "--tokens-per-s",
        str(tokens_per_s),
        "--tokens",
        str(tokens),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            found = re.search(r"listening on (\S+)", line)
            if found:
                url = found.group(1)
                break
        if url is None:
            raise BadInput(f"the embedded mock did not start (exit {proc.wait(5)})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _signals_noted() -> Iterator[list[int]]:
    """SIGINT/SIGTERM during start-up (importing Locust takes seconds) are noted, not
    fatal: the engine ends the run at once and the report says "interrupted"."""
    noted: list[int] = []

    def note(signum: int, frame: object) -> None:
        noted.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield noted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command()
@click.option(
    "--upstream",
    callback=upstream_option,
    metavar="URL",
    help="Model server to load (default: the embedded mock, started for the run).",
)
@click.option(
    "--users", type=click.IntRange(min=1), help="Simulated users (required but on a --worker)."
)
@click.option(
    "--spawn-rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Users started per second (required but on a --worker).",
)
@click.option(
    "--run-time",
    default="30s",
    show_default=True,
    callback=_duration_option,
    help="How long to run once spawning starts: 90, 30s, 5m, 1h30m.",
)
@click.option(
    "--mix",
    default="clean=1",
    show_default=True,
    metavar="PROFILE=SHARE,...",
    help="Profiles (built-in names or files) and their shares of the users.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_NAMES),
    default="openai-chat",
    show_default=True,
    help="Wire format of the requests (bedrock: unsigned, for the mock or a signing gateway).",
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
    "--prompt-file",
    type=click.Path(dir_okay=False),
    help="Prompts, one per line; each request picks one at random.",
)
@click.option("--model", default="chaosstream-mock", show_default=True, help="Model name sent.")
@click.option(
    "--retry",
    "retry_name",
    type=click.Choice(["none", "sdk", "storm"]),
    default="sdk",
    show_default=True,
    help="After a failed attempt: none; sdk (2 retries, backoff from 0.5 s capped at "
    "8 s, honours Retry-After); storm (at once, up to 10 attempts).",
)
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="A user's read timeout (also how long a stall holds).",
)
@click.option(
    "--think-s",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Pause of a user between two answers.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the users' faults.")
@click.option("--json", "json_file", callback=writable_file_option, help="Write the JSON report.")
@click.option(
    "--html",
    "html_file",
    callback=writable_file_option,
    help="Write a self-contained HTML report with charts.",
)
@click.option(
    "--csv",
    "csv_prefix",
    metavar="PREFIX",
    help="Write Locust's CSV files (PREFIX_stats.csv, ...).",
)
@click.option("--web", is_flag=True, help="Serve Locust's web UI while the run lasts.")
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=8089,
    show_default=True,
    help="Port of the web UI (127.0.0.1; 0: a free port, printed on stderr).",
)
@click.option("--master", is_flag=True, help="Be a Locust master: workers run the users.")
@click.option("--worker", is_flag=True, help="Be a Locust worker of --master-host.")
@click.option(
    "--master-host", default="127.0.0.1", show_default=True, help="The master a worker connects to."
)
@click.option(
    "--master-port",
    type=click.IntRange(1, 65535),
    default=5557,
    show_default=True,
    help="The master's port.",
)
@click.option(
    "--master-bind-host", default="*", show_default=True, help="Interface the master listens on."
)
@click.option(
    "--expect-workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Workers the master waits for before starting.",
)
@click.option(
    "--max-interruption-rate",
    type=click.FloatRange(0.0, 1.0),
    help="Exit 1 when more than this share of started streams is interrupted.",
)
@click.option(
    "--min-goodput",
    type=click.FloatRange(0.0, 1.0),
    help="Exit 1 when fewer than this share of answers complete within the SLOs.",
)
@click.option(
    "--ttft-slo-ms",
    type=click.FloatRange(min=0, min_open=True),
    help="Goodput counts an answer only if its first token came within this.",
)
@click.option(
    "--ttlt-slo-ms",
    type=click.FloatRange(min=0, min_open=True),
    help="Goodput counts an answer only if its last token came within this.",
)
@click.option(
    "--mock-ttft-ms",
    type=click.FloatRange(0, 600_000),
    default=200.0,
    show_default=True,
    help="Embedded mock: delay before the first token.",
)
@click.option(
    "--mock-tokens-per-s",
    type=click.FloatRange(0.01, 1_000_000),
    default=50.0,
    show_default=True,
    help="Embedded mock: token pace.",
)
@click.option(
    "--mock-tokens",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Embedded mock: tokens per answer.",
)
def load(
    upstream: str | None,
    users: int | None,
    spawn_rate: float | None,
    run_time: float,
    mix: str,
    fmt: str,
    insecure: bool,
    ca_file: str | None,
    prompt_file: str | None,
    model: str,
    retry_name: str,
    timeout_s: float,
    think_s: float,
    seed: int,
    json_file: str | None,
    html_file: str | None,
    csv_prefix: str | None,
    web: bool,
    web_port: int,
    master: bool,
    worker: bool,
    master_host: str,
    master_port: int,
    master_bind_host: str,
    expect_workers: int,
    max_interruption_rate: float | None,
    min_goodput: float | None,
    ttft_slo_ms: float | None,
    ttlt_slo_ms: float | None,
    mock_ttft_ms: float,
    mock_tokens_per_s: float,
    mock_tokens: int,
) -> None:
    """Streaming load under chaos: USERS on the --mix's bad networks, run by Locust.

    Each user streams one answer after another; its profile's faults act on its
    own socket (slow reads the server feels, cuts, stalls). Headless, with a
    progress line. Exit 0 when the objectives hold, 1 when one is missed, 2 on
    bad input. With --master, start workers with the same options plus --worker.
    """
    if master and worker:
        raise click.UsageError("give --master or --worker, not both")
    if not worker and (users is None or spawn_rate is None):
        raise click.UsageError("--users and --spawn-rate are required (but on a --worker)")
    if csv_prefix is not None:
        folder = Path(csv_prefix).parent
        if not folder.is_dir():
            raise click.BadParameter(
                f"folder {cut_path(str(folder))} does not exist", param_hint="--csv"
            )
    from chaosstream.load.plan import FORMATS, LoadPlan, parse_mix, read_prompts, retry_policy

    entries = parse_mix(mix)  # InputError -> exit 2 through the group
    prompts = read_prompts(prompt_file)
    # find_spec, not import: importing Locust monkey-patches the process (engine does it).
    if importlib.util.find_spec("locust") is None:
        raise BadInput(INSTALL_HINT)
    # A signal before the engine installs its own handlers is handed to the engine.
    with _signals_noted() as early_signals:
        from chaosstream.load.engine import EngineOptions, LoadError, run_load
        from chaosstream.load.report import (
            Objectives,
            check_objectives,
            html_report,
            load_document,
            terminal_summary,
        )

        if html_file is not None and importlib.util.find_spec("matplotlib") is None:
            raise BadInput("--html needs matplotlib: pip install 'chaosstream[load]'")
        key_var = FORMATS[fmt].key_env
        mode = "master" if master else "worker" if worker else "local"
        given_upstream = upstream
        with contextlib.ExitStack() as stack:
            if upstream is None and mode != "master":
                upstream = stack.enter_context(
                    start_mock_process(mock_ttft_ms, mock_tokens_per_s, mock_tokens)
                )
                api_key = "chaosstream-dummy-key"
            else:
                api_key = os.environ.get(key_var or "", "chaosstream-dummy-key")
            plan = LoadPlan(
                upstream=upstream or "http://127.0.0.1:1",
                mix=entries,
                format=fmt,
                prompts=prompts,
                retry=retry_policy(retry_name),
                model=model,
                api_key=api_key,
                timeout_s=timeout_s,
                think_s=think_s,
                ttft_slo_ms=ttft_slo_ms,
                ttlt_slo_ms=ttlt_slo_ms,
                seed=seed,
                ca_file=ca_file,
                insecure=insecure,
            )
            options = EngineOptions(
                users=users or 0,  # a worker's users come from its master
                spawn_rate=spawn_rate or 0.0,
                run_time_s=run_time,
                mode=mode,
                master_host=master_host,
                master_port=master_port,
                master_bind_host=master_bind_host,
                expect_workers=expect_workers,
                web=web,
                web_port=web_port,
                csv_prefix=csv_prefix,
                early_signals=early_signals,
            )
            try:
                result = run_load(plan, options)
            except LoadError as e:
                raise BadInput(str(e)) from None
    # DESIGN.md exit codes: 130 / 143 when SIGINT / SIGTERM ended the run; the report
    # of what ran is still written, marked "interrupted": true.
    interrupted_exit = 128 + result.interrupted if result.interrupted else None
    if mode == "worker":
        sys.exit(interrupted_exit or 0)
    objectives = Objectives(max_interruption_rate, min_goodput, ttft_slo_ms, ttlt_slo_ms)
    run = {
        "upstream": given_upstream or "embedded mock",
        "users": users,
        "spawn_rate": spawn_rate,
        "run_time_s": run_time,
        "mix": {e.name: round(e.share, 4) for e in entries},
        "format": fmt,
        "retry": retry_name,
        "mode": mode,
        "workers": result.workers,
        "seed": seed,
    }
    doc = load_document(result.stats, result.duration_s, run, objectives)
    doc["interrupted"] = result.interrupted is not None
    click.echo(terminal_summary(doc))
    if json_file is not None:
        Path(json_file).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if html_file is not None:
        Path(html_file).write_text(html_report(doc, result.stats), encoding="utf-8")
    if interrupted_exit is not None:
        sys.exit(interrupted_exit)
    sys.exit(1 if check_objectives(doc["overall"], objectives) else 0)
