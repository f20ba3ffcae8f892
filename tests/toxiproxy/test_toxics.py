"""Each Toxiproxy toxic measured with real sockets on loopback, plus the ordering invariant."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from chaosstream.toxiproxy import RunningServer, start_toxiproxy_server
from tests.conftest import tcp_echo

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _blob(size: int) -> Handler:
    """An upstream that sends ``size`` bytes of a pattern, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(bytes(i % 251 for i in range(size)))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handle


class Upstreams:
    """Starts small TCP servers on loopback and closes them at the end."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []

    async def start(self, handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        self.servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    ups = Upstreams()
    yield ups
    for server in ups.servers:
        server.close()
        await server.wait_closed()


class Tox:
    """A running chaosstream Toxiproxy server and an HTTP session to drive it."""

    def __init__(self, running: RunningServer, http: aiohttp.ClientSession) -> None:
        self.running = running
        self.http = http

    async def proxy(self, upstream: str, name: str = "p") -> int:
        async with self.http.post("/proxies", json={"name": name, "upstream": upstream}) as r:
            assert r.status == 201, await r.text()
            return int((await r.json())["listen"].rpartition(":")[2])

    async def toxic(self, body: dict[str, object], proxy: str = "p") -> None:
        async with self.http.post(f"/proxies/{proxy}/toxics", json=body) as r:
            assert r.status == 200, await r.text()

    async def update(self, name: str, body: dict[str, object], proxy: str = "p") -> None:
        async with self.http.patch(f"/proxies/{proxy}/toxics/{name}", json=body) as r:
            assert r.status == 200, await r.text()

    async def remove(self, name: str, proxy: str = "p") -> None:
        async with self.http.delete(f"/proxies/{proxy}/toxics/{name}") as r:
            assert r.status == 204, await r.text()


async def _tox(seed: int | None) -> AsyncIterator[Tox]:
    running = await start_toxiproxy_server(seed=seed)
    async with aiohttp.ClientSession(base_url=running.url) as http:
        yield Tox(running, http)
    await running.close()


@pytest.fixture
async def tox() -> AsyncIterator[Tox]:
    async for t in _tox(seed=3):
        yield t


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _read_all(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """Everything up to EOF, and how many reads it took."""
    data, reads = b"", 0
    while chunk := await asyncio.wait_for(reader.read(65536), 10):
        data += chunk
        reads += 1
    return data, reads


async def test_latency_adds_delay_per_chunk_from_arrival(tox: Tox, upstreams: Upstreams) -> None:
    """latency delays data by ~latency ms, on a live link, without stacking per chunk."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    reader, writer = await _open(port)
    writer.write(b"a")
    await reader.readexactly(1)
    await tox.toxic({"type": "latency", "attributes": {"latency": 200}})
    start = time.monotonic()
    for _ in range(10):  # 10 writes 20 ms apart: each waits 200 ms from its own arrival
        writer.write(b"b")
        await asyncio.sleep(0.02)
    got = await asyncio.wait_for(reader.readexactly(10), 5)
    elapsed = time.monotonic() - start
    assert got == b"b" * 10
    assert 0.38 <= elapsed <= 1.2, elapsed  # ~0.2 s of writing + 0.2 s latency, not 2 s
    await _close(writer)


async def test_bandwidth_limits_throughput(tox: Tox, upstreams: Upstreams) -> None:
    """bandwidth rate=100 KB/s moves 200 KB in about 2 s, every byte intact."""
    port = await tox.proxy(await upstreams.start(_blob(200_000)))
    await tox.toxic({"type": "bandwidth", "attributes": {"rate": 100}})
    reader, writer = await _open(port)
    start = time.monotonic()
    data, _ = await _read_all(reader)
    elapsed = time.monotonic() - start
    assert data == bytes(i % 251 for i in range(200_000))
    assert 1.5 <= elapsed <= 3.5, elapsed
    await _close(writer)


