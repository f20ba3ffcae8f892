"""One streaming attempt on a bad network, with the profile's faults on the client's side.

The proxy applies a profile between two sockets; a load user has only its own,
so the same :class:`~chaosstream.faults.base.Fault` chain runs between the
user's socket and what its application reads:

    socket --read--> [frame into events] --> bandwidth faults --> other faults --> app

* Bandwidth faults (``network.down_kbps``, ``throttle``) sit nearest the socket
  and pull from it at their rate; the socket is read in small pieces with a
  small receive buffer, so the kernel's window closes and the *server* feels
  the backpressure, as it would behind a real slow link.
* A fault that ends the stream (``StreamEnd``) acts on the user's own socket:
  ``reset`` sets ``SO_LINGER 0`` and aborts (the server sees an RST), ``close``
  closes cleanly (FIN), ``stall`` stops reading and holds the socket open,
  silent, until the user's read timeout.
* Refusing faults (``http_error``, ``concurrency_limit``) answer in the user
  without touching the server, as a gateway on the path would.

HTTP/1.1 framing is h11's (a sans-IO parser), so the bytes on the wire and the
read sizes stay ours. Each attempt opens its own connection: a fault that cuts
one must not leave a pooled connection behind for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import h11

from chaosstream.faults.base import Chunk, RequestInfo, StreamEnd, Uploads
from chaosstream.faults.network import LinkDown
from chaosstream.faults.throttle import Throttle
from chaosstream.faults.trigger import Armed, Injector
from chaosstream.load.metrics import Attempt
from chaosstream.load.plan import Target
from chaosstream.streams.format import FrameDecoder, Framer
from chaosstream.streams.registry import framer_for, get

__all__ = ["MAX_ERROR_BODY", "SocketFactory", "resolve", "shaping", "stream_attempt"]

SocketFactory = Callable[[int, int], socket.socket]
"""``(family, type) -> socket``; the Locust engine passes the unpatched class."""

MAX_ERROR_BODY = 64 * 1024
"""An error response's body is read up to this much (for Retry-After and a clean close)."""
READ_SIZE = 64 * 1024
# A throttled user reads at most this much link time per read (as faults/throttle.py
# cuts its pieces), never less than MIN_READ bytes.
PIECE_S = 0.02
MIN_READ = 256
# Receive buffer of a throttled user: about this much link time, at least 4 KiB (Linux
# doubles the value and keeps a floor of its own; tcp(7) SO_RCVBUF).
WINDOW_S = 0.1
MIN_RCVBUF = 4096


class _UpstreamCut(Exception):
    """The server's side ended the body early (EOF or RST before the end of the message)."""


def shaping(armed: list[Armed]) -> float | None:
    """The byte rate of the slowest bandwidth fault on this attempt, or None."""
    rates = [
        a.fault.bytes_per_s
        for a in armed
        if isinstance(a.fault, (Throttle, LinkDown)) and a.fault.bytes_per_s
    ]
    return min(rates) if rates else None


def _chain_order(armed: list[Armed]) -> list[Armed]:
    """Bandwidth first (it paces the reads from the socket), then the profile's order.

    On the proxy the order is delay -> bandwidth -> loss; on a client the link's
    speed is what empties the socket, and propagation delay happens after it.
    """
    acting = [a for a in armed if a.fault.acts_on_stream]
    first = [a for a in acting if isinstance(a.fault, Throttle)]
    return first + [a for a in acting if not isinstance(a.fault, Throttle)]


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # an HTTP-date: the SDKs fall back to their backoff too
    return None


