"""The clean body's relay: upstream bytes reach the client from the socket callback.

When no fault acts on a body (or every armed fault is still far from acting on it,
with a :class:`Gate` deciding what of each read leaves), :func:`relay` copies it
without a task step per read: the first read goes through aiohttp's response (the
response head leaves with it, in one send), then upstream's connection hands every
piece of the body straight to a sink (:meth:`upstream.Response.pipe`) that writes
it to the client's transport in the client response's framing. The handler task
sleeps on one future and wakes only at the end, on an error, or when the client's
buffer is full; upstream reading then pauses until the client drained (issue 17:
per read that saves a future, a task wake-up and StreamWriter's chunk framing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp

from chaosstream.proxy.downstream import Downstream
from chaosstream.proxy.record import Exchange
from chaosstream.proxy.upstream import PAUSE, STOP, Response, Sink

__all__ = ["Gate", "relay"]


class Gate(Protocol):
    """What of each read the relay sends: the proxy's faults far from their trigger
    (``ChaosProxy._pass_ahead``) count frames and hold the one they may act on."""

    stopped: bool
    """Set once the rest of the body is the caller's: the relay lets go of it there."""

    def __call__(self, data: bytes) -> bytes:
        """The bytes of ``data`` to send now. ``b""`` in: the body ended, let out what is
        held (asked again, there is nothing left: ``b""``)."""
        ...


async def relay(
    upstream: Response,
    down: Downstream,
    ex: Exchange,
    keep: bool,
    now: Callable[[], float],
    gate: Gate | None = None,
    hold: Callable[[float], Awaitable[None]] | None = None,
) -> None:
    """Copy upstream's body to the prepared ``down`` as it comes, byte for byte.

    Counts ``ex.bytes_out`` (what was written, also when the client leaves), stamps
    ``ex.first_byte`` and keeps a copy in ``ex.upstream_chunks`` when ``keep``. Raises
    :class:`~chaosstream.proxy.upstream.BodyError` when upstream breaks the body, and
    ``aiohttp.ClientConnectionResetError`` when the client's connection is gone. The
    caller ends the response (``down.write_eof()``) and closes ``upstream``.

    With ``gate`` (the head left already, with the first bytes), only what it lets
    out of each read is sent; once it stops, the relay returns and the rest of the
    body waits for ``upstream.read()``.

    With ``hold`` (a first-byte delay, ``ChaosProxy._first_byte_hold``), the first
    read is written once ``hold(its arrival stamp)`` returns; the head waits with it.
    """
    if gate is None:
        data = await upstream.read()
        if not data:
            return
        if keep:
            ex.upstream_chunks.append(data)
        if hold is not None:
            await hold(upstream.received)
        ex.first_byte = now()
        # Through the response once: the held head and the first bytes leave in one send
        # (with the body's end too when they are all of it: a whole answer in one send).
        done = upstream.at_eof()
        await down.write(data, last=done)
        ex.bytes_out = len(data)
        if done:
            return
    sink = _sink(down, ex, keep, gate)
    while await upstream.pipe(sink):
        # The client's buffer is past its high-water mark: upstream reading is paused
        # until the client takes the bytes.
        await down.drain()
    if gate is not None and not gate.stopped and upstream.at_eof():
        sink(b"", True)  # the body ended: the gate lets out what it held


def _sink(down: Downstream, ex: Exchange, keep: bool, gate: Gate | None) -> Sink:
    client = down.transport
    if client is None or client.is_closing():
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    # RFC 9112 7.1: chunk-size in hex, CRLF, data, CRLF -- one buffer, one send: an SSE
    # event is small, so the copy costs less than a second write call.
    chunked = down.chunked
    kept = ex.upstream_chunks

    def sink(data: bytes, last: bool) -> int:
        if data and keep:
            kept.append(data)
        verdict = 0
        if gate is not None:
            data = gate(data)
            if last and not gate.stopped:
                # The body ends here: what the gate held (an event cut short) leaves
                # too, unless a fault may act on it.
                data += gate(b"")
            if gate.stopped:
                verdict = STOP
                last = False  # the chain takes the rest, and ends the body itself
        if data:
            if client.is_closing():
                # What aiohttp's StreamWriter raises in the same case: the handler reads
                # it as the client gone.
                raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
            out = b"%x\r\n%b\r\n" % (len(data), data) if chunked else data
            if last:
                # The body's end in the same send: one write less per response, and the
                # client reads the end with the last event (down.write_eof() is then a
                # no-op). None: aiohttp's side ends it itself.
                end = down.end_bytes()
                if end:
                    out += end
            client.write(out)
            ex.bytes_out += len(data)
        if verdict:
            return verdict
        return PAUSE if down.writing_paused else 0

    return sink
