"""The proxy's own HTTP/1.1 client (proxy/upstream.py) against real upstreams on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from aiohttp import web
from yarl import URL

from chaosstream.proxy.upstream import (
    HIGH_WATER,
    MAX_HEAD_BYTES,
    PAUSE,
    STOP,
    BodyError,
    Pool,
    Response,
    Sink,
    UpstreamError,
    _request_head,
)
from tests.proxy.test_relay import chunked, recv_head

BODY = b"".join(b'data: {"i": %d, "text": "%s"}\n\n' % (i, b"x" * (i % 17)) for i in range(40))
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
CHUNKED_HEAD = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
WAIT_S = 3.0


def length_head(n: int, extra: bytes = b"") -> bytes:
    return OK_HEAD + extra + b"Content-Length: %d\r\n\r\n" % n


def cut(wire: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    pieces, i, k = [], 0, 0
    while i < len(wire):
        n = sizes[k % len(sizes)]
        pieces.append(wire[i : i + n])
        i, k = i + n, k + 1
    return pieces


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's raw bytes (head, then a length or chunked body); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    raw = [head]
    lower = head.lower()
    length = re.search(rb"\r\ncontent-length: *(\d+)", lower)
    if length:
        raw.append(await reader.readexactly(int(length.group(1))))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0], 16)
            raw += [line, await reader.readexactly(size + 2)]
            if size == 0:
                break
    return b"".join(raw)


class Peer:
    """One accepted upstream connection, as the server sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.requests: list[bytes] = []
        #: The client closed the connection (EOF or reset where a request could start).
        self.eof = asyncio.Event()
        #: The server is done with the connection (its handler returned).
        self.done = asyncio.Event()

    async def send(self, *pieces: bytes, gap_s: float = 0.0) -> None:
        """Each piece in its own write (the loop turns between them)."""
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()
            await asyncio.sleep(gap_s)


Script = Callable[[Peer], Awaitable[bool]]


class Upstream:
    """A raw HTTP/1.1 upstream: ``script`` answers each request and returns whether the
    connection is kept for the next one."""

    def __init__(self, script: Script, host: str = "127.0.0.1") -> None:
        self.script = script
        self.host = host
        self.peers: list[Peer] = []
        self.server: asyncio.Server | None = None
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def connections(self) -> int:
        return len(self.peers)

    @property
    def requests(self) -> list[bytes]:
        return [r for peer in self.peers for r in peer.requests]

    async def __aenter__(self) -> URL:
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        port = self.server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return URL(f"http://{host}:{port}/v1/chat?stream=1")

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for peer in self.peers:
            peer.writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        self.peers.append(peer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        try:
            while (raw := await read_request(reader)) is not None:
                peer.requests.append(raw)
                if not await self.script(peer):
                    return
            peer.eof.set()
        except ConnectionError:
            peer.eof.set()
        except asyncio.CancelledError:
            pass  # the test is over: a handler cancelled is not an error of the upstream
        finally:
            writer.close()
            peer.done.set()


def answer(*pieces: bytes, keep: bool = True, gap_s: float = 0.0) -> Script:
    async def script(peer: Peer) -> bool:
        await peer.send(*pieces, gap_s=gap_s)
        return keep

    return script


async def read_all(resp: Response) -> bytes:
    out = []
    while data := await asyncio.wait_for(resp.read(), WAIT_S):
        out.append(data)
    return b"".join(out)


async def get(pool: Pool, url: URL, method: str = "GET") -> tuple[Response, bytes]:
    resp = await asyncio.wait_for(pool.request(method, url, []), WAIT_S)
    try:
        return resp, await read_all(resp)
    finally:
        resp.close()


def collect(got: list[bytes]) -> Sink:
    """A sink keeping every piece and asking for more."""

    def sink(data: bytes, last: bool) -> int:
        got.append(data)
        return 0

    return sink


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    pool = Pool()
    yield pool
    await pool.close()


# -- response bodies -------------------------------------------------------------------

PATTERNS = {
    "one byte per write": cut(CHUNKED_HEAD + chunked(BODY), (1,)),
    "many chunks per write": cut(CHUNKED_HEAD + chunked(BODY, (5, 1, 9)), (1500,)),
    "chunk split across writes": cut(CHUNKED_HEAD + chunked(BODY, (100,)), (3, 50, 2, 1, 61)),
}


@pytest.mark.parametrize("pieces", PATTERNS.values(), ids=PATTERNS.keys())
async def test_chunked_body_is_byte_exact(pool: Pool, pieces: list[bytes]) -> None:
    """A chunked body reads byte-exact whatever the upstream's write pattern."""
    async with Upstream(answer(*pieces)) as url:
        resp, body = await get(pool, url)
    assert (resp.status, resp.headers["Content-Type"], body) == (200, "text/event-stream", BODY)
    assert resp.at_eof()


async def test_chunk_extensions_and_trailers_are_framing(pool: Pool) -> None:
    """Chunk extensions and a trailer section are not body, and the connection after them
    serves the next request."""
    wire = b"5;name=value\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: 1\r\n\r\n"
    upstream = Upstream(answer(CHUNKED_HEAD + wire))
    async with upstream as url:
        bodies = [(await get(pool, url))[1] for _ in range(2)]
    assert (bodies, upstream.connections) == ([b"hello!", b"hello!"], 1)


async def test_content_length_body_is_byte_exact(pool: Pool) -> None:
    """A Content-Length body in odd pieces reads byte-exact and ends at its length."""
    async with Upstream(answer(*cut(length_head(len(BODY)) + BODY, (70, 1, 400)))) as url:
        resp, body = await get(pool, url)
    assert body == BODY and resp.at_eof()


async def test_close_delimited_body_ends_cleanly_at_fin(pool: Pool) -> None:
    """A body with neither length nor chunking ends at upstream's FIN without an error."""
    async with Upstream(answer(OK_HEAD + b"\r\n", *cut(BODY, (300,)), keep=False)) as url:
        resp, body = await get(pool, url)
    assert body == BODY and resp.at_eof()


@pytest.mark.parametrize(
    ("method", "head"),
    [
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
    ],
    ids=["204", "304", "HEAD"],
)
async def test_bodiless_answers_do_not_hang(pool: Pool, method: str, head: bytes) -> None:
    """204, 304 and a HEAD's answer have no body even with a Content-Length, and end at once."""
    async with Upstream(answer(head)) as url:
        resp, body = await get(pool, url, method)
    assert body == b"" and resp.at_eof()


async def test_interim_responses_are_skipped(pool: Pool) -> None:
    """100 Continue and 103 Early Hints are passed over: the final head is returned."""
    interim = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    )
    async with Upstream(answer(interim, length_head(2, b"X-Final: 1\r\n") + b"ok")) as url:
        resp, body = await get(pool, url)
    assert (resp.status, resp.reason, body) == (200, "OK", b"ok")
    assert "Link" not in resp.headers and resp.headers["X-Final"] == "1"


