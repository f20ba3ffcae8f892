"""`chaosstream mock` and `chaosstream proxy` as real processes: signals, pipes, exit codes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import aiohttp
import pytest
from aiohttp import web

CLI = [sys.executable, "-m", "chaosstream"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


class Served:
    """A running `chaosstream` server subprocess; its stderr goes to a file (never a full pipe)."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.url = ""

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_url(self, seconds: float = 30.0) -> str:
        """Block until the process prints `listening on URL`; fail with its stderr if it dies."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            match = re.search(r"listening on (http://\S+)", self.stderr())
            if match:
                self.url = match.group(1)
                return self.url
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.stderr()}"
            time.sleep(0.05)
        raise AssertionError(f"no 'listening on' within {seconds} s: {self.stderr()}")


@contextmanager
def served(args: list[str], log: Path) -> Iterator[Served]:
    """Start `chaosstream ARGS` with stderr to ``log``; SIGINT (then kill) at the end."""
    with log.open("wb") as err:
        proc = subprocess.Popen([*CLI, *args], stderr=err, stdout=subprocess.DEVNULL, env=ENV)
    server = Served(proc, log)
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def write_profile(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _read_all(stream: IO[bytes]) -> str:
    return stream.read().decode(errors="replace")


RESET_AFTER_3 = (
    "version: 1\nname: reset-after-3\nfaults:\n"
    "  - type: disconnect\n    after_events: 3\n    mode: reset\n"
)


async def hammer(url: str, n: int, concurrency: int) -> dict[str, int]:
    """``n`` streaming chat requests through ``url``, ``concurrency`` at a time, at full speed."""
    seen: dict[str, int] = {}
    todo = iter(range(n))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "pipe"}]}
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for _ in todo:
                try:
                    async with session.post(url + "/v1/chat/completions", json=body) as r:
                        await r.read()
                        key = f"status {r.status}"
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    key = type(e).__name__
                seen[key] = seen.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seen


@pytest.mark.timeout(180)
def test_reset_cut_streams_at_full_speed_kill_neither_proxy_nor_mock(tmp_path: Path) -> None:
    """300 streams reset after 3 events through the proxy to the mock (both CLI processes): both
    survive the writes to sockets their peers closed (no SIGPIPE death, exit 141)."""
    mock_args = ["mock", "--port", "0", "--ttft-ms", "0", "--tokens-per-s", "0", "--tokens", "200"]
    with served(mock_args, tmp_path / "mock.log") as mock:
        upstream = mock.wait_url()
        profile = write_profile(tmp_path / "reset.yaml", RESET_AFTER_3)
        proxy_args = ["proxy", "--upstream", upstream, "--profile", profile]
        proxy_args += ["--listen", "127.0.0.1:0", "--log-format", "json"]
        with served(proxy_args, tmp_path / "proxy.log") as proxy:
            url = proxy.wait_url()
            seen = asyncio.run(hammer(url, 300, 30))
            time.sleep(0.5)  # a death by signal after the last write would show now
            assert mock.proc.poll() is None, (mock.proc.returncode, mock.stderr()[-2000:])
            assert proxy.proc.poll() is None, (proxy.proc.returncode, proxy.stderr()[-2000:])
            # The cut happened on (nearly) every stream: the client saw a broken body.
            assert sum(seen.values()) == 300, seen
            assert seen.get("ClientPayloadError", 0) >= 250, seen
            proxy.proc.send_signal(signal.SIGINT)
            assert proxy.proc.wait(timeout=15) == 0, proxy.stderr()[-2000:]
        mock.proc.send_signal(signal.SIGINT)
        assert mock.proc.wait(timeout=15) == 0, mock.stderr()[-2000:]


def test_listing_into_a_closed_pipe_is_quiet() -> None:
    """`chaosstream profiles list | head -1`: one line out, nothing on stderr (a guard)."""
    listing = subprocess.Popen(
        [*CLI, "profiles", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    assert listing.stdout is not None and listing.stderr is not None
    head = subprocess.run(["head", "-1"], stdin=listing.stdout, capture_output=True, timeout=30)
    listing.stdout.close()  # only head holds the read end now: its exit breaks the pipe
    err = _read_all(listing.stderr)
    listing.stderr.close()
    listing.wait(timeout=30)
    assert len(head.stdout.decode().splitlines()) == 1, head.stdout
    assert err == "", err
    assert listing.returncode in (0, 1), listing.returncode


@pytest.mark.parametrize("args", [["profiles", "list"], ["profiles", "schema"], ["--help"]])
def test_printing_into_a_closed_pipe_exits_by_itself_without_a_traceback(args: list[str]) -> None:
    """Output into a pipe whose reader is gone: exit 1 quietly, not death by SIGPIPE (-13)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        done = subprocess.run(
            [*CLI, *args], stdout=write_end, stderr=subprocess.PIPE, env=ENV, timeout=30
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.returncode
    assert done.stderr == b"", done.stderr.decode(errors="replace")[-2000:]


@contextmanager
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the block."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def bad_input_cases(tmp: Path, busy: int) -> dict[str, tuple[list[str], str]]:
    """Name -> (argv, regex the one `Error:` line must match)."""
    not_a_cert = tmp / "not-a-cert.pem"
    missing = str(tmp / "no-such-folder" / "x.jsonl")
    scen = str(tmp / "s.yaml")
    long_url = "http://" + "x" * 5000 + ":1"
    return {
        "proxy-upstream-no-host": (
            ["proxy", "--upstream", "http://", *LISTEN_ANY],
            r"--upstream.*'http://'",
        ),
        "proxy-upstream-bad-ipv6": (
            ["proxy", "--upstream", "http://[::1", *LISTEN_ANY],
            r"--upstream.*\[::1",
        ),
        "proxy-upstream-bad-port": (
            ["proxy", "--upstream", "http://127.0.0.1:99999", *LISTEN_ANY],
            r"--upstream.*99999",
        ),
        "proxy-upstream-long": (
            ["proxy", "--upstream", long_url, *LISTEN_ANY],
            r"--upstream.*x{20}.*…",
        ),
        "proxy-ca-file-not-a-cert": (
            ["proxy", "--ca-file", str(not_a_cert), *LISTEN_ANY],
            r"--ca-file.*not-a-cert\.pem.*certificate",
        ),
        "proxy-record-missing-folder": (
            ["proxy", "--record", missing, *LISTEN_ANY],
            r"--record.*no-such-folder.*(does not exist|no such)",
        ),
        "proxy-listen-unassignable": (
            ["proxy", "--listen", "192.0.2.1:0"],
            r"cannot listen on 192\.0\.2\.1:0",
        ),
        "proxy-listen-busy": (
            ["proxy", "--listen", f"127.0.0.1:{busy}"],
            rf"cannot listen on 127\.0\.0\.1:{busy}",
        ),
        "mock-port-busy": (["mock", "--port", str(busy)], rf"cannot listen on 127\.0\.0\.1:{busy}"),
        "check-upstream-no-host": (
            ["check", "--upstream", "http://", "--", "true"],
            r"--upstream.*'http://'",
        ),
        "check-upstream-bad-ipv6": (
            ["check", "--upstream", "http://[::1", "--", "true"],
            r"--upstream.*\[::1",
        ),
        "check-record-missing-folder": (
            ["check", "--record", missing, "--", "true"],
            r"--record.*no-such-folder",
        ),
        "check-unknown-option": (
            ["check", "--htm", "r.html", "--", "true"],
            r"No such option.*--htm",
        ),
        "run-upstream-bad-port": (
            ["run", scen, "--upstream", "http://127.0.0.1:99999", "--", "true"],
            r"--upstream.*99999",
        ),
        "run-unknown-option": (["run", scen, "--jsn", "r.json", "--", "true"], r"--jsn"),
    }


LISTEN_ANY = ["--listen", "127.0.0.1:0"]  # should validation let one through: never port 8080
CASE_NAMES = sorted(bad_input_cases(Path("/nonexistent"), 1))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_on_the_command_line_is_one_error_line_and_exit_2(
    case: str, tmp_path: Path
) -> None:
    """Bad URLs, files, folders, addresses and options: exit 2, one `Error:` line, no traceback."""
    (tmp_path / "not-a-cert.pem").write_text("hello, I am not a certificate\n")
    with busy_port() as busy:
        args, expected = bad_input_cases(tmp_path, busy)[case]
        done = subprocess.run(
            [*CLI, *args], capture_output=True, text=True, env=ENV, timeout=30, cwd=tmp_path
        )
    err = done.stderr
    assert done.returncode == 2, (done.returncode, err[-3000:])
    assert "Traceback" not in err and "uvloop" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err[-3000:]
    assert re.search(expected, errors[0]), errors[0]
    assert len(err) < 800, f"{len(err)} chars: {err[:300]}"


ARMED_NEVER_FIRES = (
    "version: 1\nname: framed\nfaults:\n"
    "  - type: disconnect\n    after_events: 100000\n    mode: reset\n"
)
BIG_EVENT = b"data: " + b"x" * 65536 + b"\n\n" + b"data: [DONE]\n\n"


async def _upstream() -> tuple[web.AppRunner, str]:
    """A loopback upstream: /big streams one 64 KiB SSE event in 4 KiB pieces, /silent never
    answers."""

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for start in range(0, len(BIG_EVENT), 4096):  # in pieces: the event stays unfinished
            await resp.write(BIG_EVENT[start : start + 4096])
            await asyncio.sleep(0.005)
        await resp.write_eof()
        return resp

    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_post("/big", big)
    app.router.add_post("/silent", silent)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _text(log: Path) -> str:
    return log.read_text(errors="replace")  # a small local file: no need to leave the loop


async def _wait_url(log: Path, proc: asyncio.subprocess.Process) -> str:
    for _ in range(600):
        match = re.search(r"listening on (http://\S+)", _text(log))
        if match:
            return match.group(1)
        assert proc.returncode is None, _text(log)
        await asyncio.sleep(0.05)
    raise AssertionError(_text(log))


async def _silent_client_lasts(url: str) -> float:
    """Seconds until the proxy closes a connection that never sends a request head."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(reader.read(1024), 20) == b""
    finally:
        writer.close()
    return time.monotonic() - started


async def _limits_scenario(tmp_path: Path) -> None:
    runner, upstream = await _upstream()
    log = tmp_path / "proxy.log"
    profile = write_profile(tmp_path / "framed.yaml", ARMED_NEVER_FIRES)
    args = ["proxy", "--upstream", upstream, "--profile", profile, "--listen", "127.0.0.1:0"]
    args += ["--log-format", "json", "--max-event-bytes", "4096"]
    args += ["--idle-timeout-s", "0.5", "--upstream-timeout-s", "0.5"]
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(*CLI, *args, stderr=err, env=ENV)
    try:
        url = await _wait_url(log, proc)
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            async with session.post(url + "/silent", json={}) as r:
                assert r.status == 504, await r.text()
            waited = time.monotonic() - started
            assert 0.4 < waited < 10, waited
            async with session.post(url + "/big", json={"stream": True}) as r:
                body = await r.read()
        # Past the cap the body passes on unframed (docs/limits.md), whole and in order.
        assert body == BIG_EVENT
        assert (
            '"event_too_large"' in log.read_text() and '"max_event_bytes": 4096' in log.read_text()
        )
        lasted = await _silent_client_lasts(url)
        assert 0.3 < lasted < 10, lasted
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 15)
        await runner.cleanup()
    assert proc.returncode == 0, _text(log)[-2000:]


@pytest.mark.timeout(90)
def test_proxy_flags_set_event_cap_upstream_head_timeout_and_idle_timeout(tmp_path: Path) -> None:
    """`--max-event-bytes`, `--upstream-timeout-s` and `--idle-timeout-s` reach the proxy: a 64 KiB
    event passes unframed past a 4 KiB cap, a silent upstream gets a 504 after 0.5 s, and a silent
    client is closed after 0.5 s (defaults: 1 MiB, 300 s, 60 s)."""
    asyncio.run(_limits_scenario(tmp_path))


#: What `--loop auto` runs on: uvloop is a dependency everywhere but Windows.
AUTO_LOOP = "asyncio" if sys.platform == "win32" else "uvloop"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("choice", "runs_on"), [("auto", AUTO_LOOP), ("asyncio", "asyncio")])
def test_proxy_runs_on_the_loop_it_names(tmp_path: Path, choice: str, runs_on: str) -> None:
    """`chaosstream proxy --loop auto` runs on uvloop (a dependency off Windows) and
    `--loop asyncio` on asyncio's own; the banner says which, and both relay 40 streams whole
    to the embedded mock."""
    args = ["proxy", "--loop", choice, "--listen", "127.0.0.1:0", "--log-format", "json"]
    with served(args, tmp_path / "proxy.log") as proxy:
        url = proxy.wait_url()
        assert re.search(rf"loop: {runs_on}\b", proxy.stderr()), proxy.stderr()
        assert asyncio.run(hammer(url, 40, 8)) == {"status 200": 40}
        assert proxy.proc.poll() is None, proxy.stderr()[-2000:]


def test_proxy_asked_for_a_missing_uvloop_exits_2_naming_the_option() -> None:
    """Without uvloop (as on Windows) `--loop uvloop` is bad input: exit 2, no traceback."""
    hide = (
        "import sys, runpy; sys.modules['uvloop'] = None; "
        "runpy.run_module('chaosstream', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide, "proxy", "--loop", "uvloop", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--loop" in done.stderr and "uvloop is not installed" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
