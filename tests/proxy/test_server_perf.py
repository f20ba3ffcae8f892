"""The proxy's settings for many streams at once (issue 17): listen backlog, upstream pool."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import aiohttp
from aiohttp import web

from chaosstream.mock import MockServer
from chaosstream.proxy.server import LISTEN_BACKLOG, ChaosProxy
from tests.conftest import make_profile


def _handshakes(url: str, count: int, timeout_s: float) -> int:
    """Open ``count`` connections while nobody accepts them; how many the kernel completed."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    socks: list[socket.socket] = []
    done = 0
    try:
        for _ in range(count):
            s = socket.socket()
            s.settimeout(timeout_s)
            socks.append(s)
            try:
                # The event loop is blocked (this call is synchronous): only the
                # kernel's accept queue can complete the handshake.
                s.connect((host, int(port)))
                done += 1
            except OSError:
                break
    finally:
        for s in socks:
            s.close()
    return done


async def test_listen_backlog_queues_a_thousand_connections_before_accept(
    mock: MockServer,
) -> None:
    """A thousand connections opened at once all complete while the loop is busy."""
    assert LISTEN_BACKLOG >= 4096
    profile = make_profile()
    async with ChaosProxy(mock.url, profile) as proxy:
        started = time.monotonic()
        assert _handshakes(proxy.url, 1000, 2.0) == 1000
        assert time.monotonic() - started < 10


async def test_listen_backlog_is_settable(mock: MockServer) -> None:
    """ChaosProxy(backlog=N): the kernel queues about N connections, then drops SYNs."""
    profile = make_profile()
    async with ChaosProxy(mock.url, profile, backlog=16) as proxy:
        # Linux queues backlog + 1; the next handshake waits for a SYN retransmit.
        assert 10 <= _handshakes(proxy.url, 64, 0.3) <= 20


def test_tune_gc_freezes_start_up_and_raises_the_young_threshold() -> None:
    """tune_gc() (what `chaosstream proxy` calls once serving) freezes and sets gen0 only."""
    code = (
        "import gc; default = gc.get_threshold();"
        "from chaosstream.proxy.server import GC_GEN0_THRESHOLD, tune_gc; tune_gc();"
        "t = gc.get_threshold();"
        "assert t == (GC_GEN0_THRESHOLD, *default[1:]), t;"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count();"
        "print('ok')"
    )
    # A child process: the setting is process-wide and must not leak into this test run.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


async def test_sequential_streams_reuse_one_warm_upstream_connection() -> None:
    """Streams one after another go over one kept-alive upstream connection, not a connect each."""
    peers: list[tuple[str, int]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername")[:2])  # type: ignore[union-attr]
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b'data: {"n": %d}\n\n' % i)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with (
            ChaosProxy(f"http://{host}:{port}", make_profile()) as proxy,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client,
        ):
            for _ in range(5):
                async with client.post(
                    proxy.url + "/v1/chat/completions", json={"stream": True, "messages": []}
                ) as r:
                    assert (await r.read()).endswith(b"data: [DONE]\n\n")
    finally:
        await runner.cleanup()
    assert len(peers) == 5
    assert len(set(peers)) == 1, peers
