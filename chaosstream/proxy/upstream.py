"""HTTP/1.1 to upstream on asyncio protocols: the data path's own client (issue 17).

The proxy asks three things of its upstream client: send a request and return
once the response head is in; hand the body over read by read, each read stamped
with when its bytes reached the socket (timing faults count from there); or, when
no fault acts on the body, pass it to the client from the socket callback itself.
aiohttp's client does the first two through a ``ClientRequest``, a connector, a
``ResponseHandler`` and a ``StreamReader`` per stream; at 3,000 streams its share
was about a sixth of the proxy's CPU, and the clean body needed a protocol slipped
under aiohttp's to skip a task step per read. Here one :class:`asyncio.Protocol`
per connection does all three, with llhttp (``httptools``, the parser uvicorn uses)
undoing chunked and length framing.

What is kept from aiohttp's client: a keep-alive pool without a cap (a finished
body returns its connection for 15 s), a connect timeout, TLS with SNI, bodies as
bytes or an async iterable (chunked unless a Content-Length is given), both-way
flow control. What the proxy never needs is left out: redirects, cookies, proxies,
auto headers (the request goes with exactly the headers given, plus Host and the
body's length) and content decoding (the proxy decodes where a fault needs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
import struct
import sys
import time
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Final, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = ["PAUSE", "STOP", "BodyError", "Pool", "Response", "Sink", "UpstreamError"]

#: What a :data:`Sink` returns to stop upstream reading until :meth:`Response.pipe`
#: is called again (the client's buffer is full).
PAUSE: Final = 1
#: What a :data:`Sink` returns to take no more: the rest of the body waits for
#: :meth:`Response.read`.
STOP: Final = 2
#: Called from the socket callback with each piece of the body (framing removed) and
#: whether the body ends with it (the read held the end of the message: the client's
#: response can end in the same send); returns 0 (more), :data:`PAUSE` or
#: :data:`STOP`. What it raises ends the pipe.
Sink = Callable[[bytes, bool], int]

#: A response head past this many bytes is refused: aiohttp's client allows 8,190
#: per line; a head that never ends (a hostile upstream) must not grow without bound.
MAX_HEAD_BYTES = 64 * 1024
#: Body bytes buffered for :meth:`Response.read` before upstream reading pauses
#: (aiohttp's StreamReader pauses at twice its 64 KiB limit).
HIGH_WATER = 256 * 1024
#: An idle pooled connection is closed after this long (aiohttp's keep-alive default).
KEEPALIVE_S = 15.0
#: Idle connections kept per upstream host: a burst of 3,000 streams must not leave
#: 3,000 sockets (and the upstream's resources behind them) open for KEEPALIVE_S.
MAX_IDLE_PER_HOST = 256
#: Bodies that are requests' own (no Content-Length given) are sent chunked; the rest
#: of these methods send ``Content-Length: 0`` without a body, as aiohttp does.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Linux's ``struct tcp_info`` (linux/tcp.h, stable since 2.6): ``tcpi_last_data_recv``,
#: milliseconds since the socket's last data segment came in, is the u32 at byte 52.
_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_LAST_DATA_RECV = struct.Struct("=I")
_LAST_DATA_RECV_AT = 52
#: The bytes of it asked for: its size in Linux 2.6, enough to reach that field.
_TCP_INFO_LEN = 104


class UpstreamError(Exception):
    """Upstream could not be reached, or broke its connection or head before the body."""


class BodyError(UpstreamError):
    """Upstream broke the body: cut mid-chunk, short of its Content-Length, bad framing."""


class _Connection(asyncio.Protocol):
    """One upstream connection: the parser's callbacks fill the response it serves."""

    __slots__ = (
        "_drain",
        "_paused_writing",
        "expiry",
        "key",
        "lost",
        "now",
        "parser",
        "pieces",
        "read_at",
        "resp",
        "transport",
    )

    def __init__(self, key: tuple[str, int, bool], now: Callable[[], float]) -> None:
        self.key = key
        self.now = now
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.resp: Response | None = None
        #: The body pieces of the read being parsed: handed over as one, so a read
        #: leaves in one client write however many chunks it held.
        self.pieces: list[bytes] = []
        #: When the bytes of the read being parsed reached the socket.
        self.read_at = 0.0
        self.lost = False
        self.expiry: asyncio.TimerHandle | None = None
        self._paused_writing = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:  # bytes nobody asked for on an idle connection: not reusable
            self.lost = True
            if self.transport is not None:
                self.transport.close()
            return
        # Every read is stamped (one clock call): a pipe may hand the rest to read().
        at = self.now()
        if resp._kernel_stamps:
            at = _arrived(self.transport, at)
        self.read_at = at
        if not resp._head_done:
            if not resp._head_bytes:
                resp.head_at = at
            resp._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.flush(resp)
            resp._fail(UpstreamError("upstream switched protocols on a plain HTTP request"))
        except httptools.HttpParserError as e:
            self.flush(resp)
            resp._fail(_bad(resp, f"bad HTTP from upstream: {_reason(e)}"))
        else:
            if self.pieces:
                self.flush(resp)
            if not resp._head_done and resp._head_bytes > MAX_HEAD_BYTES:
                resp._fail(UpstreamError(f"upstream's response head passed {MAX_HEAD_BYTES} bytes"))

    def flush(self, resp: Response, last: bool = False) -> None:
        """Hand the read's body pieces to the response, as one (``last``: the body's end)."""
        pieces = self.pieces
        if pieces:
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            resp._body(data, last)

    def eof_received(self) -> bool | None:
        self._ended()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self._ended(exc)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(UpstreamError("upstream closed the connection"))

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drain(self) -> None:
        """Wait while upstream's buffer is full (a large request body)."""
        if self._paused_writing and not self.lost:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None
        if self.lost:
            raise UpstreamError("upstream closed the connection while the request was sent")

    def _ended(self, exc: Exception | None = None) -> None:
        resp = self.resp
        if resp is None or resp._done or resp._error is not None:
            return
        if not resp._head_done:
            why = f": {exc}" if exc else ""
            resp._fail(
                UpstreamError(f"upstream closed the connection before its response head{why}")
            )
        elif resp._close_delimited:
            # RFC 9112 6.3 item 8: without a length or chunked coding the body ends
            # where the connection does; llhttp cannot tell that end from a cut.
            resp._complete(reusable=False)
        else:
            resp._fail(BodyError("upstream closed the connection before the body ended"))

    # -- httptools callbacks -------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        resp = self.resp
        if resp is not None:
            resp._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self.resp
        if resp is not None:
            resp._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        resp = self.resp
        if resp is None:
            return
        if resp._head_done:  # a second response to one request: not HTTP/1.1
            resp._fail(BodyError("upstream sent a response nobody asked for"))
            return
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200:
            # An interim response (100 Continue, 103 Early Hints): the final one follows.
            resp._reason = b""
            resp._raw_headers = []
            return
        resp._head(status, parser.should_keep_alive())

    def on_body(self, data: bytes) -> None:
        resp = self.resp
        if data and resp is not None and not resp._done:  # not a stray response's body
            self.pieces.append(data)

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is not None and resp._head_done and not resp._done:
            self.flush(resp, True)  # the body's last bytes before its end
            if resp._error is None:  # a sink that raised on them ended the body already
                resp._complete(resp._keep_alive)