async def stream_attempt(
    target: Target,
    headers: dict[str, str],
    body: bytes,
    injector: Injector | None,
    request_info: RequestInfo,
    *,
    timeout_s: float = 60.0,
    sock_factory: SocketFactory = socket.socket,
    ssl_context: ssl.SSLContext | None = None,
    address: tuple[int, tuple[Any, ...]] | None = None,
) -> Attempt:
    """Send one streaming request and read it through the armed faults.

    ``request_info`` is the :class:`~chaosstream.faults.base.RequestInfo` the
    triggers match on. Never raises for a network outcome: the returned
    :class:`Attempt` names it (``complete``, ``reset``, ``http_429``, ...).
    Cancelling the task closes the socket at once. ``address`` (family, sockaddr)
    skips name resolution (the Locust engine resolves once: asyncio's resolver runs
    in a thread pool, and gevent patches thread pools).
    """
    start = time.monotonic()
    armed: list[Armed] = []
    if injector is not None:
        armed = injector.arm(injector.next_exchange(), request_info, start)
    attempt = Attempt("connect", start)
    writer: asyncio.StreamWriter | None = None
    try:
        for a in armed:
            refusal = await a.refuse()
            if refusal is not None:
                a.ctx.fired("refuse", detail=f"status {refusal.status}")
                attempt.status = refusal.status
                attempt.outcome = f"http_{refusal.status}"
                attempt.retry_after_s = _retry_after(
                    [(k.encode(), v.encode()) for k, v in refusal.headers.items()]
                )
                return attempt
        rate = shaping(armed)
        read_size = READ_SIZE if rate is None else max(MIN_READ, int(rate * PIECE_S))
        try:
            reader, writer = await asyncio.wait_for(
                _connect(target, rate, read_size, sock_factory, ssl_context, address), timeout_s
            )
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            return attempt
        attempt.outcome = "upstream_cut"
        conn = h11.Connection(h11.CLIENT)
        assert writer is not None
        await _send_request(conn, writer, target, headers, body, armed)
        response = await asyncio.wait_for(_response(conn, reader, read_size), timeout_s)
        attempt.status = response.status_code
        if response.status_code != 200:
            attempt.outcome = f"http_{response.status_code}"
            attempt.retry_after_s = _retry_after(list(response.headers))
            return attempt
        await _read_stream(conn, reader, writer, armed, target, attempt, read_size, timeout_s)
    except StreamEnd as end:
        attempt.outcome = end.mode
        if writer is not None:
            await _end(writer, end.mode, attempt, timeout_s)
            writer = None
    except _UpstreamCut:
        attempt.outcome = "upstream_cut"
    except asyncio.TimeoutError:
        attempt.outcome = "timeout"
    except (OSError, h11.ProtocolError, ssl.SSLError):
        attempt.outcome = "upstream_cut" if attempt.status == 200 else "connect"
    finally:
        attempt.ended = time.monotonic()
        for a in armed:
            a.release()
        if writer is not None:
            if attempt.outcome == "complete":
                writer.close()
            else:
                writer.transport.abort()
    return attempt


async def _connect(
    target: Target,
    rate: float | None,
    read_size: int,
    sock_factory: SocketFactory,
    ssl_context: ssl.SSLContext | None,
    address: tuple[int, tuple[Any, ...]] | None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    if address is None:
        address = await resolve(target)
    family, sockaddr = address
    sock = sock_factory(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rate is not None:
            # Before connect, so the window the handshake announces is already small.
            rcvbuf = max(MIN_RCVBUF, int(rate * WINDOW_S))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await loop.sock_connect(sock, sockaddr)
        tls: ssl.SSLContext | None = None
        if target.tls:
            tls = ssl_context or ssl.create_default_context()
        # limit: the reader stops reading from the socket past 2 x limit buffered.
        return await asyncio.open_connection(
            sock=sock,
            ssl=tls,
            server_hostname=target.host if tls else None,
            limit=max(read_size, MIN_READ),
        )
    except BaseException:
        sock.close()
        raise


async def resolve(target: Target) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) of the target's first address."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        target.host, target.port, type=socket.SOCK_STREAM
    )
    family, _, _, _, sockaddr = infos[0]
    return int(family), tuple(sockaddr)


