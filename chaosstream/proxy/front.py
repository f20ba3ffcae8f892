"""The proxy's own HTTP/1.1 server front on asyncio protocols (issue 17, stage 2).

At 3,000 paced streams aiohttp's server side (``RequestHandler``, ``web.Request``,
the router, ``StreamResponse``, ``StreamWriter``) was a large share of the proxy's
CPU per stream. A proxied request needs far less: its head, its body read whole,
and a response head followed by body writes. :class:`Front` serves exactly that on
one :class:`asyncio.Protocol` per connection with llhttp (``httptools``, the parser
uvicorn uses), and hands every other connection to aiohttp unchanged: an
``Upgrade`` (WebSocket), an ``Expect`` (100-continue), HTTP/1.0, CONNECT, an
oversized head or body, and anything llhttp cannot parse (aiohttp answers its own
400). A hand-off gives aiohttp the transport and the raw bytes of the request, so
from that request on the connection is aiohttp's as if it had accepted it.

Response heads keep parity with aiohttp's ``StreamResponse`` (``Date``, ``Server``,
``Content-Type`` default, ``Connection: close``, chunked unless a Content-Length is
given, no body for HEAD/1xx/204/304), and the idle timer follows aiohttp 3.14's
keep-alive timer: it runs from connection_made and from the end of each response,
and cuts only a connection still waiting for a complete request head.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, cast

import httptools
import structlog
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

# The request type is shared with aiohttp's side of the proxy (proxy/downstream.py).
from chaosstream.proxy.downstream import Incoming

__all__ = ["Downstream", "Front", "Handler", "Incoming"]

log = structlog.get_logger("chaosstream.proxy.front")

#: A request line or header field longer than this goes to aiohttp, which refuses it
#: with a 400 past its max_line_size / max_field_size (8,190 bytes, docs/limits.md).
MAX_FIELD_BYTES: Final = 8190
#: Bytes of pipelined requests buffered while an exchange runs before reading pauses.
PIPELINE_HIGH_WATER: Final = 64 * 1024
#: RFC 9110 15.2, 15.3.5, 15.4.5: no body for these (aiohttp's EMPTY_BODY_STATUS_CODES).
_EMPTY_STATUS = frozenset((204, 304, *range(100, 200)))
#: aiohttp's http_writer refuses these in a head (RFC 9110 5.5, RFC 9112 4): a line
#: break in a header value would smuggle a second response to the client.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_NO_RESPONSE = b'{"error": "the proxy produced no response for this request"}'
_FAILED = b'{"error": "the proxy failed while handling this request"}'
_JSON = {"Content-Type": "application/json"}


Handler = Callable[[Incoming, "Downstream"], Awaitable[None]]


_date_second = 0
_date_text = ""


def _date() -> str:
    # One formatting per second, as aiohttp's rfc822_formatted_time.
    global _date_second, _date_text
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_text = formatdate(now, usegmt=True)
    return _date_text


class Downstream:
    """The client's side of one exchange on a Front connection (what the proxy writes to)."""

    __slots__ = (
        "_close",
        "_conn",
        "_empty",
        "_ended",
        "_head",
        "_keep_alive",
        "_length",
        "_prepared",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, conn: _Connection, head_method: bool, keep_alive: bool) -> None:
        self._conn = conn
        #: Status, reason and headers of the response: set them before :meth:`prepare`.
        self.status = 200
        self.reason: str | None = None
        self.headers: CIMultiDict[str] = CIMultiDict()
        self._keep_alive = keep_alive
        self._close = False
        self._empty = head_method  # the body is never sent (HEAD, 1xx/204/304)
        self._prepared = False
        self._ended = False
        self._head: bytes | None = None
        #: Body bytes still allowed by the Content-Length given; None when chunked.
        self._length: int | None = None

    @property
    def transport(self) -> asyncio.Transport | None:
        """The client's transport; None once the client left."""
        return self._conn.transport

    @property
    def chunked(self) -> bool:
        """After :meth:`prepare`: the body goes chunked (no Content-Length was given)."""
        return self._prepared and self._length is None and not self._empty

    @property
    def writing_paused(self) -> bool:
        """The client's transport buffer is over its high-water mark."""
        return self._conn.paused_writing

    @property
    def prepared(self) -> bool:
        return self._prepared

    def force_close(self) -> None:
        """Say ``Connection: close`` (if the head is not built yet) and close after the
        response ends."""
        self._close = True

    async def prepare(self) -> None:
        """Build the head; it leaves with the first write or :meth:`write_eof` in one
        ``transport.write`` with the first body bytes, or at the end of this loop step
        if none comes before (aiohttp sends a StreamResponse's head at prepare)."""
        if not self._prepared:
            self._build()
            # aiohttp's StreamResponse sends its head at prepare(): a client sees the head
            # at once though the body's first bytes come seconds later (or never: upstream
            # died, and the client must see a broken body, not a connection closed before
            # any head). Held to the end of this loop step only, so a first write that
            # follows without waiting leaves in the head's send.
            self._conn._loop.call_soon(self._flush)

    def _build(self) -> None:
        headers = self.headers
        status = self.status
        empty = self._empty = self._empty or status in _EMPTY_STATUS
        # aiohttp's StreamResponse._prepare_headers, for HTTP/1.1 (the only version
        # served here).
        length = headers.get("Content-Length")
        if empty:
            if length is not None and status in _EMPTY_STATUS:
                del headers["Content-Length"]
            headers.popall("Transfer-Encoding", None)
        else:
            if length is None:
                headers["Transfer-Encoding"] = "chunked"
            else:
                try:
                    self._length = int(length)
                except ValueError:
                    raise ValueError(f"Content-Length {length!r} is not a number") from None
            if length != "0":
                # RFC 9110 8.3: aiohttp sends a default type for a body of unknown type.
                headers.setdefault("Content-Type", "application/octet-stream")
        if "Date" not in headers:
            headers["Date"] = _date()
        headers.setdefault("Server", SERVER_SOFTWARE)
        if "Connection" not in headers and (self._close or not self._keep_alive):
            headers["Connection"] = "close"
        reason = self.reason
        if reason is None:
            reason = _PHRASES.get(status, "")
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines.extend([f"{name}: {value}" for name, value in headers.items()])
        lines.append("\r\n")
        text = "\r\n".join(lines)
        # The separators are the only CR/LF allowed: two per line plus the final two.
        if text.count("\n") != len(lines) or _FORBIDDEN.search(text.replace("\r\n", "")):
            raise ValueError("forbidden control character in the response head")
        self._head = text.encode("utf-8", "surrogateescape")
        self._prepared = True

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            transport = self._conn.transport
            if transport is not None and not transport.is_closing():
                transport.write(head)

    async def write(self, data: bytes, last: bool = False) -> None:
        """Send body bytes (chunk-framed when :attr:`chunked`); wait while the client's
        buffer is full. ``last``: the body ends with them, the last chunk in the same
        send. Raises ConnectionResetError once the client is gone."""
        if not self._prepared:
            raise RuntimeError("write() before prepare()")
        if self._ended:
            raise RuntimeError("write() after write_eof()")
        transport = self._conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        head = self._head
        if self._empty or not data:
            out = b"" if head is None else head
        elif self._length is None:
            # RFC 9112 7.1: chunk-size in hex, CRLF, data, CRLF.
            if head is None:
                out = b"%x\r\n%b\r\n" % (len(data), data)
            else:
                out = b"%b%x\r\n%b\r\n" % (head, len(data), data)
        else:
            if len(data) > self._length:
                # aiohttp discards what passes the declared length.
                data = data[: self._length]
            self._length -= len(data)
            out = data if head is None else head + data
        self._head = None
        if last:
            self._ended = True
            out += self._tail()
        if out:
            transport.write(out)
        if self._conn.paused_writing:
            await self.drain()

    def end_bytes(self) -> bytes:
        if self._ended:
            return b""
        if not self._prepared:
            self._build()
        self._ended = True
        head = self._head
        self._head = None
        tail = self._tail()
        return tail if head is None else head + tail

    def _tail(self) -> bytes:
        # RFC 9112 7.1: a chunked body ends with a zero-size chunk and an empty trailer.
        return b"0\r\n\r\n" if self._length is None and not self._empty else b""

    async def write_eof(self) -> None:
        """End the body (the terminal chunk when chunked); idempotent. The connection
        reads its next request once the handler returns, or closes."""
        if self._ended:
            return
        out = self.end_bytes()
        if out:
            transport = self._conn.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("Cannot write to closing transport")
            transport.write(out)
            if self._conn.paused_writing:
                await self.drain()

    async def drain(self) -> None:
        """Wait until the client's transport resumes writing (ConnectionResetError if it
        is gone)."""
        await self._conn.drain()

    async def answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        """A whole response with a Content-Length (refusals, 4xx/5xx), ended."""
        self.status = status
        self.headers.update(headers)
        self.headers["Content-Length"] = str(len(body))
        if not self._prepared:
            self._build()  # written at once below: no flush to schedule
        await self.write(body)
        await self.write_eof()