async def test_slow_close_delays_eof_not_data(tox: Tox, upstreams: Upstreams) -> None:
    """slow_close passes data at once but holds the EOF for delay ms."""
    port = await tox.proxy(await upstreams.start(_blob(10)))
    await tox.toxic({"type": "slow_close", "attributes": {"delay": 400}})
    reader, writer = await _open(port)
    start = time.monotonic()
    assert len(await asyncio.wait_for(reader.readexactly(10), 5)) == 10
    data_at = time.monotonic() - start
    assert await asyncio.wait_for(reader.read(), 5) == b""
    eof_at = time.monotonic() - start
    assert data_at < 0.3 and 0.38 <= eof_at <= 1.5, (data_at, eof_at)
    await _close(writer)


async def test_timeout_zero_blackholes_until_removed(tox: Tox, upstreams: Upstreams) -> None:
    """timeout=0 lets nothing through and keeps the socket open; removing it closes."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    await tox.toxic({"type": "timeout", "attributes": {"timeout": 0}})
    reader, writer = await _open(port)
    writer.write(b"hello")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)
    assert not reader.at_eof()
    await tox.remove("timeout_downstream")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await _close(writer)


async def test_timeout_closes_after_timeout(tox: Tox, upstreams: Upstreams) -> None:
    """timeout=N drops data and closes the connection N ms after the link starts."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    await tox.toxic({"type": "timeout", "attributes": {"timeout": 250}})
    reader, writer = await _open(port)
    start = time.monotonic()
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert 0.2 <= time.monotonic() - start <= 1.2
    await _close(writer)


