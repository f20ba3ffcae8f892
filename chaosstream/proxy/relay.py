"""The clean body's relay: upstream bytes reach the client from the socket callback.

When no fault acts on a body, :func:`relay` copies it without a task step per read.
The first read goes through aiohttp (the response head leaves with it, in one send);
after that the upstream connection's transport gets a thin protocol, :class:`Tap`,
whose ``data_received`` feeds aiohttp's own ``ResponseHandler`` first (its parser
still undoes chunked/length framing and ends the body), then takes what it decoded
with ``StreamReader.read_nowait()`` and writes it to the client's transport in the
client response's framing. The handler task sleeps on one future and wakes only
at the end, on an error, or when the client's buffer is full (issue 17: per read
that saves a future, a task wake-up and StreamWriter's chunk framing, about a
third of the proxy's CPU on paced streams).

``transport.set_protocol()`` is public asyncio API (uvloop and TLS transports
have it too). The original protocol is put back the moment the body ends, inside
the callback that ended it, before the pool can lend the connection again, and on
every other way out, so keep-alive pooling is unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import aiohttp
from aiohttp import web
from aiohttp.client_proto import ResponseHandler

from chaosstream.proxy.record import Exchange

__all__ = ["Gate", "Interposed", "Tap", "relay"]


async def relay(
    upstream: aiohttp.ClientResponse,
    request: web.Request,
    resp: web.StreamResponse,
    ex: Exchange,
    keep: bool,
    now: Callable[[], float],
) -> None:
    """Copy upstream's body to the prepared ``resp`` as it comes, byte for byte.

    Counts ``ex.bytes_out`` (what was written, also when the client leaves), stamps
    ``ex.first_byte`` and keeps a copy in ``ex.upstream_chunks`` when ``keep``. Raises
    ``aiohttp.ClientPayloadError`` when upstream breaks the body, and
    ``aiohttp.ClientConnectionResetError`` when the client's connection is gone. The
    caller ends the response (``resp.write_eof()``) and closes ``upstream``.
    """
    content = upstream.content
    data = await content.readany()
    if not data:
        return
    ex.first_byte = now()
    if keep:
        ex.upstream_chunks.append(data)
    # Through aiohttp once: the buffered head and the first bytes leave in one send.
    await resp.write(data)
    ex.bytes_out = len(data)
    connection = upstream.connection
    protocol = None if connection is None else connection.protocol
    transport = None if protocol is None else protocol.transport
    if content.is_eof() or protocol is None or transport is None:
        # The body ended by the first read (the pool may have the connection back
        # already): what is still buffered needs no tap.
        _write_rest(content, request, resp, ex, keep)
        if not content.is_eof():  # no connection to tap and no end: never seen
            raise aiohttp.ClientPayloadError("upstream connection gone before the body ended")
        return
    tap = Tap(transport, protocol, content, request, resp, ex, keep)
    try:
        while await tap.run():
            # The client's buffer is past its high-water mark: upstream reading is
            # paused through aiohttp's protocol until the client takes the bytes.
            await request.writer.drain()
    finally:
        tap.detach()


def _write_rest(
    content: aiohttp.StreamReader,
    request: web.Request,
    resp: web.StreamResponse,
    ex: Exchange,
    keep: bool,
) -> None:
    data = content.read_nowait()
    if data:
        client = _client(request)
        if keep:
            ex.upstream_chunks.append(data)
        client.write(_framed(data) if _chunked(resp) else data)
        ex.bytes_out += len(data)


def _client(request: web.Request) -> asyncio.Transport:
    client = request.transport
    if client is None or client.is_closing():
        # What aiohttp's StreamWriter raises in the same case: the handler reads it as
        # the client gone.
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    return client


def _chunked(resp: web.StreamResponse) -> bool:
    # prepare() set this header exactly when its writer chunks the body (an HTTP/1.1
    # client and no Content-Length); otherwise the body is raw, length- or close-
    # delimited, and the bytes go as they are.
    return resp.headers.get("Transfer-Encoding") == "chunked"


def _framed(data: bytes) -> bytes:
    # RFC 9112 7.1: chunk-size in hex, CRLF, data, CRLF. One buffer, one send: an
    # SSE event is small, so the copy costs less than a second write call.
    return b"%x\r\n%b\r\n" % (len(data), data)


class Gate(Protocol):
    """What of each read a :class:`Tap` sends: the proxy's faults far from their trigger
    (``ChaosProxy._pass_ahead``) count frames and hold the one they may act on."""

    stopped: bool
    """Set once the rest of the body is the caller's: the tap lets go of it there."""

    def __call__(self, data: bytes) -> bytes:
        """The bytes of ``data`` to send now (``b""`` in: the body ended)."""
        ...