# -- the pool --------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(pool: Pool) -> None:
    """Three requests one after the other reach a keep-alive upstream on ONE connection."""
    upstream = Upstream(answer(length_head(len(BODY)) + BODY))
    async with upstream as url:
        for _ in range(3):
            assert (await get(pool, url))[1] == BODY
        assert (upstream.connections, len(upstream.requests)) == (1, 3)


@pytest.mark.parametrize(
    ("method", "head"),
    [
        ("GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
    ],
    ids=["connection-close", "HEAD"],
)
async def test_not_reused_after_close_or_head(pool: Pool, method: str, head: bytes) -> None:
    """A `Connection: close` answer's and a HEAD's connection are closed by the client,
    not pooled (the upstream here would keep them)."""
    upstream = Upstream(answer(head))
    async with upstream as url:
        await get(pool, url, method)
        await asyncio.wait_for(upstream.peers[0].eof.wait(), WAIT_S)
        await get(pool, url, method)
        assert upstream.connections == 2


async def test_close_mid_body_closes_the_connection(pool: Pool) -> None:
    """A response closed before its body ended closes its connection (upstream sees EOF)
    and the next request takes a new one."""

    async def script(peer: Peer) -> bool:
        if len(upstream.peers) > 1:
            await peer.send(length_head(2) + b"ok")
            return True
        await peer.send(length_head(1000) + b"x" * 10)
        assert await peer.reader.read() == b""
        peer.eof.set()
        return False

    upstream = Upstream(script)
    async with upstream as url:
        resp = await pool.request("GET", url, [])
        assert await asyncio.wait_for(resp.read(), WAIT_S) == b"x" * 10
        resp.close()
        await asyncio.wait_for(upstream.peers[0].eof.wait(), WAIT_S)
        assert (await get(pool, url))[1] == b"ok"
        assert upstream.connections == 2


async def test_idle_connection_closed_by_upstream_is_replaced(pool: Pool) -> None:
    """A pooled connection the upstream closed while idle is replaced transparently."""
    upstream = Upstream(answer(length_head(2) + b"ok", keep=False))
    async with upstream as url:
        assert (await get(pool, url))[1] == b"ok"
        await asyncio.sleep(0.1)  # upstream's FIN reaches the idle connection
        assert (await get(pool, url))[1] == b"ok"
        assert upstream.connections == 2


async def test_stale_pooled_connection_is_retried_once_for_a_bytes_body(pool: Pool) -> None:
    """When a reused connection closes before any answer (upstream closed it as the request
    went), a bytes body is sent again on a fresh connection and its answer returned."""

    async def script(peer: Peer) -> bool:
        if len(peer.requests) == 1:
            await peer.send(length_head(2) + b"ok")
            return True
        return False  # the keep-alive race: the request arrived as upstream closed

    upstream = Upstream(script)
    async with upstream as url:
        for _ in range(2):
            resp = await asyncio.wait_for(pool.request("POST", url, [], b'{"a":1}'), WAIT_S)
            assert await read_all(resp) == b"ok"
            resp.close()
        assert upstream.connections == 2
        assert [r.endswith(b'\r\n\r\n{"a":1}') for r in upstream.requests] == [True] * 3


async def test_idle_connections_expire() -> None:
    """An idle pooled connection is closed once keepalive_s passed, not before."""
    pool = Pool(keepalive_s=0.3)
    upstream = Upstream(answer(length_head(2) + b"ok"))
    try:
        async with upstream as url:
            await get(pool, url)
            released = time.monotonic()
            await asyncio.wait_for(upstream.peers[0].eof.wait(), WAIT_S)
            assert 0.25 <= time.monotonic() - released < 3.0
            await get(pool, url)
            assert upstream.connections == 2
    finally:
        await pool.close()


async def test_idle_connections_are_capped_per_host_the_oldest_closed() -> None:
    """Five streams at once, two idle kept per host: the first three to come back are
    closed at once (upstream sees EOF), the two others serve the next two requests."""
    pool = Pool(max_idle_per_host=2)
    all_in = asyncio.Event()

    async def script(peer: Peer) -> bool:
        if len(upstream.peers) == 5:
            all_in.set()
        await all_in.wait()  # five connections open at once
        await peer.send(length_head(2) + b"ok")
        return True

    upstream = Upstream(script)
    try:
        async with upstream as url:
            got = await asyncio.gather(*(get(pool, url) for _ in range(5)))
            assert [body for _, body in got] == [b"ok"] * 5
            await asyncio.sleep(0.3)  # closed on release: the EOFs are on their way
            assert sorted(p.eof.is_set() for p in upstream.peers) == [False] * 2 + [True] * 3
            for _ in range(2):
                await get(pool, url)
            assert upstream.connections == 5
    finally:
        await pool.close()


async def test_no_idle_connection_kept_when_the_cap_is_zero() -> None:
    """max_idle_per_host=0: every connection closes once its response is read."""
    pool = Pool(max_idle_per_host=0)
    upstream = Upstream(answer(length_head(2) + b"ok"))
    try:
        async with upstream as url:
            for _ in range(2):
                await get(pool, url)
            await asyncio.wait_for(upstream.peers[0].eof.wait(), WAIT_S)
            assert upstream.connections == 2
    finally:
        await pool.close()


@pytest.mark.parametrize(
    "stray",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstale", b"garbage\r\n\r\n"],
    ids=["second-response", "garbage"],
)
async def test_bytes_after_a_complete_response_keep_it_out_of_the_pool(
    pool: Pool, stray: bytes
) -> None:
    """Bytes after a complete answer in the same write (a stray second response, garbage)
    do not poison the next request: it gets its own answer."""

    async def script(peer: Peer) -> bool:
        if len(peer.requests) == 1 and len(upstream.peers) == 1:
            await peer.send(length_head(2) + b"ok" + stray)
        else:
            await peer.send(length_head(4) + b"good")
        return True

    upstream = Upstream(script)
    async with upstream as url:
        assert (await get(pool, url))[1] == b"ok"
        resp, body = await get(pool, url)
        assert (resp.status, body) == (200, b"good")


async def test_idle_connection_given_unsolicited_bytes_is_not_reused(pool: Pool) -> None:
    """An idle pooled connection that receives bytes nobody asked for (a 408 before a
    keep-alive close) is dropped: the next request gets its own answer elsewhere."""

    async def script(peer: Peer) -> bool:
        await peer.send(length_head(2) + b"ok")
        if len(upstream.peers) == 1:
            await asyncio.sleep(0.05)
            await peer.send(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        return True

    upstream = Upstream(script)
    async with upstream as url:
        assert (await get(pool, url))[1] == b"ok"
        await asyncio.sleep(0.2)
        resp, body = await get(pool, url)
        assert (resp.status, body, upstream.connections) == (200, b"ok", 2)


async def test_response_closed_with_its_body_buffered_unread_leaves_a_usable_pool(
    pool: Pool,
) -> None:
    """A response closed while its whole body (past HIGH_WATER, so reading paused) sits
    unread: the next request on that upstream is answered (the pooled connection reads)."""
    big = b"y" * (HIGH_WATER + 1000)

    async def script(peer: Peer) -> bool:
        first = len(upstream.requests) == 1
        await peer.send(length_head(len(big)) + big if first else length_head(2) + b"ok")
        return True

    upstream = Upstream(script)
    async with upstream as url:
        resp = await pool.request("GET", url, [])
        await asyncio.sleep(0.2)  # the whole body arrives, nobody reads it
        resp.close()
        resp, body = await get(pool, url)
        assert (resp.status, body) == (200, b"ok")


# -- errors ----------------------------------------------------------------------------


async def test_connection_refused_names_host_and_port(pool: Pool) -> None:
    """A refused connection is an UpstreamError naming host:port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UpstreamError, match=rf"cannot connect to 127\.0\.0\.1:{port}"):
        await pool.request("GET", URL(f"http://127.0.0.1:{port}/"), [])


async def test_connect_timeout() -> None:
    """A connect that gets no answer (loopback listener with a full backlog: SYNs dropped)
    fails after connect_timeout_s with an UpstreamError saying so."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    pool = Pool(connect_timeout_s=0.3)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(2):  # fill the accept queue; the next SYNs go unanswered
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        start = time.monotonic()
        with pytest.raises(UpstreamError, match=r"127\.0\.0\.1:\d+: no answer within 0\.3 s"):
            await pool.request("GET", URL(f"http://127.0.0.1:{port}/"), [])
        assert 0.25 <= time.monotonic() - start < 3.0
    finally:
        await pool.close()
        for s in [*fillers, listener]:
            s.close()


async def test_cancelled_head_wait_closes_the_connection(pool: Pool) -> None:
    """A request cancelled while waiting for a head that never comes closes its connection
    (upstream sees EOF) and pools nothing."""

    async def silent(peer: Peer) -> bool:
        await peer.reader.read()
        peer.eof.set()
        return False

    upstream = Upstream(silent)
    async with upstream as url:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pool.request("GET", url, []), 0.2)
        await asyncio.wait_for(upstream.peers[0].eof.wait(), WAIT_S)


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"], ids=["nothing", "half"])
async def test_close_before_head_is_upstream_error(pool: Pool, sent: bytes) -> None:
    """Upstream closing before its head ended is an UpstreamError (not a body error)."""
    async with Upstream(answer(sent, keep=False)) as url:
        with pytest.raises(UpstreamError, match="before its response head") as info:
            await asyncio.wait_for(pool.request("GET", url, []), WAIT_S)
    assert not isinstance(info.value, BodyError)


async def test_garbage_head_is_bad_http(pool: Pool) -> None:
    """A head that is not HTTP is an UpstreamError saying bad HTTP."""
    async with Upstream(answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as url:
        with pytest.raises(UpstreamError, match="bad HTTP from upstream"):
            await asyncio.wait_for(pool.request("GET", url, []), WAIT_S)


async def test_endless_head_is_refused_with_bounded_reading(pool: Pool) -> None:
    """A header line that never ends is refused past MAX_HEAD_BYTES and the connection
    closed: the upstream cannot make the client read on."""
    sent = 0
    stopped = asyncio.Event()

    async def endless(peer: Peer) -> bool:
        nonlocal sent
        peer.writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        try:
            while sent < 256 * 1024 * 1024:
                peer.writer.write(b"a" * 65536)
                sent += 65536
                await peer.writer.drain()
        finally:
            stopped.set()
        return False

    async with Upstream(endless) as url:
        with pytest.raises(UpstreamError, match=f"passed {MAX_HEAD_BYTES} bytes"):
            await asyncio.wait_for(pool.request("GET", url, []), WAIT_S)
        await asyncio.wait_for(stopped.wait(), WAIT_S)
    # What sits in loopback's socket buffers at most, not the 256 MiB on offer.
    assert sent < 32 * 1024 * 1024


async def test_cut_mid_chunk_gives_the_bytes_then_body_error(pool: Pool) -> None:
    """A chunked body cut mid-chunk: read() returns every byte before the cut, then raises
    BodyError."""
    wire = (
        chunked(BODY[:500], (100,))[:-5] + b"64\r\n" + BODY[500:550]
    )  # a 100-byte chunk, half sent
    async with Upstream(answer(CHUNKED_HEAD, wire[:-1], wire[-1:], keep=False)) as url:
        resp = await pool.request("GET", url, [])
        got = []
        with pytest.raises(BodyError):
            while data := await asyncio.wait_for(resp.read(), WAIT_S):
                got.append(data)
        resp.close()
    assert b"".join(got) == BODY[:550]


async def test_short_of_content_length_is_body_error(pool: Pool) -> None:
    """A body ending short of its Content-Length: the bytes sent, then BodyError."""
    async with Upstream(answer(length_head(100), b"0123456789", keep=False)) as url:
        resp = await pool.request("GET", url, [])
        got = []
        with pytest.raises(BodyError, match="before the body ended"):
            while data := await asyncio.wait_for(resp.read(), WAIT_S):
                got.append(data)
        resp.close()
    assert b"".join(got) == b"0123456789"


# -- the request -----------------------------------------------------------------------


async def test_request_goes_with_exactly_the_given_headers(pool: Pool) -> None:
    """The request goes with the given headers in order, plus Host and Content-Length:
    nothing else (no User-Agent, Accept-Encoding...), and a given Transfer-Encoding is dropped."""
    upstream = Upstream(answer(length_head(2) + b"ok"))
    headers = [("X-A", "1"), ("accept", "text/event-stream"), ("X-A", "2")]
    async with upstream as url:
        for body in (None, b'{"a":1}'):
            h = [*headers, ("Transfer-Encoding", "chunked")] if body else headers
            resp = await pool.request("POST" if body else "GET", url, h, body)
            await read_all(resp)
            resp.close()
    host = f"127.0.0.1:{url.port}".encode()
    common = b"X-A: 1\r\naccept: text/event-stream\r\nX-A: 2\r\nHost: " + host + b"\r\n"
    assert upstream.requests == [
        b"GET /v1/chat?stream=1 HTTP/1.1\r\n" + common + b"\r\n",
        b"POST /v1/chat?stream=1 HTTP/1.1\r\n" + common + b'Content-Length: 7\r\n\r\n{"a":1}',
    ]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://example.com/", "example.com"),
        ("http://example.com:80/", "example.com"),
        ("https://example.com:443/", "example.com"),
        ("https://example.com:8443/", "example.com:8443"),
        ("http://example.com:443/", "example.com:443"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("https://[2001:db8::1]/", "[2001:db8::1]"),
    ],
)
def test_host_header_formats(url: str, host: str) -> None:
    """Host carries a non-default port only, and an IPv6 literal in brackets."""
    head, chunked = _request_head("GET", URL(url), [], None)
    assert head == f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() and not chunked


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="::1 cannot bind here (head builder tested)")
async def test_ipv6_upstream_gets_a_bracketed_host(pool: Pool) -> None:
    """Over ::1 the request connects and says Host: [::1]:port."""
    upstream = Upstream(answer(length_head(2) + b"ok"), host="::1")
    async with upstream as url:
        assert (await get(pool, url))[1] == b"ok"
    assert f"\r\nHost: [::1]:{url.port}\r\n".encode() in upstream.requests[0]


