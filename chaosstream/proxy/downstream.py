"""The client's side of one exchange, whichever HTTP server carries it.

The proxy's exchange logic (proxy/server.py) reads one :class:`Incoming` request and
writes one response through a :class:`Downstream`. Two servers carry them: the
proxy's own HTTP/1.1 front (proxy/front.py, the plain requests of the data path)
and aiohttp's (everything else: WebSocket upgrades, ``Expect``, HTTP/1.0, the
intercepting and worker fronts' middlewares), adapted here by :class:`AiohttpSide`.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["AiohttpSide", "Downstream", "Incoming", "abort", "drained"]


@dataclass(slots=True)
class Incoming:
    """One request as the client sent it: head parsed, body read whole."""

    method: str
    raw_path: str
    """The request target as sent (origin-form ``/v1/x?y=1``, or absolute-form)."""
    path: str
    """The percent-decoded path, without the query."""
    query_string: str
    """The raw query, without ``?``."""
    headers: CIMultiDictProxy[str]
    body: bytes
    version: tuple[int, int] = (1, 1)
    keep_alive: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    """What a front decided for the request (``server.ROUTE`` of the intercepting front)."""


class Downstream(Protocol):
    """Where one exchange's response goes: head fields first, then the body."""

    status: int
    reason: str | None
    headers: CIMultiDict[str]
    """The response head's fields, filled before :meth:`prepare`."""

    @property
    def transport(self) -> asyncio.Transport | None:
        """The client's connection (None once it is gone)."""
        ...

    @property
    def chunked(self) -> bool:
        """After :meth:`prepare`: the body goes in chunked framing."""
        ...

    @property
    def writing_paused(self) -> bool:
        """The client's send buffer is past its high-water mark."""
        ...

    def force_close(self) -> None:
        """Announce ``Connection: close`` and close the connection after the body."""
        ...

    async def prepare(self) -> None:
        """Build the head; it leaves with the first body bytes, in one send."""
        ...

    async def write(self, data: bytes, last: bool = False) -> None:
        """Send body bytes in the response's framing; waits while the client is full.
        With ``last`` the body ends with them, in the same send (:meth:`write_eof`
        then sends nothing). Raises ``ConnectionResetError`` when the client is gone."""
        ...

    def end_bytes(self) -> bytes | None:
        """For a caller that writes to :attr:`transport` itself: mark the body ended and
        return what ends it (the last chunk when chunked, else ``b""``), to go in its
        last send. None: this side cannot hand that out; end it with :meth:`write_eof`."""
        ...

    async def write_eof(self) -> None:
        """End the body (the last chunk when chunked); idempotent."""
        ...

    async def drain(self) -> None:
        """Wait until the client's send buffer is below its low-water mark."""
        ...

    async def answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        """A whole response with a Content-Length (refusals, the proxy's own errors)."""
        ...


class AiohttpSide:
    """:class:`Downstream` over an aiohttp request; :attr:`response` is what the
    aiohttp handler returns."""

    __slots__ = ("_force", "headers", "reason", "request", "response", "status")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.status = 200
        self.reason: str | None = None
        self.headers: CIMultiDict[str] = CIMultiDict()
        #: The response made so far (None until prepare() or answer()).
        self.response: web.StreamResponse | None = None
        self._force = False

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.request.transport

    @property
    def chunked(self) -> bool:
        # prepare() set this header exactly when its writer chunks the body (an HTTP/1.1
        # client and no Content-Length); otherwise the body is raw.
        resp = self.response
        return resp is not None and resp.headers.get("Transfer-Encoding") == "chunked"

    @property
    def writing_paused(self) -> bool:
        protocol = self.request.protocol
        return protocol is not None and protocol.writing_paused

    def force_close(self) -> None:
        self._force = True
        if self.response is not None:
            self.response.force_close()

    async def prepare(self) -> None:
        resp = web.StreamResponse(status=self.status, reason=self.reason)
        resp.headers.extend(self.headers)
        if self._force:
            resp.force_close()
        self.response = resp
        await resp.prepare(self.request)

    async def write(self, data: bytes, last: bool = False) -> None:
        assert self.response is not None
        if last:
            await self.response.write_eof(data)  # aiohttp sends the last chunk with it
        else:
            await self.response.write(data)

    def end_bytes(self) -> bytes | None:
        return None  # aiohttp's writer keeps the body's state: write_eof() ends it

    async def write_eof(self) -> None:
        if self.response is not None:
            await self.response.write_eof()

    async def drain(self) -> None:
        await self.request.writer.drain()

    async def answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        # Sent by aiohttp when the handler returns it: the answer is the last thing.
        self.response = web.Response(status=status, body=body, headers=dict(headers))


async def drained(transport: asyncio.Transport | None, timeout: float = 2.0) -> None:
    """Wait until what was written has left the proxy's user-space buffer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # Polling: asyncio offers no "buffer empty" notification short of drain(),
    # which only waits for the low-water mark.
    while transport is not None and transport.get_write_buffer_size():
        if loop.time() >= deadline:
            break
        await asyncio.sleep(0.005)


def abort(transport: asyncio.Transport | None, rst: bool = False) -> None:
    """Drop the client connection at once: with RST when ``rst``, else a plain close."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if rst and sock is not None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
