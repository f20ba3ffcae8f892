"""``chaosstream proxy --workers N``: scope routing, merged metrics, health, SIGTERM, on real
processes and sockets."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import click
import pytest
import yaml
from click.testing import CliRunner

from chaosstream.cli.workers import (
    control_owner,
    merge_metrics,
    owner,
    route_head,
    worker_args,
)
from chaosstream.mock import MockServer
from tests.conftest import ProxyFactory, make_profile

SEQUENCED = [
    {"type": "http_error", "status": 503, "every": 3},
    {"type": "disconnect", "after_events": 2, "mode": "close", "probability": 0.5},
    {"type": "stream_error", "after_events": 1, "kind": "overloaded", "probability": 0.3},
]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
KEYS = ("exchange", "type", "index", "action", "trigger")


def _names_on_each_worker(workers: int) -> list[str]:
    """One scope name per worker, the first names (s0, s1, ...) that land there."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < workers:
        found.setdefault(owner(f"s{i}", workers), f"s{i}")
        i += 1
    return [found[w] for w in range(workers)]


def test_owner_is_stable_and_spreads_scopes() -> None:
    """A scope's worker is CRC-32 mod N (the same in every process); unscoped is worker 0."""
    assert owner(None, 4) == 0 and owner("anything", 1) == 0
    assert owner("test-42", 3) == owner("test-42", 3)
    # CRC-32 of "test-42", computed by hand-independent zlib in a fresh interpreter.
    out = subprocess.run(
        [sys.executable, "-c", "import zlib; print(zlib.crc32(b'test-42') % 3)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert owner("test-42", 3) == int(out.stdout)
    spread = [owner(f"t{i}", 2) for i in range(200)]
    assert 60 < spread.count(0) < 140


def test_route_head_reads_the_prefix_the_header_and_health() -> None:
    """The front routes by the path prefix or the header; /~health is its own; bad names to 0."""
    a, b = _names_on_each_worker(2)
    assert route_head(f"POST /~/{b}/v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 2)
    assert route_head(f"GET /~/{a}/v1/models HTTP/1.1\r\n\r\n".encode(), 2) == 0
    head = f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-CHAOSSTREAM-SCOPE:  {b}\r\n\r\n"
    assert route_head(head.encode(), 2) == 1
    assert route_head(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 2) == 0
    assert route_head(b"GET /~health HTTP/1.1\r\n\r\n", 2) is None
    assert route_head(b"GET /~/bad%20name/v1 HTTP/1.1\r\n\r\n", 2) == 0
    assert route_head(b"garbage", 2) == 0


def test_control_owner_sends_scope_routes_to_their_worker() -> None:
    """/chaos/scopes/{id}/... goes to the scope's worker; everything else to worker 0."""
    _, b = _names_on_each_worker(2)
    assert control_owner(f"/chaos/scopes/{b}/fault-log", 2) == 1
    assert control_owner(f"/chaos/scopes/{b}", 2) == 1
    assert control_owner("/chaos/profile", 2) == 0
    assert control_owner("/proxies", 2) == 0


def test_merge_metrics_adds_samples_and_recomputes_the_ratio() -> None:
    """Counters and histogram samples add up across workers; the ratio is cut/streams."""
    one = (
        "# HELP chaosstream_streams_total Streams.\n# TYPE chaosstream_streams_total counter\n"
        'chaosstream_streams_total{profile="p",path="/x"} 3.0\n'
        "# HELP chaosstream_stream_interruptions_total Cuts.\n"
        "# TYPE chaosstream_stream_interruptions_total counter\n"
        'chaosstream_stream_interruptions_total{profile="p",path="/x"} 1.0\n'
        "# HELP chaosstream_stream_interruption_ratio Ratio.\n"
        "# TYPE chaosstream_stream_interruption_ratio gauge\n"
        'chaosstream_stream_interruption_ratio{profile="p",path="/x"} 0.3333\n'
    )
    two = one.replace("} 3.0", "} 1.0").replace("} 0.3333", "} 1.0")
    merged = merge_metrics([one, two]).decode()
    assert 'chaosstream_streams_total{path="/x",profile="p"} 4.0' in merged
    assert 'chaosstream_stream_interruptions_total{path="/x",profile="p"} 2.0' in merged
    assert 'chaosstream_stream_interruption_ratio{path="/x",profile="p"} 0.5' in merged


def test_worker_args_pass_on_what_was_given_but_the_fronts_own() -> None:
    """Workers get the options given on the command line, not --workers/--listen/--control."""
    from chaosstream.cli.commands import cli

    seen: list[list[str]] = []
    proxy = cli.commands["proxy"]
    real = proxy.callback

    def capture(**_kw: Any) -> None:
        seen.append(worker_args(click.get_current_context()))

    proxy.callback = capture
    try:
        result = CliRunner().invoke(
            cli,
            [
                "proxy",
                "--workers",
                "2",
                "--listen",
                "127.0.0.1:0",
                "--seed",
                "7",
                "--insecure",
                "--control-allow-host",
                "a",
                "--control-allow-host",
                "b",
                "--profile",
                "clean",
            ],
        )
    finally:
        proxy.callback = real
    assert result.exit_code == 0, result.output
    (args,) = seen
    assert args[args.index("--seed") + 1] == "7" and "--insecure" in args
    assert args.count("--control-allow-host") == 2 and "--profile" in args
    assert "--workers" not in args and "--listen" not in args


# -- real processes -------------------------------------------------------------------


class Fleet:
    """A ``chaosstream proxy --workers N`` subprocess, its URLs read from its stderr."""

    def __init__(self, tmp: Path, args: list[str]) -> None:
        self.log = tmp / "proxy.err"
        self.err = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaosstream",
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--control",
                "127.0.0.1:0",
                "--log-format",
                "json",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.err,
        )
        self.url = self.control = ""

    async def ready(self) -> None:
        for _ in range(300):
            text = self.log.read_text()
            found = re.search(r"control:\s+(\S+)", text)
            if found:
                self.url = re.search(r"listening on (\S+)", text).group(1)  # type: ignore[union-attr]
                self.control = found.group(1)
                return
            assert self.proc.poll() is None, text
            await asyncio.sleep(0.05)
        raise AssertionError(self.log.read_text()[-2000:])

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            self.err.close()


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "sequenced.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "name": "sequenced", "faults": SEQUENCED}))
    return path


@pytest.fixture
async def fleet(tmp_path: Path, mock: MockServer, profile_file: Path) -> AsyncIterator[Fleet]:
    f = Fleet(tmp_path, ["--workers", "2", "--upstream", mock.url, "--profile", str(profile_file)])
    try:
        await f.ready()
        yield f
    finally:
        f.stop()


async def _drive(s: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    try:
        async with s.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers) as r:
            await r.read()
    except aiohttp.ClientError:
        pass  # a cut stream: the fault log says what happened


def _positions(faults: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(f[k] for k in KEYS) for f in faults]


async def test_two_scopes_through_two_workers_see_what_each_sees_alone(
    fleet: Fleet, mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """Two scopes on different workers, interleaved over new and kept-alive connections, get
    the fault logs each gets alone on one proxy; /metrics adds up both workers' exchanges."""
    names = _names_on_each_worker(2)
    n = 9
    alone: dict[str, list[tuple[Any, ...]]] = {}
    for name in names:
        proxy = await proxy_factory(mock.url, make_profile(SEQUENCED))
        async with aiohttp.ClientSession() as s:
            for _ in range(n):
                await _drive(s, f"{proxy.url}/~/{name}", {})
        alone[name] = _positions([e.as_dict() for e in proxy.scopes.get(name).fault_log])
    assert alone[names[0]] != alone[names[1]]

    order = names * n
    random.Random(3).shuffle(order)
    # One kept-alive connection for all: each request naming the other worker's scope is
    # forwarded by the worker holding the connection; plus fresh connections by prefix.
    one = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=one) as kept, aiohttp.ClientSession() as fresh:
        for i, name in enumerate(order):
            if i % 2:
                await _drive(kept, fleet.url, {"X-Chaosstream-Scope": name})
            else:
                await _drive(fresh, f"{fleet.url}/~/{name}", {})
        for name in names:
            async with fresh.get(f"{fleet.control}/chaos/scopes/{name}/fault-log") as r:
                assert _positions((await r.json())["faults"]) == alone[name], name
        async with fresh.get(f"{fleet.control}/chaos/scopes") as r:
            listed = await r.json()
        async with fresh.get(f"{fleet.control}/metrics") as r:
            metrics = await r.text()

    assert sorted(s["scope"] for s in listed["scopes"]) == sorted(names)
    assert {s["exchanges"] for s in listed["scopes"]} == {n}
    total = sum(
        float(v) for v in re.findall(r"^chaosstream_exchanges_total\{[^}]*\} (\S+)$", metrics, re.M)
    )
    assert total == 2 * n
    # A new connection: the front answers /~health itself (a kept-alive one is a worker's).
    async with aiohttp.ClientSession() as s, s.get(f"{fleet.url}/~health") as r:
        health = await r.json()
    assert health["status"] == "ok" and health["alive"] == 2
    assert all(c > 0 for c in health["connections"])  # both workers were handed connections


async def test_sigterm_stops_every_worker(tmp_path: Path, mock: MockServer) -> None:
    """SIGTERM to the front stops it and its workers: no process outlives it."""
    f = Fleet(tmp_path, ["--workers", "2", "--upstream", mock.url])
    try:
        await f.ready()
        workers = f.children()
        assert len(workers) == 2
        async with aiohttp.ClientSession() as s, s.get(f"{f.url}/~health") as r:
            assert r.status == 200
    finally:
        code = f.stop()
    assert code == 0
    for pid in workers:
        for _ in range(100):
            if _gone(pid):
                break
            await asyncio.sleep(0.05)
        assert _gone(pid), f"worker {pid} outlived the front"


def _gone(pid: int) -> bool:
    """No such process, or only its zombie entry (it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


async def test_a_single_proxy_answers_health_itself(tmp_path: Path, mock: MockServer) -> None:
    """Without --workers the proxy port answers GET /~health too (never upstream)."""
    f = Fleet(tmp_path, ["--upstream", mock.url])
    try:
        await f.ready()
        async with aiohttp.ClientSession() as s, s.get(f"{f.url}/~health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
    finally:
        assert f.stop() == 0
