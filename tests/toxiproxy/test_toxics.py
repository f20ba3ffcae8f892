"""Each Toxiproxy toxic measured with real sockets on loopback, plus the ordering invariant."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import tcp_echo
from tests.toxiproxy.conftest import (
    Tox,
    Upstreams,
    blob,
    close_writer,
    open_link,
    pattern,
    read_all,
    tox_server,
)


async def test_latency_adds_delay_per_chunk_from_arrival(tox: Tox, upstreams: Upstreams) -> None:
    """latency delays data by ~latency ms, on a live link, without stacking per chunk."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    reader, writer = await open_link(port)
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
    await close_writer(writer)


async def test_bandwidth_limits_throughput(tox: Tox, upstreams: Upstreams) -> None:
    """bandwidth rate=100 KB/s moves 200 KB in about 2 s, every byte intact."""
    port = await tox.proxy(await upstreams.start(blob(200_000)))
    await tox.toxic({"type": "bandwidth", "attributes": {"rate": 100}})
    reader, writer = await open_link(port)
    start = time.monotonic()
    data, _ = await read_all(reader)
    elapsed = time.monotonic() - start
    assert data == pattern(200_000)
    assert 1.5 <= elapsed <= 3.5, elapsed
    await close_writer(writer)


async def test_slow_close_delays_eof_not_data(tox: Tox, upstreams: Upstreams) -> None:
    """slow_close passes data at once but holds the EOF for delay ms."""
    port = await tox.proxy(await upstreams.start(blob(10)))
    await tox.toxic({"type": "slow_close", "attributes": {"delay": 400}})
    reader, writer = await open_link(port)
    start = time.monotonic()
    assert len(await asyncio.wait_for(reader.readexactly(10), 5)) == 10
    data_at = time.monotonic() - start
    assert await asyncio.wait_for(reader.read(), 5) == b""
    eof_at = time.monotonic() - start
    assert data_at < 0.3 and 0.38 <= eof_at <= 1.5, (data_at, eof_at)
    await close_writer(writer)


async def test_timeout_zero_blackholes_until_removed(tox: Tox, upstreams: Upstreams) -> None:
    """timeout=0 lets nothing through and keeps the socket open; removing it closes."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    await tox.toxic({"type": "timeout", "attributes": {"timeout": 0}})
    reader, writer = await open_link(port)
    writer.write(b"hello")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)
    assert not reader.at_eof()
    await tox.remove("timeout_downstream")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await close_writer(writer)


async def test_timeout_closes_after_timeout(tox: Tox, upstreams: Upstreams) -> None:
    """timeout=N drops data and closes the connection N ms after the link starts."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    await tox.toxic({"type": "timeout", "attributes": {"timeout": 250}})
    reader, writer = await open_link(port)
    start = time.monotonic()
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert 0.2 <= time.monotonic() - start <= 1.2
    await close_writer(writer)


async def test_reset_peer_sends_rst(tox: Tox, upstreams: Upstreams) -> None:
    """reset_peer makes the client's read fail with ConnectionResetError."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    await tox.toxic({"type": "reset_peer", "attributes": {"timeout": 100}})
    reader, writer = await open_link(port)
    start = time.monotonic()
    writer.write(b"ping")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(100), 5)
    assert time.monotonic() - start >= 0.09
    writer.close()


async def test_slicer_delivers_same_bytes_in_pieces(tox: Tox, upstreams: Upstreams) -> None:
    """slicer splits one 10 KB write into several reads; the bytes are unchanged."""
    port = await tox.proxy(await upstreams.start(blob(10_000)))
    await tox.toxic(
        {
            "type": "slicer",
            "attributes": {"average_size": 1000, "size_variation": 100, "delay": 20_000},
        }
    )
    reader, writer = await open_link(port)
    start = time.monotonic()
    data, reads = await read_all(reader)
    assert data == pattern(10_000)
    assert reads >= 4, reads
    assert time.monotonic() - start >= 0.1  # ~10 pieces, 20 ms apart
    await close_writer(writer)


async def test_limit_data_cuts_at_exactly_n_bytes(tox: Tox, upstreams: Upstreams) -> None:
    """limit_data closes the connection after exactly `bytes` bytes."""
    port = await tox.proxy(await upstreams.start(blob(10_000)))
    await tox.toxic({"type": "limit_data", "attributes": {"bytes": 1234}})
    reader, writer = await open_link(port)
    data, _ = await read_all(reader)
    assert data == pattern(1234)
    await close_writer(writer)


async def _limited_lengths(tox: Tox, upstream: str, toxicity: float, n: int) -> list[int]:
    """Bytes received on each of n sequential connections through limit_data(1)."""
    port = await tox.proxy(upstream)
    body = {"type": "limit_data", "toxicity": toxicity, "attributes": {"bytes": 1}}
    await tox.toxic(body)
    lengths = []
    for _ in range(n):
        reader, writer = await open_link(port)
        lengths.append(len((await read_all(reader))[0]))
        await close_writer(writer)
    return lengths


async def test_toxicity_zero_and_one(tox: Tox, upstreams: Upstreams) -> None:
    """toxicity 0 never fires; toxicity 1 always fires."""
    upstream = await upstreams.start(blob(10))
    assert await _limited_lengths(tox, upstream, 0.0, 5) == [10] * 5
    async with tox.http.delete("/proxies/p"):
        pass
    assert await _limited_lengths(tox, upstream, 1.0, 5) == [1] * 5


async def test_toxicity_half_replays_with_seed(upstreams: Upstreams) -> None:
    """toxicity 0.5 with a fixed seed makes the same per-connection choices on a fresh server."""
    upstream = await upstreams.start(blob(10))
    runs = []
    for _ in range(2):
        async for tox in tox_server(seed=42):
            runs.append(await _limited_lengths(tox, upstream, 0.5, 16))
    assert runs[0] == runs[1]
    assert set(runs[0]) == {1, 10}  # both outcomes occur