class Interposed(asyncio.Protocol):
    """A protocol slipped between an upstream transport and aiohttp's ``ResponseHandler``
    (``transport.set_protocol``): what a subclass does not take over reaches aiohttp's
    protocol unchanged, so its parser, timers and flow-control flags stay right. None
    once it let go (the callbacks then do nothing)."""

    __slots__ = ("_inner",)

    _inner: ResponseHandler | None

    def eof_received(self) -> bool | None:
        inner = self._inner
        if inner is not None:
            inner.eof_received()
        return None  # aiohttp's protocol keeps no half-open connection either

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class Tap(Interposed):
    """Sits between an upstream transport and aiohttp's protocol for one body.

    Every callback goes to the original protocol (``inner``) first, so aiohttp's
    parser, timers and flow-control flags stay right; after ``data_received`` the
    decoded bytes go straight to the client.
    """

    __slots__ = (
        "_chunked",
        "_client",
        "_content",
        "_ex",
        "_gate",
        "_keep",
        "_paused",
        "_server",
        "_transport",
        "_waiter",
        "error",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        inner: ResponseHandler,
        content: aiohttp.StreamReader,
        request: web.Request,
        resp: web.StreamResponse,
        ex: Exchange,
        keep: bool,
        gate: Gate | None = None,
    ) -> None:
        self._transport = transport
        self._inner: ResponseHandler | None = inner
        self._content = content
        self._client = _client(request)
        self._server = request.protocol
        self._chunked = _chunked(resp)
        self._ex = ex
        self._keep = keep
        self._gate = gate
        self._paused = False
        self._waiter: asyncio.Future[bool] | None = None
        #: Why the relay stopped early, raised by :meth:`run`.
        self.error: BaseException | None = None
        transport.set_protocol(self)

    async def run(self) -> bool:
        """Relay until the body ends (False) or the client's buffer is full (True)."""
        if self._paused:
            self._paused = False
            if self._inner is not None:
                self._inner.resume_reading()
        # Whatever aiohttp buffered before the tap (or while paused) goes first.
        self._pump()
        if self._inner is not None and not self._paused:
            waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                return await waiter
            finally:
                self._waiter = None
        if self.error is not None:
            raise self.error
        return self._paused

    def detach(self) -> None:
        """Give the transport back to aiohttp's protocol (idempotent)."""
        inner = self._inner
        if inner is not None:
            self._inner = None
            self._transport.set_protocol(inner)

    def _pump(self) -> None:
        """Move what aiohttp decoded to the client; settle the waiter when done."""
        content = self._content
        try:
            if self._client.is_closing():
                raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
            # read_nowait raises the body's error (ClientPayloadError on a cut body)
            # first, as readany() does; the bytes before the cut are not lost: the
            # data_received that brought them drained them already.
            data = content.read_nowait()
            ex = self._ex
            if data and self._keep:
                ex.upstream_chunks.append(data)
            gate = self._gate
            if gate is not None:
                out = gate(data) if data else b""
                if content.at_eof() and not gate.stopped:
                    out += gate(b"")
                data = out
            if data:
                self._client.write(_framed(data) if self._chunked else data)
                ex.bytes_out += len(data)
            if content.at_eof() or (gate is not None and gate.stopped):
                self.detach()
                self._settle(False)
            elif self._server.writing_paused:
                # aiohttp's drain() waits on this same flag; read_nowait above may have
                # resumed upstream, so the pause comes after it.
                self._paused = True
                inner = self._inner
                if inner is not None:
                    inner.pause_reading()
                self._settle(True)
        except Exception as e:  # handed to the handler task, which raises it
            self.error = e
            self.detach()
            self._settle(False)

    def _settle(self, paused: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self.error is not None:
                waiter.set_exception(self.error)
            else:
                waiter.set_result(paused)

    # -- asyncio.Protocol: each callback reaches aiohttp's protocol first ----------

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is not None:
            inner.data_received(data)
            self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        inner = self._inner
        if inner is not None:
            # aiohttp's parser ends the body here: complete for a close-delimited body,
            # else ClientPayloadError, which _pump hands to the handler.
            inner.connection_lost(exc)
            self._pump()
            self.detach()
            self._settle(False)