class _HandOff(Exception):
    """Raised in a parser callback: this request is aiohttp's, parse no further."""


class _Count:
    """A parser protocol that only counts complete messages (finding a boundary)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = 0

    def on_message_complete(self) -> None:
        self.done += 1


def _message_end(raw: bytes, count: int) -> int:
    """The offset in ``raw`` right after its ``count``-th complete request.

    httptools tells no offsets but an upgrade's, so a pipelined request's start is
    found by bisection with fresh parsers: log2(len(raw)) parses, and only when a
    request that started mid-read is handed off."""
    lo, hi = 0, len(raw)
    while lo < hi:
        mid = (lo + hi) // 2
        counter = _Count()
        with contextlib.suppress(httptools.HttpParserError, httptools.HttpParserUpgrade):
            httptools.HttpRequestParser(counter).feed_data(raw[:mid])
        if counter.done >= count:
            hi = mid
        else:
            lo = mid + 1
    return lo


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and runs the handler one at a time."""

    __slots__ = (
        "_base",
        "_body",
        "_body_len",
        "_completed",
        "_down",
        "_drain",
        "_front",
        "_gone",
        "_hand_over",
        "_handoff_at",
        "_head_size",
        "_headers",
        "_idle",
        "_idle_at",
        "_in_head",
        "_in_msg",
        "_keep_alive",
        "_loop",
        "_msg_start",
        "_parser",
        "_paused_reading",
        "_pending",
        "_queue",
        "_raw",
        "_raw_len",
        "_raw_lost",
        "_task",
        "_url",
        "paused_writing",
        "transport",
    )

    def __init__(self, front: Front) -> None:
        self._front = front
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.paused_writing = False
        self._drain: asyncio.Future[None] | None = None
        self._gone = False  # closed, or handed to aiohttp: callbacks do nothing
        # Raw bytes since the last read that began between two requests (a boundary
        # known without llhttp's help), and how many requests completed in them.
        self._raw: list[bytes] = []
        self._raw_len = 0
        self._raw_lost = False
        self._completed = 0
        self._base = 0  # where in _raw the read being parsed starts
        self._msg_start = 0  # where in _raw the read that began the current request starts
        self._in_msg = False
        self._in_head = False
        self._url = b""
        self._head_size = 0
        self._hand_over = False  # a header says the request is aiohttp's
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_len = 0
        self._keep_alive = True
        self._queue: deque[Incoming] = deque()
        self._pending = bytearray()  # bytes read while an exchange runs, parsed after
        self._paused_reading = False
        self._handoff_at: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._down: Downstream | None = None  # the response the task writes
        self._idle: asyncio.TimerHandle | None = None
        self._idle_at = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        front = self._front
        if front._closing:
            transport.close()
            self._gone = True
            return
        front._conns.add(self)
        # No SO_KEEPALIVE, though aiohttp's RequestHandler sets it: Linux probes only after
        # 2 h of silence, and the idle timer closes a connection silent between requests
        # long before (during a response, unacknowledged writes end a dead peer's
        # connection, not keep-alive probes). It cost a socket object and two system
        # calls per connection (issue 17).
        # aiohttp 3.14: the timer starts here, a client that never sends a head is cut.
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._gone:
            return
        if self._task is not None or self._queue or self._handoff_at is not None:
            self._pending += data
            if len(self._pending) > PIPELINE_HIGH_WATER and not self._paused_reading:
                self._paused_reading = True
                assert self.transport is not None
                self.transport.pause_reading()
            return
        self._feed(data)

    def eof_received(self) -> bool | None:
        # As aiohttp's RequestHandler: a FIN from the client closes the transport, so a
        # client that leaves cancels its handler (a half-closed client is not served).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._gone and self.transport is None:
            return
        self.transport = None
        self._stop()
        task = self._task
        down = self._down
        if task is not None and not task.done() and not (down is not None and down._ended):
            # aiohttp's handler_cancellation=True: the proxy closes upstream at once. Not
            # once the response has ended: the relay sends the end from the socket's
            # callback (relay.py), and a client that read it may close before the handler
            # wakes; it left after its exchange, which finishes and is recorded complete.
            task.cancel()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("Connection lost"))

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drain(self) -> None:
        if self.paused_writing and self.transport is not None:
            drain = self._drain
            if drain is None or drain.done():
                drain = self._drain = self._loop.create_future()
            await drain
        if self.transport is None:
            raise ConnectionResetError("Connection lost")

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_msg = self._in_head = True
        self._msg_start = self._base
        self._url = b""
        self._head_size = 16  # the request line's method, version and separators
        self._hand_over = False
        self._headers = []
        self._body = []
        self._body_len = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        n = len(name)
        if n + len(value) > MAX_FIELD_BYTES:
            self._hand_over = True  # aiohttp answers its 400 (docs/limits.md)
        if n == 7 or n == 6 or n == 14:  # upgrade, expect, content-length: no lower() else
            lower = name.lower()
            if lower == b"upgrade" or lower == b"expect":
                self._hand_over = True
            elif lower == b"content-length" and value.isdigit():
                # llhttp checks the digits; this one is about size only.
                self._hand_over = self._hand_over or int(value) > self._front._max_body

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        front = self._front
        if (
            parser.get_http_version() != "1.1"
            or parser.get_method() == b"CONNECT"
            or self._head_size + len(self._url) > front._max_head
            or len(self._url) > MAX_FIELD_BYTES
            or self._hand_over
        ):
            self._refuse()
        self._keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_len += len(body)
        if self._body_len > self._front._max_body:
            self._refuse()  # a chunked body past the limit

    def on_message_complete(self) -> None:
        self._in_msg = False
        self._completed += 1
        url = self._url.decode("utf-8", "surrogateescape")
        path, _, query = url.partition("?")
        if "%" in path or not path.startswith("/"):
            parsed = URL(url, encoded=True)
            path, query = parsed.path, parsed.raw_query_string
        headers: CIMultiDict[str] = CIMultiDict(
            [
                (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                for n, v in self._headers
            ]
        )
        body = self._body
        self._queue.append(
            Incoming(
                method=self._parser.get_method().decode("ascii"),
                raw_path=url,
                path=path,
                query_string=query,
                headers=CIMultiDictProxy(headers),
                body=body[0] if len(body) == 1 else b"".join(body),
                version=(1, 1),
                keep_alive=self._keep_alive,
            )
        )
        self._headers = []
        self._body = []

    def _refuse(self) -> None:
        self._handoff_at = self._completed
        raise _HandOff

    # -- the connection's course -------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if not self._in_msg:
            # A read that begins between requests: a boundary known without llhttp.
            self._raw = [data]
            self._raw_len = len(data)
            self._raw_lost = False
            self._completed = 0
            self._base = 0
        else:
            self._base = self._raw_len
            self._raw.append(data)
            self._raw_len += len(data)
            if self._raw_len > self._front._max_body + self._front._max_head:
                # A pipelined run with no read ever starting between requests: keep
                # memory bounded; only a hand-off from here on would need these bytes.
                self._raw = []
                self._raw_len = self._msg_start = 0
                self._raw_lost = True
                self._completed = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._handoff_at is None:  # a bug of ours in a callback: aiohttp answers
                log.exception("front_callback_failed")
                self._handoff_at = self._completed
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # Malformed: aiohttp's parser answers its own 400.
            self._handoff_at = self._completed
        if (
            self._handoff_at is None
            and self._in_head
            and self._raw_len - self._msg_start > self._front._max_head
        ):
            self._handoff_at = self._completed
        self._next()

    def _next(self) -> None:
        """Start the next exchange, hand off, or parse what waits: whatever is due."""
        if self._gone or self._task is not None:
            return
        if self._queue:
            incoming = self._queue.popleft()
            down = self._down = Downstream(self, incoming.method == "HEAD", incoming.keep_alive)
            self._task = self._loop.create_task(self._run(incoming, down))
        elif self._handoff_at is not None:
            self._hand_off()
        elif self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            if self._paused_reading and self.transport is not None:
                self._paused_reading = False
                self.transport.resume_reading()
            self._feed(data)

    async def _run(self, incoming: Incoming, down: Downstream) -> None:
        keep = False
        try:
            await self._front._handler(incoming, down)
            if not down._prepared:
                await down.answer(500, _NO_RESPONSE, _JSON)
            elif not down._ended:
                await down.write_eof()
            keep = down._keep_alive and not down._close
        except asyncio.CancelledError:
            raise  # the client left, or shutdown: the connection closes
        except ConnectionResetError:
            pass  # the client left while being written to
        except Exception:
            log.exception("handler_failed", method=incoming.method, path=incoming.path)
            if (not down._prepared or down._head is not None) and self.transport is not None:
                # Nothing has left yet (a head is held until the first write): a 500 can.
                fresh = Downstream(self, incoming.method == "HEAD", False)
                with contextlib.suppress(Exception):
                    await fresh.answer(500, _FAILED, _JSON)
        finally:
            self._task = self._down = None
            if (
                not keep
                or self._front._closing
                or self.transport is None
                or self.transport.is_closing()
            ):
                self._close()
            else:
                self._arm_idle()
                self._next()

    def _hand_off(self) -> None:
        transport = self.transport
        assert transport is not None and self._handoff_at is not None
        if self._raw_lost and self._handoff_at > 0:
            # Cannot find the request's first byte: closing beats a wrong answer.
            log.warning("front_handoff_lost", reason="pipelined run past the raw-byte cap")
            self._close()
            return
        raw = b"".join(self._raw)
        start = _message_end(raw, self._handoff_at) if self._handoff_at else 0
        data = raw[start:] + bytes(self._pending)
        self._stop()
        self._raw = []
        self._pending = bytearray()
        if self._paused_reading:
            transport.resume_reading()
        try:
            proto = self._front._fallback()
            transport.set_protocol(proto)
            proto.connection_made(transport)
            if self.paused_writing:
                proto.pause_writing()
            if data:
                proto.data_received(data)
        except Exception:
            # Never out of a socket callback or the exchange's task: the connection goes.
            log.exception("front_handoff_failed")
            transport.close()

    def _close(self) -> None:
        self._stop()
        if self.transport is not None:
            self.transport.close()

    def _stop(self) -> None:
        self._gone = True
        self._front._conns.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    # -- idle timer (aiohttp 3.14's keep-alive timer) ------------------------------------

    def _arm_idle(self) -> None:
        timeout = self._front._idle_timeout
        if timeout <= 0:
            return
        # Moved, not re-made, per response (aiohttp's trick): one timer per connection.
        self._idle_at = self._loop.time() + timeout
        if self._idle is None:
            self._idle = self._loop.call_at(self._idle_at, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        if self._gone:
            return
        if self._loop.time() < self._idle_at:
            self._idle = self._loop.call_at(self._idle_at, self._on_idle)
            return
        # Cut only a connection waiting for a complete head: an exchange that runs, or
        # a body still arriving, is never cut (the next response end re-arms the timer).
        if self._task is None and not self._queue and (self._in_head or not self._in_msg):
            self._close()

    async def _shutdown(self, deadline: float) -> None:
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - self._loop.time()))
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._close()


class Front:
    """An HTTP/1.1 server for the proxy's data path; other connections go to aiohttp."""

    def __init__(
        self,
        handler: Handler,
        fallback: Callable[[], asyncio.Protocol],
        *,
        idle_timeout_s: float = 60.0,
        max_head_bytes: int = 8190 * 4,
        max_body_bytes: int = 64 * 2**20,
    ) -> None:
        """``fallback``: aiohttp's low-level server (``web.Server``, what ``AppRunner``
        builds); calling it gives the protocol a handed-off connection goes to."""
        self._handler = handler
        self._fallback = fallback
        self._idle_timeout = idle_timeout_s
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes
        self._conns: set[_Connection] = set()
        self._closing = False

    def __call__(self) -> asyncio.Protocol:
        """The protocol factory for ``loop.create_server``."""
        return _Connection(self)

    async def shutdown(self, timeout: float) -> None:
        """Stop serving: idle connections close now, running handlers get ``timeout``
        seconds, then are cancelled; every connection closes."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conns = list(self._conns)
        for conn in conns:
            if conn._task is None:
                conn._close()
        busy = [conn._shutdown(deadline) for conn in conns if conn._task is not None]
        if busy:
            await asyncio.gather(*busy)