class Response:
    """One upstream response: its head, then its body read by read or piped."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_close_delimited",
        "_conn",
        "_done",
        "_error",
        "_head_bytes",
        "_head_done",
        "_head_method",
        "_keep_alive",
        "_kernel_stamps",
        "_paused",
        "_pool",
        "_raw_headers",
        "_reason",
        "_sink",
        "_waiter",
        "head_at",
        "headers",
        "reason",
        "received",
        "status",
    )

    def __init__(
        self, conn: _Connection, pool: Pool, method: str, kernel_stamps: bool = False
    ) -> None:
        self._conn: _Connection | None = conn
        self._pool = pool
        self._head_method = method == "HEAD"
        self._reason = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._head_done = False
        self._keep_alive = False
        self._close_delimited = False
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._paused = False
        self._sink: Sink | None = None
        self._waiter: asyncio.Future[bool] | None = None
        # Until the first body bytes are in: reads stamped with the kernel's arrival time.
        self._kernel_stamps = kernel_stamps
        #: The status code and reason phrase of the final response.
        self.status = 0
        self.reason = ""
        #: The response's header fields, as upstream sent them.
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        #: When the response's first bytes reached the socket (the proxy's clock).
        self.head_at = 0.0
        #: When the oldest bytes of the last :meth:`read` reached the socket.
        self.received = 0.0

    # -- what the proxy asks -----------------------------------------------------------

    def at_eof(self) -> bool:
        """The body ended as its framing says and every byte of it was handed out."""
        return self._done and not self._buffer

    async def read(self) -> bytes:
        """The body's next bytes as they came (framing removed); ``b""`` at its end.

        Raises :class:`BodyError` once the bytes before a cut are handed out.
        """
        while True:
            if self._buffer:
                return self._take()
            if self._done:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    def read_nowait(self) -> bytes:
        """What is buffered now (``b""``: nothing yet, or the end)."""
        return self._take() if self._buffer else b""

    async def pipe(self, sink: Sink) -> bool:
        """Hand every piece of the body to ``sink`` from the socket callback, no task
        step per read. Returns False once the body ended or ``sink`` said :data:`STOP`,
        True when it said :data:`PAUSE` (call again once the client drained: reading
        resumes then). Raises what ``sink`` raised, or :class:`BodyError`."""
        conn = self._conn
        if self._buffer:  # what came before the pipe goes first, in order
            verdict = sink(self._take(), self._done)
            if verdict == STOP:
                return False
            if verdict == PAUSE:
                return True
        if self._done:
            return False
        if self._error is not None:
            raise self._error
        if conn is None:
            raise BodyError("upstream connection gone before the body ended")
        self._sink = sink
        self._kernel_stamps = False  # body bytes were handed out: the rest go as read
        try:
            return await self._wait()
        finally:
            self._sink = None

    def close(self) -> None:
        """Let go of the connection: back to the pool when the body ended cleanly and
        upstream keeps connections alive, else closed (a client that left mid-stream
        closes upstream's stream too)."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        conn.resp = None
        if self._done and self._keep_alive and self._error is None:
            if self._paused and conn.transport is not None:
                conn.transport.resume_reading()  # paused by a sink or HIGH_WATER
            self._pool._release(conn)
        elif conn.transport is not None:
            conn.transport.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(BodyError("upstream response closed"))

    # -- filled by the connection --------------------------------------------------

    def _head(self, status: int, keep_alive: bool) -> None:
        self.status = status
        self.reason = self._reason.decode("latin-1")
        headers: CIMultiDict[str] = CIMultiDict()
        length = chunked = False
        for name, value in self._raw_headers:
            key = name.decode("utf-8", "surrogateescape")
            headers.add(key, value.decode("utf-8", "surrogateescape"))
            lower = name.lower()
            if lower == b"content-length":
                length = True
            elif lower == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        self._raw_headers = []
        self.headers = CIMultiDictProxy(headers)
        self._keep_alive = keep_alive and not self._head_method
        # RFC 9112 6.3: 204, 304 and a HEAD's answer have no body; llhttp knows the
        # first two, only the proxy knows the method.
        bodiless = status in (204, 304) or self._head_method
        self._close_delimited = not (length or chunked or bodiless)
        self._head_done = True
        if self._head_method:
            self._complete(reusable=False)
        self._settle(True)

    def _body(self, data: bytes, last: bool = False) -> None:
        sink = self._sink
        if sink is not None:
            try:
                verdict = sink(data, last)
            except BaseException as e:  # the client is gone: the pipe raises it
                self._sink = None
                self._fail(e)
                return
            if verdict == PAUSE:
                if not self._paused and self._conn is not None:
                    self._paused = True
                    assert self._conn.transport is not None
                    self._conn.transport.pause_reading()
                self._settle(True)
            elif verdict == STOP:
                self._sink = None
                self._settle(False)
            return
        if not data:
            return
        self._kernel_stamps = False  # the first body bytes are stamped: enough
        conn = self._conn
        if not self._buffer and conn is not None:
            # The oldest bytes not handed out: what read() returns next counts from here.
            self.received = conn.read_at
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._paused and conn is not None:
            self._paused = True
            assert conn.transport is not None
            conn.transport.pause_reading()
        self._settle(True)

    def _complete(self, reusable: bool) -> None:
        self._done = True
        self._keep_alive = self._keep_alive and reusable
        self._settle(False)

    def _fail(self, error: BaseException) -> None:
        if self._done:  # bytes after a complete response: its connection is not reusable
            self._keep_alive = False
            return
        if self._error is not None:
            return
        self._error = error
        self._keep_alive = False
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.transport.close()
        self._settle(False)

    # -- waiting -----------------------------------------------------------------------

    def _take(self) -> bytes:
        buffer = self._buffer
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        self._buffered = 0
        conn = self._conn
        if conn is not None and self._paused and self._sink is None:
            self._paused = False
            if conn.transport is not None and not conn.lost:
                conn.transport.resume_reading()
        return data

    async def _wait(self) -> bool:
        conn = self._conn
        if self._paused and conn is not None and conn.transport is not None and not conn.lost:
            self._paused = False
            conn.transport.resume_reading()
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            paused = await waiter
        finally:
            self._waiter = None
        if self._error is not None and not self._buffer:
            raise self._error
        return paused and self._sink is not None and self._paused

    def _settle(self, paused: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(paused)


class Pool:
    """Connections to upstreams, kept alive between requests: no cap on how many are in
    use, at most ``max_idle_per_host`` idle per host (the oldest goes first)."""

    def __init__(
        self,
        ssl: ssl_module.SSLContext | bool = True,
        *,
        connect_timeout_s: float | None = 10.0,
        keepalive_s: float = KEEPALIVE_S,
        max_idle_per_host: int = MAX_IDLE_PER_HOST,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ssl``: a context, True for the default verifying one, False to verify
        nothing (``--insecure``). ``now`` is the clock arrival stamps are read on."""
        if ssl is True:
            ssl = ssl_module.create_default_context()
        elif ssl is False:
            ssl = ssl_module.create_default_context()
            ssl.check_hostname = False
            ssl.verify_mode = ssl_module.CERT_NONE
        self._ssl = ssl
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._max_idle = max_idle_per_host
        self._now = now
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._closed = False

    async def request(
        self,
        method: str,
        url: URL,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None = None,
        *,
        kernel_stamps: bool = False,
    ) -> Response:
        """Send a request and return once the final response head is in.

        ``headers`` go as given (hop-by-hop ones are the caller's to drop), plus
        ``Host`` unless given, and ``Content-Length`` for a bytes body; an iterable
        body without a Content-Length goes chunked. Raises :class:`UpstreamError`.

        With ``kernel_stamps``, the reads up to the first body bytes (``head_at``, and
        ``received`` of the first :meth:`Response.read`) are stamped with when the
        kernel got them, not when the loop got round to them: for a fault that holds
        the head or the first byte a set time (one ``getsockopt`` per such read).
        """
        if self._closed:
            raise UpstreamError("the upstream pool is closed")
        head, chunked = _request_head(method, url, headers, body)
        secure = url.scheme == "https"
        host = url.raw_host or ""
        port = url.port or (443 if secure else 80)
        key = (host, port, secure)
        replayable = not isinstance(body, AsyncIterable)
        conn = self._take(key)
        if conn is not None and replayable:
            try:
                return await self._send(
                    conn, method, head, body, chunked, reused=True, kernel_stamps=kernel_stamps
                )
            except _Stale:
                pass  # upstream closed the idle connection as it was reused: a fresh one
        elif conn is not None:
            conn.transport.close()  # type: ignore[union-attr]
        conn = await self._connect(host, port, secure, key)
        try:
            return await self._send(conn, method, head, body, chunked, kernel_stamps=kernel_stamps)
        except _Stale as e:
            raise UpstreamError(str(e)) from None

    async def close(self) -> None:
        """Close every idle connection; open responses close theirs themselves."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                if conn.expiry is not None:
                    conn.expiry.cancel()
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()

    # -- connections -------------------------------------------------------------------

    def _take(self, key: tuple[str, int, bool]) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.expiry is not None:
                conn.expiry.cancel()
                conn.expiry = None
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def _release(self, conn: _Connection) -> None:
        if self._closed or conn.lost or conn.transport is None or conn.transport.is_closing():
            if conn.transport is not None:
                conn.transport.close()
            return
        if self._max_idle <= 0:
            conn.transport.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self._max_idle:
            # Connections are taken from the end (the warmest): the oldest goes.
            oldest = idle[0]
            if oldest.expiry is not None:
                oldest.expiry.cancel()
            self._expire(oldest)
            idle = self._idle.setdefault(conn.key, [])
        idle.append(conn)
        loop = asyncio.get_running_loop()
        conn.expiry = loop.call_later(self._keepalive_s, self._expire, conn)

    def _expire(self, conn: _Connection) -> None:
        conn.expiry = None
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._idle[conn.key]
        if conn.transport is not None:
            conn.transport.close()

    async def _connect(
        self, host: str, port: int, secure: bool, key: tuple[str, int, bool]
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        now = self._now
        connect = loop.create_connection(
            lambda: _Connection(key, now),
            host,
            port,
            ssl=self._ssl if secure else None,
            server_hostname=host if secure else None,
        )
        try:
            if sys.version_info >= (3, 11):
                # A timeout context: wait_for runs the connect in a task of its own on 3.11.
                async with asyncio.timeout(self._connect_timeout_s):
                    _, conn = await connect
            else:
                _, conn = await asyncio.wait_for(connect, self._connect_timeout_s)
        except asyncio.TimeoutError:
            raise UpstreamError(
                f"cannot connect to {host}:{port}: no answer within {self._connect_timeout_s:g} s"
            ) from None
        except (OSError, ssl_module.SSLError) as e:
            raise UpstreamError(f"cannot connect to {host}:{port}: {e}") from None
        return conn

    async def _send(
        self,
        conn: _Connection,
        method: str,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        chunked: bool,
        reused: bool = False,
        kernel_stamps: bool = False,
    ) -> Response:
        transport = conn.transport
        assert transport is not None
        resp = Response(conn, self, method, kernel_stamps)
        conn.resp = resp
        try:
            if isinstance(body, bytes) and len(body) <= 1 << 16:
                transport.write(head + body)  # one send for a chat request
            else:
                transport.write(head)
                if isinstance(body, bytes):
                    transport.write(body)
                elif body is not None:
                    await _send_iterable(conn, body, chunked)
            while not resp._head_done:
                if resp._error is not None:
                    if reused and resp._head_bytes == 0 and conn.lost:
                        raise _Stale(str(resp._error))
                    raise resp._error
                # An error is looked at on the loop's top: a stale pooled connection
                # is sent again there.
                with contextlib.suppress(UpstreamError):
                    await resp._wait()
            return resp
        except BaseException:
            # Cancelled (the head timeout, the client left) or failed: this connection's
            # state is unknown, so it goes.
            conn.resp = None
            resp._conn = None
            transport.close()
            raise


def _arrived(transport: asyncio.Transport | None, now: float) -> float:
    """When the socket's last bytes came in: ``now`` moved back by the age the kernel
    gives them (Linux's TCP_INFO), else ``now``.

    A loop busy with other sockets runs a read's callback late: with 1,000 streams
    starting together, 5-10 ms at the median (issue 17), which a delay counted from
    the callback adds to its setting. The kernel counts the age in ticks (4 ms at
    HZ=250), so a stamp may be up to a tick early or late, and is right on average:
    the trade :class:`~chaosstream.faults.base.SystemClock`'s early wake-ups make too,
    for delays that land on their setting instead of always after it.
    """
    sock = transport.get_extra_info("socket") if _TCP_INFO is not None and transport else None
    if sock is None:
        return now
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return now
    if len(info) < _LAST_DATA_RECV_AT + 4:
        return now
    age_ms: int = _LAST_DATA_RECV.unpack_from(info, _LAST_DATA_RECV_AT)[0]
    return now - age_ms / 1000.0


class _Stale(Exception):
    """A pooled connection upstream had closed: the request is sent again, once."""


async def _send_iterable(conn: _Connection, body: AsyncIterable[bytes], chunked: bool) -> None:
    transport = conn.transport
    assert transport is not None
    async for data in body:
        if not data:
            continue
        # RFC 9112 7.1: chunk-size in hex, CRLF, data, CRLF.
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
        await conn.drain()
    if chunked:
        transport.write(b"0\r\n\r\n")


def _request_head(
    method: str,
    url: URL,
    headers: Iterable[tuple[str, str]],
    body: bytes | AsyncIterable[bytes] | None,
) -> tuple[bytes, bool]:
    target = url.raw_path_qs or "/"
    lines = [f"{method} {target} HTTP/1.1"]
    host = length = False
    for name, value in headers:
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            # A header line break would smuggle a second request upstream.
            raise UpstreamError(f"request header {name!r}: line break in its name or value")
        lower = name.lower()
        if lower == "host":
            host = True
        elif lower == "content-length":
            length = True
        elif lower == "transfer-encoding":
            continue  # the framing is this client's to choose
        lines.append(f"{name}: {value}")
    if not host:
        default = 443 if url.scheme == "https" else 80
        port = url.explicit_port if url.explicit_port != default else None
        name = url.raw_host or ""
        name = f"[{name}]" if ":" in name else name  # RFC 3986 3.2.2: an IPv6 literal
        lines.append(f"Host: {name}" + (f":{port}" if port else ""))
    chunked = False
    if isinstance(body, bytes):
        if not length and (body or method in _BODY_METHODS):
            lines.append(f"Content-Length: {len(body)}")
    elif body is not None and not length:
        chunked = True
        lines.append("Transfer-Encoding: chunked")
    elif body is None and not length and method in _BODY_METHODS:
        lines.append("Content-Length: 0")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape"), chunked


def _bad(resp: Response, message: str) -> UpstreamError:
    return BodyError(message) if resp._head_done else UpstreamError(message)


def _reason(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:200]
