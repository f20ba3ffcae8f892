"""The clean body's relay (proxy/relay.py) on real sockets: byte-exact, pooled, bounded."""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from chaosstream.faults.profile import load_profile, profile_from_data
from chaosstream.proxy.record import Exchange
from chaosstream.proxy.server import ChaosProxy
from chaosstream.proxy.upstream import Response
from tests.conftest import ProxyFactory

SSE = b"Content-Type: text/event-stream\r\n"
BODY = b"".join(b'data: {"i": %d, "text": "%s"}\n\n' % (i, b"x" * (i % 17)) for i in range(120))
# Read sizes on the proxy's side: single bytes (mid chunk-size line, mid CRLF), odd
# cuts, and one read that holds dozens of events and chunks.
CUTS = (1, 1, 1, 2, 5, 1, 3, 1700, 7, 1, 64, 1, 1, 13, 300)


def chunked(body: bytes, sizes: tuple[int, ...] = (1, 7, 13, 250, 3, 96)) -> bytes:
    """``body`` in HTTP/1.1 chunked framing, chunk sizes cycling through ``sizes``."""
    out, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        out.append(b"%x\r\n%b\r\n" % (len(body[i : i + n]), body[i : i + n]))
        i, k = i + n, k + 1
    return b"".join(out) + b"0\r\n\r\n"


def cut(wire: bytes, sizes: tuple[int, ...] = CUTS) -> list[bytes]:
    pieces, i, k = [], 0, 0
    while i < len(wire):
        n = sizes[k % len(sizes)]
        pieces.append(wire[i : i + n])
        i, k = i + n, k + 1
    return pieces


def dechunk(raw: bytes) -> tuple[bytes, bool]:
    """Strictly decode a chunked body: (data, ended with the last chunk)."""
    out, i = [], 0
    while True:
        end = raw.find(b"\r\n", i)
        if end < 0:
            return b"".join(out), False
        size = int(raw[i:end], 16)
        if size == 0:
            assert raw[end:] == b"\r\n\r\n", raw[end:]
            return b"".join(out), True
        data = raw[end + 2 : end + 2 + size]
        out.append(data)
        if len(data) < size:
            return b"".join(out), False
        assert raw[end + 2 + size : end + 4 + size] == b"\r\n"
        i = end + 4 + size


Script = Callable[[asyncio.StreamWriter], Awaitable[bool]]


