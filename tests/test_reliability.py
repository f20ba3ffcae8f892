"""Reliability: clients that vanish, upstreams that die, profile swaps mid-stream, ordering.

Each test runs real sockets on 127.0.0.1, collects every loop exception-handler
call and every error aiohttp logs, and checks that each exchange was recorded
with the outcome that matches what happened. Counts scale with
``CHAOSSTREAM_RELIABILITY_SCALE`` (default 1).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

import aiohttp
import pytest

from chaosstream.faults.profile import Profile, profile_from_data
from chaosstream.integrations.control import ControlServer
from chaosstream.mock import MockSettings, start_mock
from chaosstream.proxy.record import Exchange
from chaosstream.proxy.server import ChaosProxy
from tests.test_soak import _describe, collect_errors, settle

SCALE = float(os.environ.get("CHAOSSTREAM_RELIABILITY_SCALE", "1"))
CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}


def profile(*faults: dict[str, Any]) -> Profile:
    """An inline profile with these faults."""
    return profile_from_data({"version": 1, "name": "t", "faults": list(faults)}, "<test>")


class _Closable(Protocol):
    def close(self) -> Any: ...


C = TypeVar("C", bound=_Closable)


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[C], C]]:
    """Register servers to close after the test, even when an assertion fails first."""
    opened: list[_Closable] = []

    def add(item: C) -> C:
        opened.append(item)
        return item

    yield add
    for item in reversed(opened):
        closed = item.close()  # a coroutine for our servers, None for asyncio.Server
        if inspect.isawaitable(closed):
            await closed
        if isinstance(item, asyncio.Server):
            await item.wait_closed()


def recording(proxy: ChaosProxy) -> list[Exchange]:
    """Every exchange the proxy finishes, in order (the recorder itself keeps only 1000)."""
    done: list[Exchange] = []
    proxy.recorder.listeners.append(done.append)
    return done


async def test_clients_that_vanish_are_recorded_as_gone_and_close_upstream(
    closing: Callable[[Any], Any],
) -> None:
    """Clients that leave at random points (before headers, mid-stream) are each recorded
    as client_gone, the upstream stream is closed each time, and no error escapes."""
    n = int(60 * SCALE)
    rng = random.Random(5)
    mock = closing(await start_mock(settings=MockSettings(ttft_ms=30, tokens_per_s=200, tokens=60)))
    proxy = closing(ChaosProxy(mock.url, profile(), seed=1))
    done = recording(proxy)
    await proxy.start()
    host, port = proxy.url.removeprefix("http://").split(":")

    async def vanish(i: int) -> None:
        # A raw socket, so leaving is exactly one abort() and nothing lingers client-side.
        marker = f"client {i}".encode()
        body = json.dumps({**CHAT, "messages": [{"role": "user", "content": marker.decode()}]})
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body.encode())
        )
        if i % 3 == 0:  # gone while waiting for the first byte
            # Leave once the proxy holds the request (before that there is no
            # exchange to record), well before the mock's 30 ms first byte.
            assert await settle(
                lambda: any(marker in ex.request_body for ex in proxy.recorder.open.values()),
                step_s=0.002,
            )
        else:  # gone mid-stream, after a random number of lines
            for _ in range(rng.randint(1, 20)):
                await reader.readline()
        writer.transport.abort()

    with collect_errors() as (calls, logged):
        await asyncio.gather(*(vanish(i) for i in range(n)))
        assert await settle(lambda: len(done) == n), len(done)
        assert await settle(lambda: mock.open_streams == 0), mock.open_streams
    assert Counter(ex.outcome for ex in done) == {"client_gone": n}
    # The mock logs its own "cannot write" when the proxy hangs up on it; only the
    # proxy is under test here.
    logged = [r for r in logged if "chaosstream/mock/" not in _describe(r)]
    # Every stream the mock had begun was abandoned, not finished; a client that left
    # before the first byte may have gone before the mock's stream began at all.
    mid_stream = sum(1 for i in range(n) if i % 3)
    assert mid_stream <= mock.closed_early <= n
    assert mock.stats.completed_streams == 0
    assert calls == []
    assert [_describe(r) for r in logged] == []


def dying_upstream(plan: Callable[[int], tuple[str, int]]) -> Any:
    """A raw HTTP upstream; for request ``i`` it sends ``k`` SSE events and then dies as
    ``plan(i)`` says: ``rst`` (abort), ``fin`` (close mid-body) or ``no_headers``."""
    count = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        how, k = plan(count)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                0,
            )  # fmt: skip
            await reader.readexactly(length)
            if how == "no_headers":
                writer.close()
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for i in range(k):
                event = b"data: %d\n\n" % i
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.002)
            if how == "rst":
                writer.transport.abort()
            else:
                writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()

    return serve


async def test_upstreams_that_die_give_upstream_error_and_no_escape(
    closing: Callable[[Any], Any],
) -> None:
    """An upstream that dies before headers, or mid-body with RST or FIN, gives the client
    a 502 or a broken body, and each exchange is recorded as upstream_error."""
    n = int(60 * SCALE)
    rng = random.Random(9)
    plans = [(rng.choice(["rst", "fin", "no_headers"]), rng.randint(0, 8)) for _ in range(n)]
    server = closing(
        await asyncio.start_server(dying_upstream(lambda i: plans[i - 1]), "127.0.0.1", 0)
    )
    port = server.sockets[0].getsockname()[1]
    proxy = closing(ChaosProxy(f"http://127.0.0.1:{port}", profile(), seed=1))
    done = recording(proxy)
    await proxy.start()
    seen: Counter[str] = Counter()

    with collect_errors() as (calls, logged):
        # One at a time, so request i meets plan i.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(n):
                try:
                    async with s.post(proxy.url + "/v1/chat/completions", json=CHAT) as r:
                        await r.read()
                        seen[f"status {r.status}"] += 1
                except aiohttp.ClientPayloadError:
                    seen["broken body"] += 1
        assert await settle(lambda: len(done) == n), len(done)
    assert [ex.outcome for ex in done] == ["upstream_error"] * n, seen
    refused = sum(1 for how, _ in plans if how == "no_headers")
    assert seen["status 502"] == refused and seen["broken body"] == n - refused, seen
    assert calls == []
    assert [_describe(r) for r in logged] == []
    await proxy.close()
    # An upstream that is gone altogether: connection refused, a 502 naming the cause.
    server.close()
    await server.wait_closed()
    proxy = closing(ChaosProxy(f"http://127.0.0.1:{port}", profile(), seed=1))
    await proxy.start()
    async with aiohttp.ClientSession() as s, s.post(proxy.url + "/v1/x", json=CHAT) as r:
        assert r.status == 502
        assert "cannot reach upstream" in (await r.json())["error"]["message"]


async def test_profile_swap_through_control_api_during_live_streams(
    closing: Callable[[Any], Any],
) -> None:
    """Swapping the profile over the control API while streams flow: live streams keep the
    faults they were armed with, new ones get the new profile, nothing escapes."""
    n = int(40 * SCALE)
    mock = closing(await start_mock(settings=MockSettings(ttft_ms=5, tokens_per_s=300, tokens=30)))
    proxy = closing(ChaosProxy(mock.url, profile(), seed=3))
    done = recording(proxy)
    await proxy.start()
    control = closing(ControlServer(proxy))
    await control.start()
    cut = {"version": 1, "name": "cut", "faults": [{"type": "disconnect", "after_events": 3}]}
    clean = {"version": 1, "name": "clean", "faults": []}
    got: dict[int, str] = {}

    async def stream(session: aiohttp.ClientSession, i: int) -> None:
        try:
            async with session.post(proxy.url + "/v1/chat/completions", json=CHAT) as r:
                await r.read()
                got[i] = "complete"
        except aiohttp.ClientError:
            got[i] = "cut"

    with collect_errors() as (calls, logged):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            tasks = []
            for i in range(n):
                if i % 10 == 0:
                    body = json.dumps(cut if (i // 10) % 2 else clean)
                    async with s.put(
                        control.url + "/chaos/profile",
                        data=body,
                        headers={"Content-Type": "application/json"},
                    ) as r:
                        assert r.status == 200, await r.text()
                tasks.append(asyncio.ensure_future(stream(s, i)))
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)
        assert await settle(lambda: len(done) == n), len(done)
    by_id = sorted(done, key=lambda ex: ex.id)
    assert len(by_id) == n
    # Streams started under `cut` (i // 10 odd) were cut; those under `clean` completed.
    for i in range(n):
        expected = "cut" if (i // 10) % 2 else "complete"
        assert got[i] == expected, (i, got[i])
    assert Counter(ex.outcome for ex in done) == {
        "fault": sum(1 for i in range(n) if (i // 10) % 2),
        "complete": sum(1 for i in range(n) if not (i // 10) % 2),
    }
    assert calls == []
    assert [_describe(r) for r in logged] == []


@pytest.mark.slow
async def test_65535_ordered_writes_while_faults_come_and_go(
    closing: Callable[[Any], Any],
) -> None:
    """Toxiproxy's invariant: 65,535 writes through the proxy while faults switch on and
    off (windows) and the profile is swapped arrive complete, in order, byte-exact."""
    writes = int(65535 * min(SCALE, 1.0)) or 1
    sent: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(writes):
            event = b"data: %d\n\n" % i
            sent.append(event)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            if i % 256 == 255:
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = closing(await asyncio.start_server(upstream, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    flicker = {"every_s": 0.05, "for_s": 0.02}
    profiles = [
        profile(
            {"type": "latency", "per_event_ms": 0.05, "jitter_ms": 0.05, "window": flicker},
            {"type": "throttle", "events_per_s": 50_000, "window": flicker},
            {"type": "corrupt", "action": "split", "rate": 0.001, "split_gap_ms": 0},
        ),
        profile({"type": "throttle", "bytes_per_s": 5_000_000, "window": flicker}),
        profile(),
    ]
    proxy = closing(ChaosProxy(f"http://127.0.0.1:{port}", profiles[0], seed=11))
    await proxy.start()
    swaps = 0

    async def swapper() -> None:
        nonlocal swaps
        while True:
            await asyncio.sleep(0.01)
            swaps += 1
            proxy.set_profile(profiles[swaps % len(profiles)], seed=swaps)

    with collect_errors() as (calls, logged):
        task = asyncio.ensure_future(swapper())
        async with aiohttp.ClientSession() as s, s.get(proxy.url + "/sse") as r:
            received = await asyncio.wait_for(r.read(), 60)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert received == b"".join(sent)
    assert received.count(b"\n\n") == writes
    assert swaps > 0
    fired = {f.type for f in proxy.fault_log}
    assert {"latency", "throttle"} <= fired, fired
    assert calls == []
    assert [_describe(r) for r in logged] == []
    await proxy.close()
    server.close()
    await server.wait_closed()