async def _send_request(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    target: Target,
    headers: dict[str, str],
    body: bytes,
    armed: list[Armed],
) -> None:
    head = [(k, v) for k, v in headers.items()] + [("content-length", str(len(body)))]
    data = conn.send(h11.Request(method="POST", target=target.path, headers=head))
    writer.write(data or b"")

    async def whole() -> AsyncIterator[Chunk]:
        yield Chunk(body, time.monotonic())

    upload: AsyncIterator[Chunk] = whole()
    for a in armed:  # the link's delay and speed act on the way up too
        if isinstance(a.fault, Uploads):
            upload = a.fault.apply_upload(upload, a.ctx)
    async for chunk in upload:
        writer.write(conn.send(h11.Data(data=chunk.data)) or b"")
        await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    await writer.drain()


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader, size: int) -> object:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(size)
            conn.receive_data(data)  # b"" tells h11 the peer closed
            continue
        return event


async def _response(conn: h11.Connection, reader: asyncio.StreamReader, size: int) -> h11.Response:
    while True:
        event = await _next_event(conn, reader, size)
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            raise _UpstreamCut()


async def _source(
    conn: h11.Connection, reader: asyncio.StreamReader, size: int, attempt: Attempt
) -> AsyncIterator[Chunk]:
    """The response body as the socket delivers it; raises _UpstreamCut on an early end."""
    try:
        while True:
            event = await _next_event(conn, reader, size)
            if isinstance(event, h11.Data):
                attempt.nbytes += len(event.data)
                yield Chunk(bytes(event.data), time.monotonic())
            elif isinstance(event, h11.EndOfMessage):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise _UpstreamCut()
    except (ConnectionError, h11.RemoteProtocolError):
        raise _UpstreamCut() from None


async def _framed(chunks: AsyncIterator[Chunk], framer: Framer) -> AsyncIterator[Chunk]:
    """One chunk per raw frame of the format's framing, for faults that count events."""
    splitter = framer.splitter()
    async for chunk in chunks:
        for block in splitter.feed(chunk.data):
            yield Chunk(block, chunk.received)
    rest = splitter.flush()
    if rest:
        yield Chunk(rest, time.monotonic())


async def _read_stream(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    armed: list[Armed],
    target: Target,
    attempt: Attempt,
    read_size: int,
    timeout_s: float,
) -> None:
    # What a frame means is the wire format's business (streams/registry.py): load/
    # reads every format, SSE, NDJSON or AWS event stream, through the same questions.
    fmt = get(target.provider)
    framer = framer_for(fmt)
    chain = _chain_order(armed)
    stream: AsyncIterator[Chunk] = _source(conn, reader, read_size, attempt)
    if any(a.fault.needs_events for a in chain):
        stream = _framed(stream, framer)
    for a in chain:
        stream = a.apply(stream)
    app = FrameDecoder(framer)  # the application's own parser, after the faults
    start = attempt.started
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), timeout_s)
            except StopAsyncIteration:
                break
            for event in app.feed(chunk.data):
                if fmt.is_error(event):
                    attempt.outcome = "stream_error"
                    return
                if fmt.text(event):
                    attempt.token_times.append(time.monotonic() - start)
                if fmt.is_terminal(event):
                    attempt.outcome = "complete"
                    return
        attempt.outcome = "upstream_cut"  # the body ended without its terminal event
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _end(writer: asyncio.StreamWriter, mode: str, attempt: Attempt, timeout_s: float) -> None:
    """End the user's side of the connection the way the fault says."""
    sock = writer.get_extra_info("socket")
    if mode == "stall":
        # Silent and open: no reads, so the server's writes fill the window and stop.
        # The user gives up at its read timeout, counted from its last token.
        last = attempt.started + (attempt.token_times[-1] if attempt.token_times else 0.0)
        await asyncio.sleep(max(0.0, last + timeout_s - time.monotonic()))
        writer.transport.abort()
        return
    if mode == "reset" and sock is not None:
        # SO_LINGER on with a zero timeout: close() sends an RST (tcp(7), socket(7)).
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return
    writer.close()  # FIN after what is buffered
    with contextlib.suppress(Exception):
        await writer.wait_closed()
