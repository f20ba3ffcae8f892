"""`chaosstream load` on the command line: the CI gate's exit codes and bad input."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from chaosstream.mock import MockSettings, create_app

CMD = [sys.executable, "-m", "chaosstream", "load"]
QUICK = ["--users", "6", "--spawn-rate", "20", "--run-time", "2s", "--mock-ttft-ms", "50"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)


def test_objectives_met_exit_0(tmp_path: Path) -> None:
    """clean meets a 50 % goodput objective under a 2 s TTFT SLO: exit 0, passed true."""
    out = tmp_path / "ok.json"
    result = _run(*QUICK, "--mix", "clean=1", "--min-goodput", "0.5", "--ttft-slo-ms", "2000",
                  "--max-interruption-rate", "0", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["overall"]["goodput"] >= 0.5
    assert "overall" in result.stdout


def test_objective_missed_exit_1(tmp_path: Path) -> None:
    """Every user's first stream is reset: a 0 % interruption objective fails with exit 1."""
    out, page = tmp_path / "bad.json", tmp_path / "bad.html"
    result = _run(*QUICK, "--mix", "midstream-reset=1", "--max-interruption-rate", "0",
                  "--json", str(out), "--html", str(page))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "objective missed: interruption rate" in result.stdout
    doc = json.loads(out.read_text())
    assert doc["passed"] is False and doc["objectives"]["missed"]
    assert page.read_text().count("<svg") == 4


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--users", "5", "--spawn-rate", "5", "--mix", "nowhere=1"], "unknown profile"),
        (["--users", "5", "--spawn-rate", "5", "--mix", "clean=abc"], "is not a number"),
        (["--users", "5", "--spawn-rate", "5", "--run-time", "soon"], "is not a duration"),
        (["--users", "5", "--spawn-rate", "5", "--master", "--worker"], "not both"),
        (["--spawn-rate", "5"], "--users and --spawn-rate are required"),
        (["--users", "5", "--spawn-rate", "5", "--prompt-file", "/nonexistent/p"], "cannot read"),
        (["--users", "5", "--spawn-rate", "5", "--upstream", "ftp://x"], "not an http"),
    ],
)
def test_bad_input_exit_2(args: list[str], words: str) -> None:
    """Bad input: one line naming the problem, exit 2, no traceback."""
    result = _run(*args, timeout=30)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


def test_help_does_not_import_locust() -> None:
    """`chaosstream --help` and `load --help` stay light: Locust is not imported."""
    code = (
        "import sys; from click.testing import CliRunner; from chaosstream.cli import cli; "
        "r = CliRunner().invoke(cli, ['load', '--help']); "
        "assert r.exit_code == 0 and '--mix' in r.output, r.output; "
        "assert 'locust' not in sys.modules and 'gevent' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.fixture
async def https_mock(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The embedded mock app over TLS on 127.0.0.1, its certificate from a trustme CA."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    app = create_app(MockSettings(ttft_ms=50, tokens_per_s=200, tokens=20))
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}", bundle
    await runner.cleanup()


async def _run_async(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """The command as a child while this loop keeps serving the in-process HTTPS mock."""
    proc = await asyncio.create_subprocess_exec(
        *CMD, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    talk = asyncio.ensure_future(proc.communicate())
    try:
        out, err = await asyncio.wait_for(asyncio.shield(talk), timeout)
    except asyncio.TimeoutError:
        # Say where it hung: what it printed until now (killing it closes its pipes).
        proc.kill()
        out, err = await talk
        raise AssertionError(
            f"`chaosstream load {' '.join(args)}` still ran after {timeout} s; "
            f"stdout: {out.decode()[-1500:]!r} stderr: {err.decode()[-3000:]!r}"
        ) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_https_upstream_with_ca_file(https_mock: tuple[str, Path], tmp_path: Path) -> None:
    """Under Locust's gevent patching, users stream over TLS verified by --ca-file:
    every stream completes with the mock's 20 tokens and a sane TTFT."""
    url, bundle = https_mock
    out = tmp_path / "tls.json"
    code, _, err = await _run_async(
        "--upstream", url, "--ca-file", str(bundle), "--users", "6", "--spawn-rate", "20",
        "--run-time", "3s", "--mix", "clean=0.5,mobile-3g=0.5", "--json", str(out),
    )  # fmt: skip
    assert code == 0, err
    overall = json.loads(out.read_text())["overall"]
    assert overall["streams"] >= 6 and overall["completed"] == overall["streams"]
    assert overall["errors"] == {} and overall["interruption_rate"] == 0.0
    assert 50 <= overall["ttft_ms"]["p50"] <= 1500
    assert overall["tokens"] == 20 * overall["completed"]


async def test_https_upstream_is_verified_by_default(https_mock: tuple[str, Path]) -> None:
    """Without --ca-file the mock's certificate is refused: no stream, connect errors;
    --insecure reaches it."""
    url, _ = https_mock
    base = ["--upstream", url, "--users", "2", "--spawn-rate", "20", "--run-time", "1s",
            "--retry", "none", "--min-goodput", "0.5"]  # fmt: skip
    code, out, err = await _run_async(*base)
    assert code == 1, err
    assert "connect" in out and "objective missed" in out
    code, out, err = await _run_async(*base, "--insecure")
    assert code == 0, err


def test_web_ui_serves_page_and_stats_then_stops_on_sigint(tmp_path: Path) -> None:
    """--web --web-port 0: Locust's page and its stats JSON answer on loopback while the
    run lasts; SIGINT ends it early with exit 130 and a report marked interrupted."""
    out = tmp_path / "web.json"
    proc = subprocess.Popen(
        [*CMD, "--users", "3", "--spawn-rate", "20", "--run-time", "60s", "--web",
         "--web-port", "0", "--mix", "clean=1", "--mock-ttft-ms", "20", "--mock-tokens", "10",
         "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:  # the URL line comes before any progress line
            found = re.search(r"Locust web UI: (http://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None, proc.stderr.read()
        with urllib.request.urlopen(url + "/", timeout=10) as resp:
            assert resp.status == 200 and "locust" in resp.read().decode().lower()
        deadline, rows = time.monotonic() + 20, []
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url + "/stats/requests", timeout=10) as resp:
                stats = json.loads(resp.read())
            rows = [r for r in stats["stats"] if r["name"] == "clean" and r["num_requests"]]
            if rows:
                break
            time.sleep(0.2)
        assert rows and rows[0]["method"] == "STREAM" and stats["state"] in ("spawning", "running")
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    doc = json.loads(out.read_text())
    assert doc["interrupted"] is True and doc["overall"]["streams"] >= 1
    assert doc["run"]["duration_s"] < 30 and "overall" in stdout
