"""Arrival stamps: when upstream's bytes reached the socket, not when the handler woke.

A timing fault counts its delay from ``Chunk.received`` (Toxiproxy's
``delay - time.Since(c.Timestamp)``). Stamped where the handler task resumes after
``await read()``, that time is one loop pass late: with 1,000 streams starting
together, 5 ms at p50 and 59-145 ms at p99 (issue 17), and every first-byte delay
came out that much long. A :class:`Stamp` sits on the upstream connection's
transport (``transport.set_protocol()``, public asyncio API, as
``relay.Tap`` does), forwards every callback to aiohttp's ``ResponseHandler`` and
notes the time the oldest bytes not yet taken arrived.

It is put on the connection as aiohttp hands it out (:class:`StampingConnector`),
before the request is sent, so the response head is stamped too (aiohttp sends a
head and the first bytes of a body in one write: the first event often arrives with
the head). Only an exchange that asked for it (:func:`wanted`) gets one, so a clean
stream pays nothing. It lets go of the transport inside the callback that ended the
body, before the pool can lend the connection again, and on every other way out
(:meth:`Stamp.detach`, idempotent and a no-op once another protocol took over).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from chaosstream.proxy.relay import Interposed

__all__ = ["Stamp", "StampingConnector", "reset_wanted", "wanted"]

# A one-slot list, emptied by reset_wanted: a context copied meanwhile (aiohttp's timer
# handles keep one) then holds no stamp.
_WANTED: contextvars.ContextVar[list[Stamp] | None] = contextvars.ContextVar(
    "chaosstream_stamp", default=None
)


def wanted(stamp: Stamp | None) -> contextvars.Token[list[Stamp] | None]:
    """Ask the connector to put ``stamp`` on the next connection this context opens
    (None: no stamp); reset the returned token once the request is sent."""
    return _WANTED.set(None if stamp is None else [stamp])


def reset_wanted(token: contextvars.Token[list[Stamp] | None]) -> None:
    """Undo :func:`wanted` (the request is sent: its connection is chosen)."""
    slot = _WANTED.get()
    if slot is not None:
        slot.clear()
    _WANTED.reset(token)


class StampingConnector(aiohttp.TCPConnector):
    """A TCP connector that attaches the :class:`Stamp` the current context asked for."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        conn = await super().connect(req, traces, timeout)
        slot = _WANTED.get()
        if slot:
            stamp = slot[0]
            protocol = conn.protocol
            transport = None if protocol is None else protocol.transport
            if protocol is not None and transport is not None:
                stamp.attach(transport, protocol)
        return conn


class Stamp(Interposed):
    """Notes when the oldest bytes not yet :meth:`take`-n reached the connection."""

    __slots__ = ("_content", "_now", "_transport", "at")

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._inner: ResponseHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._content: aiohttp.StreamReader | None = None
        #: Arrival of the oldest bytes not taken yet (None: nothing arrived since).
        self.at: float | None = None

    def attach(self, transport: asyncio.Transport, inner: ResponseHandler) -> None:
        """Sit between ``transport`` and aiohttp's protocol from now on."""
        self._transport = transport
        self._inner = inner
        transport.set_protocol(self)

    def head_in(self, content: aiohttp.StreamReader) -> float:
        """The response head's arrival; from now on the stamps are the body's.

        Body bytes that came with the head keep its stamp; the tap lets go once
        ``content`` ends.
        """
        at = self.at
        if at is None:  # not attached (a connection aiohttp did not hand out through us)
            at = self._now()
        if not content.total_bytes:
            self.at = None
        if self._inner is None or content.is_eof():
            self.detach()
        else:
            self._content = content
        return at

    def take(self) -> float:
        """When the oldest bytes read since the last take arrived (now, if unknown)."""
        at = self.at
        self.at = None
        return self._now() if at is None else at

    def detach(self) -> None:
        """Give the transport back to aiohttp's protocol (idempotent)."""
        inner, transport = self._inner, self._transport
        if inner is not None and transport is not None:
            self._inner = None
            self._content = None
            # Another protocol (relay's Tap, a later exchange's stamp) may hold it now.
            if transport.get_protocol() is self:
                transport.set_protocol(inner)

    # -- asyncio.Protocol: each callback reaches aiohttp's protocol ------------------

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is not None:
            if self.at is None:
                self.at = self._now()
            inner.data_received(data)
            content = self._content
            if content is not None and content.is_eof():
                self.detach()  # the pool may lend the connection as soon as we return

    def connection_lost(self, exc: Exception | None) -> None:
        inner = self._inner
        if inner is not None:
            inner.connection_lost(exc)
            self.detach()