@pytest.mark.parametrize(
    "header",
    [("X-A", "1\r\nX-Smuggled: 1"), ("X-A", "1\nGET / HTTP/1.1"), ("X-A", "1\r"), ("X\r\nB", "1")],
)
async def test_header_line_break_is_refused_and_nothing_sent(
    pool: Pool, header: tuple[str, str]
) -> None:
    """A header name or value with CR or LF is an UpstreamError before any connection."""
    upstream = Upstream(answer(length_head(2) + b"ok"))
    async with upstream as url:
        with pytest.raises(UpstreamError, match="line break"):
            await pool.request("GET", url, [header])
        await asyncio.sleep(0.05)
    assert upstream.connections == 0


async def _pieces(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece


async def test_iterable_body_goes_chunked_byte_exact(pool: Pool) -> None:
    """An async-iterable body goes chunked, one chunk per non-empty piece (an empty piece
    does not end it early), large pieces included."""
    big = bytes(range(256)) * 300
    upstream = Upstream(answer(length_head(2) + b"ok"))
    async with upstream as url:
        body = _pieces(b"hel", b"", b"lo", big)
        resp = await pool.request("POST", url, [("X-A", "1")], body)
        assert await read_all(resp) == b"ok"
        resp.close()
    head, _, wire = upstream.requests[0].partition(b"\r\n\r\n")
    assert head.endswith(
        b"\r\nX-A: 1\r\nHost: " + url.raw_authority.encode() + b"\r\nTransfer-Encoding: chunked"
    )
    assert wire == b"3\r\nhel\r\n2\r\nlo\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(big), big)


async def test_iterable_body_with_content_length_goes_raw(pool: Pool) -> None:
    """With a Content-Length given, an async-iterable body goes as it is, unframed."""
    upstream = Upstream(answer(length_head(2) + b"ok"))
    async with upstream as url:
        resp = await pool.request("PUT", url, [("Content-Length", "5")], _pieces(b"he", b"llo"))
        assert await read_all(resp) == b"ok"
        resp.close()
    head, _, wire = upstream.requests[0].partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"\r\nContent-Length: 5" in head
    assert wire == b"hello"


# -- arrival stamps --------------------------------------------------------------------


async def test_head_at_is_when_the_first_head_bytes_arrived() -> None:
    """head_at is the arrival of the head's first bytes on the pool's clock, not when the
    head ended nor when request() returned."""
    offset = 1000.0
    pool = Pool(now=lambda: time.monotonic() + offset)
    sent_at: list[float] = []

    async def script(peer: Peer) -> bool:
        sent_at.append(time.monotonic() + offset)
        await peer.send(b"HTTP/1.1 200 OK\r\n", length_head(2)[17:] + b"ok", gap_s=0.4)
        return True

    try:
        async with Upstream(script) as url:
            resp = await pool.request("GET", url, [])
            returned = time.monotonic() + offset
            await asyncio.sleep(0.2)  # a late reader changes nothing
            assert 0 <= resp.head_at - sent_at[0] < 0.2
            assert returned - resp.head_at >= 0.3
            resp.close()
    finally:
        await pool.close()


async def test_received_is_the_arrival_of_the_oldest_bytes_read(pool: Pool) -> None:
    """After read(), received is when the oldest of its bytes arrived: bytes that waited
    0.5 s unread count from their arrival, not from the read, nor from later bytes."""

    async def script(peer: Peer) -> bool:
        await peer.send(length_head(10) + b"first", gap_s=0.25)
        await peer.send(b"again")
        return True

    async with Upstream(script) as url:
        resp = await pool.request("GET", url, [])
        await asyncio.sleep(0.5)  # the reader does nothing while both pieces arrive
        data = await resp.read()
        waited = time.monotonic() - resp.received
        resp.close()
    assert data == b"firstagain"
    assert 0.45 <= waited < 3.0  # the later bytes would say about 0.25


def _busy(seconds: float) -> None:
    """Keep the event loop from running (called from a coroutine, on purpose)."""
    time.sleep(seconds)


async def _late_loop_stamps(kernel_stamps: bool) -> tuple[bytes, float, float, float]:
    """The loop is busy 200 ms while the head and first body bytes come in, then again
    while the rest does: (body, head_at, first and second read's received), each less
    the time upstream sent those bytes."""
    listener = socket.create_server(("127.0.0.1", 0))
    go = [threading.Event(), threading.Event()]
    sent: list[float] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            recv_head(conn)
            for event, data in zip(go, (length_head(10) + b"hello", b"world"), strict=True):
                event.wait(5)
                sent.append(time.monotonic())
                conn.sendall(data)
            time.sleep(0.3)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    pool = Pool()
    port = listener.getsockname()[1]
    try:
        url = URL(f"http://127.0.0.1:{port}/")
        task = asyncio.ensure_future(pool.request("GET", url, [], kernel_stamps=kernel_stamps))
        await asyncio.sleep(0.1)  # the request is out; upstream waits for go
        go[0].set()
        _busy(0.2)  # the loop is busy while the response comes in
        resp = await task
        first = await resp.read()
        head_late, first_late = resp.head_at - sent[0], resp.received - sent[0]
        go[1].set()
        _busy(0.2)
        second = await resp.read()
        second_late = resp.received - sent[1]
        resp.close()
    finally:
        await pool.close()
        await asyncio.to_thread(thread.join, 5)
        listener.close()
    return first + second, head_late, first_late, second_late


@pytest.mark.parametrize("kernel_stamps", [False, True], ids=["loop", "kernel"])
async def test_kernel_stamps_say_when_the_bytes_came_not_when_the_loop_read_them(
    kernel_stamps: bool,
) -> None:
    """With kernel_stamps, head_at and the first read's received are when the bytes
    came (within a kernel tick), else when the busy loop got to them. Only the first
    body bytes are stamped so: a later read that waited is stamped when it was read."""
    body, head_late, first_late, second_late = await _late_loop_stamps(kernel_stamps)
    assert body == b"helloworld"
    if kernel_stamps:
        assert -0.02 < head_late < 0.1, head_late
        assert -0.02 < first_late < 0.1, first_late
    else:
        assert head_late >= 0.15 and first_late >= 0.15, (head_late, first_late)
    assert second_late >= 0.15, second_late


def test_kernel_stamps_on_uvloop() -> None:
    """uvloop's transports give the socket the kernel is asked about too."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        body, head_late, first_late, second_late = runner.run(_late_loop_stamps(True))
    assert body == b"helloworld"
    assert -0.02 < head_late < 0.1 and -0.02 < first_late < 0.1, (head_late, first_late)
    assert second_late >= 0.15, second_late


# -- pipe ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pieces",
    [
        cut(CHUNKED_HEAD + chunked(BODY), (1, 30, 2, 700)),
        cut(length_head(len(BODY)) + BODY, (90, 1, 333)),
    ],
    ids=["chunked", "length"],
)
async def test_pipe_delivers_every_byte_in_order(pool: Pool, pieces: list[bytes]) -> None:
    """pipe() hands every byte to the sink, in order, many pieces for one await; the
    piece the body ends with says so, and only that one."""
    got: list[bytes] = []
    lasts: list[bool] = []

    def sink(data: bytes, last: bool) -> int:
        got.append(data)
        lasts.append(last)
        return 0

    async with Upstream(answer(pieces[0], *pieces[1:], gap_s=0.001)) as url:
        resp = await pool.request("GET", url, [])
        assert await asyncio.wait_for(resp.pipe(sink), WAIT_S) is False
        resp.close()
    assert b"".join(got) == BODY and resp.at_eof() and len(got) > 1
    assert lasts[-1] and not any(lasts[:-1]), lasts


def _pattern(i: int) -> bytes:
    return hashlib.sha256(b"%d" % i).digest() * 2048  # 64 KiB, each one different


async def test_pipe_pause_stops_upstream_reading_and_pipe_resumes(pool: Pool) -> None:
    """A sink saying PAUSE makes pipe() return True and stops reading: a fast 64 MiB body
    backs up at the upstream while the client holds little; pipe() again resumes, and
    every byte arrives in order."""
    pieces = 1024
    written = 0

    async def blast(peer: Peer) -> bool:
        nonlocal written
        peer.writer.write(length_head(pieces * 65536))
        await peer.writer.drain()
        await asyncio.sleep(0.05)
        for i in range(pieces):
            peer.writer.write(_pattern(i))
            written += 65536
            await peer.writer.drain()
        return True

    got = hashlib.sha256()
    held = 0

    def pausing(data: bytes, last: bool) -> int:
        nonlocal held
        held += len(data)
        got.update(data)
        return PAUSE

    def taking(data: bytes, last: bool) -> int:
        got.update(data)
        return 0

    upstream = Upstream(blast)
    async with upstream as url:
        resp = await pool.request("GET", url, [])
        assert await asyncio.wait_for(resp.pipe(pausing), WAIT_S) is True
        await asyncio.sleep(0.3)
        held_then, written_then = held, written
        await asyncio.sleep(0.2)
        assert (held, written) == (held_then, written_then)  # nobody moves while paused
        assert held < 1024 * 1024 and written < 32 * 1024 * 1024
        assert upstream.peers[0].writer.transport.get_write_buffer_size() > 0
        assert await asyncio.wait_for(resp.pipe(taking), WAIT_S * 2) is False
        resp.close()
    want = hashlib.sha256()
    for i in range(pieces):
        want.update(_pattern(i))
    assert got.hexdigest() == want.hexdigest()


async def test_pipe_pause_on_the_last_piece_leaves_a_usable_connection(pool: Pool) -> None:
    """A sink that PAUSEs on the body's last piece: the next pipe() reports the end and
    the pooled connection serves the next request (its reading was resumed)."""

    async def script(peer: Peer) -> bool:
        await peer.send(length_head(5), b"hello", gap_s=0.05)
        return True

    upstream = Upstream(script)
    async with upstream as url:
        resp = await pool.request("GET", url, [])
        assert await asyncio.wait_for(resp.pipe(lambda data, last: PAUSE), WAIT_S) is True
        assert await asyncio.wait_for(resp.pipe(lambda data, last: PAUSE), WAIT_S) is False
        resp.close()
        resp, body = await get(pool, url)
        assert body == b"hello"


async def test_pipe_stop_hands_the_rest_to_read(pool: Pool) -> None:
    """A sink saying STOP ends the pipe (False); read() then returns the rest, in order."""
    got: list[bytes] = []

    def once(data: bytes, last: bool) -> int:
        got.append(data)
        return STOP

    pieces = cut(chunked(BODY), (40, 1, 200))
    async with Upstream(answer(CHUNKED_HEAD, *pieces, gap_s=0.002)) as url:
        resp = await pool.request("GET", url, [])
        assert await asyncio.wait_for(resp.pipe(once), WAIT_S) is False
        rest = await read_all(resp)
        resp.close()
    assert len(got) == 1 and got[0] + rest == BODY


async def test_pipe_raises_what_the_sink_raised(pool: Pool) -> None:
    """A sink raising ConnectionResetError (the client left) makes pipe() raise it, and
    upstream's connection is closed."""
    calls = 0

    def leaving(data: bytes, last: bool) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionResetError("client gone")
        return 0

    upstream = Upstream(answer(CHUNKED_HEAD, *cut(chunked(BODY), (300,)), gap_s=0.02))
    async with upstream as url:
        resp = await pool.request("GET", url, [])
        with pytest.raises(ConnectionResetError, match="client gone"):
            await asyncio.wait_for(resp.pipe(leaving), WAIT_S)
        resp.close()
        await asyncio.wait_for(upstream.peers[0].done.wait(), WAIT_S)
    assert calls == 2


async def test_pipe_cut_mid_body_delivers_then_raises_body_error(pool: Pool) -> None:
    """A body cut mid-chunk: pipe() delivers every byte before the cut, then raises
    BodyError."""
    got: list[bytes] = []
    wire = chunked(BODY[:300], (100,))[:-5] + b"64\r\n" + BODY[300:340]
    async with Upstream(answer(CHUNKED_HEAD, *cut(wire, (33,)), keep=False, gap_s=0.001)) as url:
        resp = await pool.request("GET", url, [])
        with pytest.raises(BodyError):
            await asyncio.wait_for(resp.pipe(collect(got)), WAIT_S)
        resp.close()
    assert b"".join(got) == BODY[:340]


async def test_pipe_delivers_bytes_buffered_before_it_first(pool: Pool) -> None:
    """Bytes that arrived before pipe() (read mode) go to the sink first, then the rest."""
    got: list[bytes] = []

    async def script(peer: Peer) -> bool:
        await peer.send(length_head(len(BODY)) + BODY[:100], BODY[100:], gap_s=0.2)
        return True

    async with Upstream(script) as url:
        resp = await pool.request("GET", url, [])
        await asyncio.sleep(0.05)  # the first 100 bytes wait in the buffer
        assert await asyncio.wait_for(resp.pipe(collect(got)), WAIT_S) is False
        resp.close()
    assert got[0] == BODY[:100] and b"".join(got) == BODY


# -- TLS -------------------------------------------------------------------------------


async def _tls_upstream(context: ssl.SSLContext) -> tuple[web.AppRunner, URL, set[object]]:
    peers: set[object] = set()

    async def events(request: web.Request) -> web.StreamResponse:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in cut(BODY, (1, 90, 7, 600)):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    return runner, URL(f"https://127.0.0.1:{runner.addresses[0][1]}/events"), peers


def _tls_server(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def _tls_bodies(pool_ssl: ssl.SSLContext | bool) -> tuple[list[bytes], int]:
    ca = trustme.CA()
    runner, url, peers = await _tls_upstream(_tls_server(ca))
    pool = Pool(ssl=pool_ssl)
    try:
        return [(await get(pool, url))[1] for _ in range(2)], len(peers)
    finally:
        await pool.close()
        await runner.cleanup()


async def test_tls_upstream_trusted_by_context_is_pooled() -> None:
    """HTTPS to an upstream whose CA the pool's context trusts: byte-exact, one connection."""
    ca = trustme.CA()
    client = ssl.create_default_context()
    ca.configure_trust(client)
    runner, url, peers = await _tls_upstream(_tls_server(ca))
    pool = Pool(ssl=client)
    try:
        bodies = [(await get(pool, url))[1] for _ in range(2)]
    finally:
        await pool.close()
        await runner.cleanup()
    assert (bodies, len(peers)) == ([BODY, BODY], 1)


async def test_tls_insecure_pool_skips_verification() -> None:
    """Pool(ssl=False) accepts a certificate nobody trusts (--insecure)."""
    assert await _tls_bodies(False) == ([BODY, BODY], 1)


async def test_tls_default_pool_refuses_an_untrusted_certificate() -> None:
    """The default Pool() verifies: an untrusted certificate is an UpstreamError."""
    with pytest.raises(UpstreamError, match=r"127\.0\.0\.1:\d+: .*certificate verify failed"):
        await _tls_bodies(True)


# -- uvloop ----------------------------------------------------------------------------


async def _uvloop_scenario() -> tuple[bytes, bytes, int]:
    upstream = Upstream(answer(*cut(CHUNKED_HEAD + chunked(BODY), (1, 3, 700))))
    pool = Pool()
    try:
        async with upstream as url:
            read = (await get(pool, url))[1]
            got: list[bytes] = []
            resp = await pool.request("GET", url, [])
            await asyncio.wait_for(resp.pipe(collect(got)), WAIT_S)
            resp.close()
            return read, b"".join(got), upstream.connections
    finally:
        await pool.close()


def test_read_and_pipe_on_uvloop() -> None:
    """On uvloop's transports a chunked body reads and pipes byte-exact, pooled."""
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(_uvloop_scenario()) == (BODY, BODY, 1)
    finally:
        loop.close()