class RawUpstream:
    """An HTTP/1.1 upstream on a raw socket: every request gets ``script``'s bytes;
    it keeps the connection for the next request while the script returns True."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests = 0
        self.closed_by_peer = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_peer.set()
                    return
                self.requests += 1
                if not await self.script(writer):
                    break
                await writer.drain()
        except ConnectionError:
            self.closed_by_peer.set()
        finally:
            writer.close()


def paced(head: bytes, pieces: list[bytes], keep: bool = True, gap_s: float = 0.002) -> Script:
    """A script sending the head, then each piece on its own after a short pause."""

    async def script(writer: asyncio.StreamWriter) -> bool:
        writer.write(head)
        for piece in pieces:
            await writer.drain()
            await asyncio.sleep(gap_s)
            writer.write(piece)
        await writer.drain()
        return keep

    return script


async def raw_get(url: str, path: str = "/", version: str = "1.1") -> tuple[bytes, bytes]:
    """One request on a fresh socket, read to the end: (head, raw body)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    extra = "Connection: close\r\n" if version == "1.1" else ""
    writer.write(f"GET {path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode())
    raw = b""
    try:
        while data := await asyncio.wait_for(reader.read(65536), 5):
            raw += data
    except ConnectionResetError:
        pass
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


async def last_exchange(proxy: ChaosProxy) -> Exchange:
    for _ in range(200):
        if proxy.recorder.exchanges and not proxy.recorder.open:
            return proxy.recorder.exchanges[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("the exchange never ended")


async def test_chunked_body_is_relayed_byte_exact_whatever_the_reads(
    proxy_factory: ProxyFactory,
) -> None:
    """A chunked body read one byte, a few bytes or dozens of events at a time reaches
    the client chunked, byte-exact; bytes_out, first_byte and the recorder's copy agree."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    async with RawUpstream(paced(head, cut(chunked(BODY)), gap_s=0.001)) as url:
        proxy = await proxy_factory(url)
        resp_head, raw = await raw_get(proxy.url)
    assert b"transfer-encoding: chunked" in resp_head.lower()
    assert dechunk(raw) == (BODY, True)
    ex = await last_exchange(proxy)
    assert (ex.outcome, ex.bytes_out, bytes(ex.upstream_chunks)) == ("complete", len(BODY), BODY)
    assert ex.first_byte is not None


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_close_delimited_body_is_relayed_byte_exact(
    version: str, proxy_factory: ProxyFactory
) -> None:
    """A body upstream ends by closing reaches an HTTP/1.1 client chunked and an HTTP/1.0
    client close-delimited, byte-exact either way."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Connection: close\r\n\r\n"
    async with RawUpstream(paced(head, cut(BODY), keep=False, gap_s=0.001)) as url:
        proxy = await proxy_factory(url)
        resp_head, raw = await raw_get(proxy.url, version=version)
    if version == "1.1":
        assert dechunk(raw) == (BODY, True)
    else:
        assert b"transfer-encoding" not in resp_head.lower()
        assert raw == BODY
    ex = await last_exchange(proxy)
    assert (ex.outcome, ex.bytes_out) == ("complete", len(BODY))


async def test_content_length_body_passes_untouched_encoding_included(
    proxy_factory: ProxyFactory,
) -> None:
    """A gzip body with Content-Length arrives with the same length, coding and bytes."""
    body = gzip.compress(hashlib.sha256(b"seed").digest() * 20000 + BODY)

    async def gz(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/gz", gz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        proxy = await proxy_factory(f"http://127.0.0.1:{runner.addresses[0][1]}")
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.get(proxy.url + "/gz") as resp,
        ):
            got = await resp.read()
            assert resp.headers["Content-Encoding"] == "gzip"
            assert resp.headers["Content-Length"] == str(len(body))
        assert got == body
        ex = await last_exchange(proxy)
        assert (ex.outcome, ex.bytes_out) == ("complete", len(body))
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_upstream_connection_is_reused_after_a_relayed_body(
    framing: str, proxy_factory: ProxyFactory
) -> None:
    """After a relayed body the upstream connection goes back to the pool: three streams
    one after another use one connection, each body byte-exact."""
    if framing == "chunked":
        head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
        wire = chunked(BODY)
    else:
        head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Content-Length: %d\r\n\r\n" % len(BODY)
        wire = BODY
    upstream = RawUpstream(paced(head, cut(wire, (40, 1, 900, 3))))
    async with upstream as url:
        proxy = await proxy_factory(url)
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(proxy.url + "/") as resp:
                    assert await resp.read() == BODY
        assert (upstream.connections, upstream.requests) == (1, 3)


def data_segments_in(sock: socket.socket) -> int:
    """Segments with data this socket received (Linux TCP_INFO ``tcpi_data_segs_in``):
    on loopback with TCP_NODELAY, one per ``write`` of a small response piece."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[152:156], "little")


async def sends_to_client(url: str) -> tuple[bytes, int]:
    """A request read to the end of its chunked body: (raw body, the proxy's sends).

    A second request on the same connection must then get a response that starts
    clean: a body ended twice would put a stray last chunk before its head."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    bodies, sends = [], 0
    for _ in range(2):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, raw
            raw += data
        assert raw.startswith(b"HTTP/1.1 200 "), raw[:40]
        bodies.append(raw.partition(b"\r\n\r\n")[2])
        if not sends:
            sends = data_segments_in(writer.get_extra_info("socket"))
    writer.close()
    assert bodies[0] == bodies[1]
    return bodies[0], sends


#: Three events sent apart, the last with the body's end in the same send.
STREAMED = [chunked(b"data: %d\n\n" % i)[:-5] for i in (1, 2)] + [chunked(b"data: 3\n\n")]

#: A stream-aware fault armed on the stream, never firing: the gate counts its events.
ARMED = {"version": 1, "name": "armed", "faults": [{"type": "disconnect", "after_events": 10**9}]}


def ending(pieces: list[bytes]) -> tuple[Script, bytes]:
    """An upstream sending ``pieces`` after its head (:data:`STREAMED`'s events), or with
    none a whole short answer in one send; and the body it sends."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    if pieces:
        return paced(head, pieces, gap_s=0.02), b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    body = b"data: whole\n\n"
    return paced(head + chunked(body), []), body


@pytest.mark.parametrize(
    ("pieces", "armed", "sends"),
    [
        # The head alone (it leaves at the end of its loop step), two events, then the
        # last event with the body's end: four sends, where the end had one of its own.
        (STREAMED, False, 4),
        # The same through the gate of a fault far from acting.
        (STREAMED, True, 4),
        # A whole short answer in one read: head, body and end in one send.
        ([], False, 1),
        # The same through the gate.
        ([], True, 1),
    ],
    ids=["streamed", "streamed-armed", "whole", "whole-armed"],
)
async def test_the_body_ends_in_the_send_of_its_last_bytes(
    pieces: list[bytes], armed: bool, sends: int, proxy_factory: ProxyFactory
) -> None:
    """The client gets a chunked body's end with its last bytes, not in a send of its own:
    one system call and one segment fewer per response (TCP_INFO counts the client's)."""
    script, body = ending(pieces)
    async with RawUpstream(script) as url:
        proxy = await proxy_factory(url, profile_from_data(ARMED, "<test>") if armed else None)
        raw, counted = await sends_to_client(proxy.url)
    assert dechunk(raw) == (body, True)
    assert counted == sends
    ex = await last_exchange(proxy)
    assert (ex.outcome, ex.bytes_out) == ("complete", len(body))
    assert [e.action for e in ex.faults] == []


@pytest.mark.parametrize(
    ("pieces", "armed"),
    [(STREAMED, False), (STREAMED, True), ([], False), ([], True)],
    ids=["streamed", "streamed-armed", "whole", "whole-armed"],
)
async def test_on_aiohttps_server_the_body_ends_through_its_writer(
    pieces: list[bytes], armed: bool, proxy_factory: ProxyFactory
) -> None:
    """Through aiohttp's server (``own_front=False``; the intercepting and worker fronts)
    the relay cannot hand out the end (``end_bytes()`` is None) and ``write(last=True)``
    is aiohttp's ``write_eof(data)``: every body still ends whole, exactly once."""
    script, body = ending(pieces)
    profile = profile_from_data(ARMED, "<test>") if armed else None
    async with RawUpstream(script) as url:
        proxy = await proxy_factory(url, profile, own_front=False)
        raw, _ = await sends_to_client(proxy.url)
    assert dechunk(raw) == (body, True)  # strict: nothing after the last chunk
    ex = await last_exchange(proxy)
    assert (ex.outcome, ex.bytes_out) == ("complete", len(body))


async def test_a_client_reading_nothing_holds_upstream_back(proxy_factory: ProxyFactory) -> None:
    """A client that reads nothing stops the relay: upstream can push only what the socket
    buffers and the client's high-water mark hold, then the body still arrives whole."""
    block = hashlib.sha256(b"block").digest() * 2048  # 64 KiB
    blocks = 1024  # 64 MiB
    sent = 0

    async def flood(writer: asyncio.StreamWriter) -> bool:
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(block) * blocks))
        for _ in range(blocks):
            writer.write(block)
            await writer.drain()
            sent += len(block)
        return False

    async with RawUpstream(flood) as url:
        proxy = await proxy_factory(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setblocking(False)
        port = int(proxy.url.rsplit(":", 1)[1])
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(1.0)
        held = sent
        digest, total = hashlib.sha256(), 0
        await reader.readuntil(b"\r\n\r\n")
        while data := await asyncio.wait_for(reader.read(1 << 20), 10):
            digest.update(data)
            total += len(data)
        writer.close()
    # Socket buffers on loopback autotune to a few MiB each; unbounded would be 64 MiB.
    assert held < 24 * 1024 * 1024, held
    assert total == len(block) * blocks
    assert digest.digest() == hashlib.sha256(block * blocks).digest()
    ex = await last_exchange(proxy)
    assert (ex.outcome, ex.bytes_out) == ("complete", total)


async def test_client_leaving_mid_stream_closes_the_relayed_upstream(
    proxy_factory: ProxyFactory,
) -> None:
    """The client hanging up mid-body closes upstream's connection at once: client_gone."""

    async def endless(writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(2000):
            writer.write(chunked(b"data: %d\n\n" % i)[:-5])
            await writer.drain()
            await asyncio.sleep(0.005)
        return False

    upstream = RawUpstream(endless)
    async with upstream as url:
        proxy = await proxy_factory(url)
        host, port = proxy.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"data: 3\n\n")
        # The body is piped from the socket callback, not read by the handler task.
        piped = [o for o in gc.get_objects() if type(o) is Response and o._sink is not None]
        assert len(piped) == 1
        writer.close()
        await asyncio.wait_for(upstream.closed_by_peer.wait(), 5)
        ex = await last_exchange(proxy)
    assert ex.outcome == "client_gone"
    assert ex.bytes_out > 0
    assert ex.upstream_closed_early


async def test_upstream_cut_mid_chunk_breaks_the_client_body_the_same_way(
    proxy_factory: ProxyFactory,
) -> None:
    """Upstream closing inside a chunk: the client gets every byte before the cut and no
    last chunk; the exchange is an upstream_error."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    pieces = [b"7\r\ndata: 1\r\n", b"10\r\n", b"data: ", b"2\n"]
    async with RawUpstream(paced(head, pieces, keep=False)) as url:
        proxy = await proxy_factory(url)
        _, raw = await raw_get(proxy.url)
    assert dechunk(raw) == (b"data: 1data: 2\n", False)
    ex = await last_exchange(proxy)
    assert ex.outcome == "upstream_error"
    assert ex.error is not None and "ended the body early" in ex.error


async def _tls_scenario(ca_file: Path) -> tuple[list[bytes], int]:
    """Two streams through a proxy to a TLS upstream: their bodies, the upstream's peers."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(ca_file))
    peers: set[object] = set()

    async def events(request: web.Request) -> web.StreamResponse:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in cut(BODY, (1, 90, 7, 600)):
            await resp.write(piece)
            await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    upstream = f"https://127.0.0.1:{runner.addresses[0][1]}"
    bodies = []
    try:
        async with (
            ChaosProxy(upstream, load_profile("clean"), ca_file=str(ca_file)) as proxy,
            aiohttp.ClientSession() as session,
        ):
            for _ in range(2):
                async with session.get(proxy.url + "/events") as resp:
                    bodies.append(await resp.read())
    finally:
        await runner.cleanup()
    return bodies, len(peers)


async def test_https_upstream_is_relayed_and_pooled(tmp_path: Path) -> None:
    """Over TLS the relay is byte-exact too, and the pooled connection serves the next
    stream."""
    assert await _tls_scenario(tmp_path / "ca.pem") == ([BODY, BODY], 1)


async def _relay_scenario() -> tuple[bytes, tuple[int, int], bool]:
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    upstream = RawUpstream(paced(head, cut(chunked(BODY), (1, 3, 700)), gap_s=0.001))
    async with upstream as url, ChaosProxy(url, load_profile("clean")) as proxy:
        _, raw = await raw_get(proxy.url)
        _, again = await raw_get(proxy.url)
        return dechunk(raw)[0], (upstream.connections, upstream.requests), raw == again


def test_relay_on_uvloop(tmp_path: Path) -> None:
    """On uvloop's transports, TCP and TLS, the relay is byte-exact and the connection
    pooled as well."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        body, counts, same = runner.run(_relay_scenario())
        tls = runner.run(_tls_scenario(tmp_path / "ca.pem"))
    assert (body, counts, same) == (BODY, (1, 2), True)
    assert tls == ([BODY, BODY], 1)


# -- arrival stamps: timing faults count from the socket (proxy/upstream.py) --------

EVENT = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
REQUEST = {"model": "m", "stream": True, "messages": []}


def latency(*ms: float, **fields: object) -> object:
    """A profile of one latency fault per delay in ``ms`` (``first_byte_ms``), each with
    ``fields`` as well."""
    faults = [{"type": "latency", "first_byte_ms": m, **fields} for m in ms]
    return profile_from_data({"version": 1, "name": "t", "faults": faults}, "<t>")


def recv_head(conn: socket.socket) -> bytes:
    """A thread upstream's blocking read of a request head (and whatever came with it)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        data = conn.recv(65536)
        if not data:
            break
        raw += data
    return raw


def _late_task(loop: asyncio.AbstractEventLoop, sent: threading.Event) -> None:
    """The socket's callback runs on time, the handler task it wakes 200 ms late."""
    sent.wait(2)
    time.sleep(0.02)  # the bytes are in the socket when this callback returns
    # A timer already due runs in the same loop pass as the socket's callback, after it
    # and before the handler task it wakes.
    loop.call_at(loop.time(), time.sleep, 0.2)


def _late_callback(loop: asyncio.AbstractEventLoop, sent: threading.Event) -> None:
    """The loop is busy while the bytes come in: even the socket's callback is 200 ms late
    (the hold then counts from the kernel's arrival time: upstream.py, kernel_stamps)."""
    sent.wait(2)
    time.sleep(0.2)


@pytest.mark.parametrize("stall", [_late_task, _late_callback], ids=["task", "callback"])
async def test_first_byte_delay_counts_from_arrival_not_from_a_late_loop(
    stall: Callable[[asyncio.AbstractEventLoop, threading.Event], None],
    proxy_factory: ProxyFactory,
) -> None:
    """Upstream's head and first event come in while the proxy's loop is stalled 200 ms
    (the handler task late, or the socket's callback itself): the 300 ms first-byte delay
    still counts from their arrival, so the client gets the event ~300 ms after it was
    sent, not ~500."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    stalling, sent_evt, done = threading.Event(), threading.Event(), threading.Event()
    sent: list[float] = []

    def stalled() -> None:
        stalling.set()
        stall(loop, sent_evt)

    def upstream() -> None:
        conn, _ = listener.accept()
        with conn:
            recv_head(conn)
            loop.call_soon_threadsafe(stalled)
            stalling.wait(2)
            head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
            conn.sendall(head + b"%x\r\n%b\r\n" % (len(EVENT), EVENT))
            sent.append(time.monotonic())
            sent_evt.set()
            time.sleep(0.05)
            conn.sendall(b"0\r\n\r\n")
            done.wait(2)

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        proxy = await proxy_factory(f"http://127.0.0.1:{port}", latency(300))
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{proxy.url}/v1/chat/completions", json=REQUEST) as resp,
        ):
            first = await resp.content.readany()
            got = time.monotonic()
            rest = await resp.read()
        assert first + rest == EVENT
        waited_ms = (got - sent[0]) * 1000
        # Counted from the late task or callback it would be ~500 ms.
        assert 280 <= waited_ms < 440, waited_ms
    finally:
        done.set()
        await asyncio.to_thread(thread.join, 5)
        listener.close()


async def test_timed_exchanges_share_a_pooled_connection(
    proxy_factory: ProxyFactory,
) -> None:
    """Two timed exchanges one after another share one pooled upstream connection, both
    bodies whole; a clean exchange after them gets the whole body too."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    body = EVENT * 5
    upstream = RawUpstream(paced(head, [chunked(body, (len(EVENT),))], gap_s=0.001))
    async with upstream as url:
        proxy = await proxy_factory(url, latency(20))
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.post(f"{proxy.url}/v1/chat/completions", json=REQUEST) as resp:
                    assert await resp.read() == body
                await last_exchange(proxy)
            assert upstream.connections == 1  # the second exchange reused the first's
            clean = await proxy_factory(url)
            async with session.post(f"{clean.url}/v1/chat/completions", json=REQUEST) as resp:
                assert await resp.read() == body
    assert proxy.recorder.exchanges[-1].outcome == "complete"


# -- first-byte holds: latency's first_byte_ms alone goes through the relay ----------


async def _post_timed(url: str) -> tuple[bytes, float]:
    """One streaming POST: (the body, seconds from sending it to the first body bytes)."""
    async with aiohttp.ClientSession() as session:
        start = time.monotonic()
        async with session.post(f"{url}/v1/chat/completions", json=REQUEST) as resp:
            first = await resp.content.readany()
            waited = time.monotonic() - start
            return first + await resp.read(), waited


async def test_a_first_byte_hold_is_relayed_byte_exact_and_pooled(
    proxy_factory: ProxyFactory,
) -> None:
    """A chunked body read in odd pieces reaches the client byte-exact once the hold is
    over; the fault is logged once per exchange, as the hold began, and the upstream
    connection serves the next exchange."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    upstream = RawUpstream(paced(head, cut(chunked(BODY)), gap_s=0.001))
    async with upstream as url:
        proxy = await proxy_factory(url, latency(80))
        for _ in range(2):
            body, waited = await _post_timed(proxy.url)
            assert body == BODY
            assert waited >= 0.08, waited
            ex = await last_exchange(proxy)
            assert (ex.outcome, ex.bytes_out, bytes(ex.upstream_chunks)) == (
                "complete",
                len(BODY),
                BODY,
            )
            assert ex.first_byte is not None and ex.first_byte - ex.started >= 0.08
    assert upstream.connections == 1
    log = [(f.action, f.detail, f.events) for f in proxy.fault_log]
    assert log == [("delay_first_byte", "80.0 ms", 0)] * 2
    # Logged as the hold began, not once it was over.
    assert all(f.at_ms < 80 for f in proxy.fault_log), proxy.fault_log


async def test_first_byte_holds_add_up_and_each_is_logged(proxy_factory: ProxyFactory) -> None:
    """Two first-byte delays hold the first byte for their sum, as two faults of the
    chain in a row would; a zero one is not logged (nothing was held for it)."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    async with RawUpstream(paced(head, [chunked(BODY)], gap_s=0.001)) as url:
        proxy = await proxy_factory(url, latency(60, 0, 90))
        body, waited = await _post_timed(proxy.url)
    assert body == BODY
    assert 0.15 <= waited < 1.0, waited
    log = [(f.action, f.detail, f.index) for f in proxy.fault_log]
    assert log == [("delay_first_byte", "60.0 ms", 0), ("delay_first_byte", "90.0 ms", 2)]


async def test_a_client_that_leaves_during_the_hold_ends_it(proxy_factory: ProxyFactory) -> None:
    """A client gone about 100 ms into a 2 s hold: the exchange ends as client_gone at
    once, with nothing written, and upstream's connection is closed, not pooled mid-body."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    # The first event 50 ms after the head, the rest 50 ms later: the hold has begun.
    upstream = RawUpstream(paced(head, [chunked(BODY[:500]), chunked(BODY[500:])], gap_s=0.05))
    async with upstream as url:
        proxy = await proxy_factory(url, latency(2000))
        host, port = proxy.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        payload = json.dumps(REQUEST).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n%b" % (len(payload), payload)
        )
        await asyncio.sleep(0.15)
        writer.close()
        start = time.monotonic()
        ex = await last_exchange(proxy)
        assert time.monotonic() - start < 1.0
        assert (ex.outcome, ex.bytes_out, ex.first_byte) == ("client_gone", 0, None)
        await asyncio.wait_for(upstream.closed_by_peer.wait(), 5)
    assert [f.action for f in proxy.fault_log] == ["delay_first_byte"]


@pytest.mark.parametrize(
    "fields", [{"per_event_ms": 5}, {"jitter_ms": 5}, {"window": {"start_s": 0, "end_s": 1000}}]
)
async def test_a_latency_that_does_more_than_hold_still_reads_every_event(
    fields: dict[str, object], proxy_factory: ProxyFactory
) -> None:
    """A per-event delay, jitter or a window take the fault chain: the body is still
    whole and the first byte still held."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    body = EVENT * 5
    async with RawUpstream(paced(head, [chunked(body, (len(EVENT),))], gap_s=0.001)) as url:
        proxy = await proxy_factory(url, latency(60, **fields))
        got, waited = await _post_timed(proxy.url)
    assert got == body
    assert waited >= 0.05, waited
    assert proxy.fault_log and proxy.fault_log[0].action == "delay_first_byte"
