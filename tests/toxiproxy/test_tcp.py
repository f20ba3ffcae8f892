"""TCP links of the Toxiproxy-compatible server: one upstream connection per client, two
one-way pumps that keep byte order, pass EOFs, push back on a slow reader and end together."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import time

import pytest

from chaosstream.toxiproxy.tcp import split_host_port
from tests.conftest import tcp_echo
from tests.toxiproxy.conftest import Tox, Upstreams, close_writer, open_link


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8474", ("127.0.0.1", 8474)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:26379", ("::1", 26379)),
        (":6379", ("", 6379)),
        ("redis.internal:65535", ("redis.internal", 65535)),
    ],
)
def test_split_host_port_reads_names_v4_and_bracketed_v6(
    address: str, expected: tuple[str, int]
) -> None:
    """host:port and [v6]:port split into the host (brackets off) and an int port."""
    assert split_host_port(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "host:", "host:http", "host:65536", "host:-1"])
def test_split_host_port_refuses_a_missing_or_bad_port(address: str) -> None:
    """No port, a named port, or one past 65535 is a ValueError naming the address."""
    with pytest.raises(ValueError, match=f"address {address}: missing or bad port"):
        split_host_port(address)


async def test_half_close_and_unreachable_upstream(tox: Tox, upstreams: Upstreams) -> None:
    """A client's EOF reaches the upstream; an unreachable upstream closes the client."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    reader, writer = await open_link(port)
    writer.write(b"last words")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b"last words"
    await close_writer(writer)

    dead = await upstreams.start(tcp_echo)
    upstreams.servers[-1].close()
    await upstreams.servers[-1].wait_closed()
    dead_port = await tox.proxy(dead, name="dead")
    reader, writer = await open_link(dead_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await close_writer(writer)


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
    _reader, writer = await open_link(port)
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
    await close_writer(writer)


async def test_slow_reader_pushes_back_on_the_upstream(tox: Tox, upstreams: Upstreams) -> None:
    """While the client reads nothing the upstream's writes stall (the link does not buffer
    64 MiB); once it reads, every byte arrives intact."""
    total = 64 << 20
    piece = bytes(range(256)) * 4096  # 1 MiB
    written = 0

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        try:
            while written < total:
                writer.write(piece)
                await writer.drain()
                written += len(piece)
        except ConnectionError:
            pass
        finally:
            writer.close()

    port = await tox.proxy(await upstreams.start(firehose))
    reader, writer = await open_link(port)
    await asyncio.sleep(0.5)  # the client reads nothing yet
    stalled_at = written
    # Measured on loopback: ~9 MiB sits in kernel buffers and the link's 256 KiB inbox.
    assert stalled_at < total // 2, f"{stalled_at >> 20} MiB written with nobody reading"
    digest, received = hashlib.sha256(), 0
    while data := await asyncio.wait_for(reader.read(1 << 20), 10):
        digest.update(data)
        received += len(data)
    assert received == total
    assert digest.digest() == hashlib.sha256(piece * (total // len(piece))).digest()
    await close_writer(writer)


async def test_client_vanishing_closes_its_upstream_connection(
    tox: Tox, upstreams: Upstreams
) -> None:
    """A client that resets its socket takes its upstream connection with it; no link remains."""
    upstream_saw: list[bytes] = []
    upstream_ended = asyncio.Event()

    async def listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                upstream_saw.append(data)
        except ConnectionError:
            upstream_saw.append(b"<reset>")
        finally:
            upstream_ended.set()
            writer.close()

    port = await tox.proxy(await upstreams.start(listener))
    _reader, writer = await open_link(port)
    writer.write(b"hello")
    await writer.drain()
    for _ in range(250):  # 5 s at most
        if upstream_saw:
            break
        await asyncio.sleep(0.02)
    assert upstream_saw == [b"hello"]
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # RST towards the proxy
    await asyncio.wait_for(upstream_ended.wait(), 5)
    proxy = tox.running.server.proxies["p"]
    for _ in range(250):
        if not proxy.connections:
            break
        await asyncio.sleep(0.02)
    assert proxy.connections == set()


async def test_reset_reaches_both_peers(tox: Tox, upstreams: Upstreams) -> None:
    """A reset on the link sends RST to the client and to the upstream, not a polite FIN."""
    upstream_got: list[str] = []
    upstream_ended = asyncio.Event()

    async def listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
            upstream_got.append("eof")
        except ConnectionResetError:
            upstream_got.append("reset")
        finally:
            upstream_ended.set()
            writer.close()

    port = await tox.proxy(await upstreams.start(listener))
    await tox.toxic({"type": "reset_peer", "stream": "upstream", "attributes": {"timeout": 50}})
    reader, writer = await open_link(port)
    start = time.monotonic()
    writer.write(b"ping")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(100), 5)
    await asyncio.wait_for(upstream_ended.wait(), 5)
    assert upstream_got == ["reset"]
    assert time.monotonic() - start >= 0.04
    writer.close()


async def test_each_client_gets_its_own_upstream_connection(tox: Tox, upstreams: Upstreams) -> None:
    """Two clients at once through one proxy: two upstream connections, no bytes crossed."""
    port = await tox.proxy(await upstreams.start(tcp_echo))
    links = [await open_link(port) for _ in range(2)]
    for i, (_, writer) in enumerate(links):
        writer.write(f"client-{i} ".encode() * 1000)
    for i, (reader, _writer) in enumerate(links):
        got = await asyncio.wait_for(reader.readexactly(len(f"client-{i} ") * 1000), 5)
        assert got == f"client-{i} ".encode() * 1000
    assert len(tox.running.server.proxies["p"].connections) == 2
    for _, writer in links:
        await close_writer(writer)