async def test_reset_peer_sends_rst(tox: Tox, upstreams: Upstreams) -> None:
    """reset_peer makes the client's read fail with ConnectionResetError."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    await tox.toxic({"type": "reset_peer", "attributes": {"timeout": 100}})
    reader, writer = await _open(port)
    start = time.monotonic()
    writer.write(b"ping")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(100), 5)
    assert time.monotonic() - start >= 0.09
    writer.close()


async def test_slicer_delivers_same_bytes_in_pieces(tox: Tox, upstreams: Upstreams) -> None:
    """slicer splits one 10 KB write into several reads; the bytes are unchanged."""
    port = await tox.proxy(await upstreams.start(_blob(10_000)))
    await tox.toxic(
        {
            "type": "slicer",
            "attributes": {"average_size": 1000, "size_variation": 100, "delay": 20_000},
        }
    )
    reader, writer = await _open(port)
    start = time.monotonic()
    data, reads = await _read_all(reader)
    assert data == bytes(i % 251 for i in range(10_000))
    assert reads >= 4, reads
    assert time.monotonic() - start >= 0.1  # ~10 pieces, 20 ms apart
    await _close(writer)


async def test_limit_data_cuts_at_exactly_n_bytes(tox: Tox, upstreams: Upstreams) -> None:
    """limit_data closes the connection after exactly `bytes` bytes."""
    port = await tox.proxy(await upstreams.start(_blob(10_000)))
    await tox.toxic({"type": "limit_data", "attributes": {"bytes": 1234}})
    reader, writer = await _open(port)
    data, _ = await _read_all(reader)
    assert data == bytes(i % 251 for i in range(1234))
    await _close(writer)


async def _limited_lengths(tox: Tox, upstream: str, toxicity: float, n: int) -> list[int]:
    """Bytes received on each of n sequential connections through limit_data(1)."""
    port = await tox.proxy(upstream)
    body = {"type": "limit_data", "toxicity": toxicity, "attributes": {"bytes": 1}}
    await tox.toxic(body)
    lengths = []
    for _ in range(n):
        reader, writer = await _open(port)
        lengths.append(len((await _read_all(reader))[0]))
        await _close(writer)
    return lengths


async def test_toxicity_zero_and_one(tox: Tox, upstreams: Upstreams) -> None:
    """toxicity 0 never fires; toxicity 1 always fires."""
    upstream = await upstreams.start(_blob(10))
    assert await _limited_lengths(tox, upstream, 0.0, 5) == [10] * 5
    async with tox.http.delete("/proxies/p"):
        pass
    assert await _limited_lengths(tox, upstream, 1.0, 5) == [1] * 5


async def test_toxicity_half_replays_with_seed(upstreams: Upstreams) -> None:
    """toxicity 0.5 with a fixed seed makes the same per-connection choices on a fresh server."""
    upstream = await upstreams.start(_blob(10))
    runs = []
    for _ in range(2):
        async for tox in _tox(seed=42):
            runs.append(await _limited_lengths(tox, upstream, 0.5, 16))
    assert runs[0] == runs[1]
    assert set(runs[0]) == {1, 10}  # both outcomes occur


async def test_order_kept_while_toxics_churn(tox: Tox, upstreams: Upstreams) -> None:
    """65,535 ordered writes arrive complete and in order while toxics come and go."""
    received = bytearray()
    done = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.extend(data)
        done.set()
        writer.close()

    port = await tox.proxy(await upstreams.start(sink))
    _reader, writer = await _open(port)
    stop = asyncio.Event()
    rounds = 0

    async def churn() -> None:
        nonlocal rounds
        toxics = [
            {"type": "latency", "stream": "upstream", "attributes": {"latency": 5, "jitter": 3}},
            {
                "type": "slicer",
                "stream": "upstream",
                "attributes": {"average_size": 64, "size_variation": 16, "delay": 100},
            },
            {"type": "bandwidth", "stream": "upstream", "attributes": {"rate": 20_000}},
            {"type": "slow_close", "stream": "upstream", "attributes": {"delay": 10}},
        ]
        for round_ in range(200):
            if stop.is_set():
                return
            body = toxics[round_ % len(toxics)]
            name = f"{body['type']}_upstream"
            await tox.toxic(body)
            await asyncio.sleep(0.005)
            if body["type"] == "latency":
                await tox.update(name, {"attributes": {"latency": 2}})
            await tox.remove(name)
            rounds += 1

    churner = asyncio.create_task(churn())
    expected = bytearray()
    for i in range(65_535):
        piece = i.to_bytes(2, "big")
        expected += piece
        writer.write(piece)
        if i % 500 == 0:
            await writer.drain()
            await asyncio.sleep(0.001)
    await writer.drain()
    stop.set()
    await asyncio.wait_for(churner, 10)
    writer.write_eof()
    await asyncio.wait_for(done.wait(), 20)
    assert rounds >= 4, rounds  # toxics really changed while bytes flowed
    assert len(received) == len(expected)
    assert received == expected
    await _close(writer)


async def test_close_leaves_nothing_open(upstreams: Upstreams) -> None:
    """Closing the server ends live links: the client sees EOF and no link remains."""
    async for tox in _tox(seed=None):
        port = await tox.proxy(await upstreams.start(tcp_echo))
        await tox.toxic({"type": "latency", "attributes": {"latency": 10_000}})
        reader, writer = await _open(port)
        writer.write(b"x")
        await asyncio.sleep(0.05)
        proxy = tox.running.server.proxies["p"]
        assert len(proxy.connections) == 1
        await tox.running.server.close()
        assert proxy.connections == set() and proxy.enabled is False
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()


async def test_half_close_and_unreachable_upstream(tox: Tox, upstreams: Upstreams) -> None:
    """A client's EOF reaches the upstream; an unreachable upstream closes the client."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    reader, writer = await _open(port)
    writer.write(b"last words")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b"last words"
    await _close(writer)

    dead = await upstreams.start(tcp_echo)
    upstreams.servers[-1].close()
    await upstreams.servers[-1].wait_closed()
    dead_port = await tox.proxy(dead, name="dead")
    reader, writer = await _open(dead_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await _close(writer)
