"""Head and idle timeouts for the mock's connections (issue 10, item 4).

aiohttp bounds neither the time a client takes to send a request head nor, by
default, how long an idle kept-alive connection stays (3,630 s in aiohttp 3.14),
so slowloris and silent sockets held the mock's file descriptors at will. Each
connection's aiohttp protocol is wrapped in a :class:`ConnectionGuard` that
closes the socket when the client keeps the mock waiting; the ``_watch``
middleware tells it when a request is being answered, so a long answer (a slow
stream, a WebSocket) is never cut.
"""

from __future__ import annotations

import asyncio
import enum

from aiohttp import web
from aiohttp.typedefs import Handler

from chaosstream.mock._limits import MockLimits


class _State(enum.Enum):
    HEAD = "waiting for a request head"
    BUSY = "answering"
    IDLE = "idle between requests"


class ConnectionGuard(asyncio.Protocol):
    """Wraps one connection's aiohttp protocol and closes the socket on a timeout.

    A connection must complete a request head within ``head_timeout_s`` of opening
    or of the first byte after an answer, and may sit idle between requests for
    ``idle_timeout_s``. Only asyncio's public protocol calls pass through here, one
    branch per read, so the byte path stays as it was.
    """

    def __init__(
        self,
        inner: asyncio.Protocol,
        limits: MockLimits,
        guards: dict[asyncio.BaseTransport, ConnectionGuard],
    ) -> None:
        self._inner = inner
        self._limits = limits
        self._guards = guards
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = _State.HEAD

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._guards[transport] = self
        self._arm(_State.HEAD, self._limits.head_timeout_s)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._state is _State.IDLE:
            self._arm(_State.HEAD, self._limits.head_timeout_s)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._transport is not None:
            self._guards.pop(self._transport, None)
            self._transport = None
        self._inner.connection_lost(exc)

    @property
    def is_open(self) -> bool:
        """True while the client's socket is neither closed nor closing."""
        return self._transport is not None and not self._transport.is_closing()

    def request_started(self) -> None:
        """A complete head arrived and its handler runs: no timeout while answering."""
        self._cancel()
        self._state = _State.BUSY

    def request_finished(self) -> None:
        """The answer is written: the connection is idle until the next byte."""
        if self.is_open:
            self._arm(_State.IDLE, self._limits.idle_timeout_s)

    def _arm(self, state: _State, timeout_s: float) -> None:
        self._cancel()
        self._state = state
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._expire)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if self._state is _State.BUSY or transport is None:
            return
        if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
            # The last answer is still draining to a slow reader: not idle yet.
            self._arm(self._state, self._limits.idle_timeout_s)
            return
        transport.close()


GUARDS: web.AppKey[dict[asyncio.BaseTransport, ConnectionGuard]] = web.AppKey(
    "chaosstream_mock_guards", dict
)


@web.middleware
async def watch(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mark the connection busy while a request is answered (a no-op without a guard)."""
    transport = request.transport
    guard = request.app[GUARDS].get(transport) if transport is not None else None
    if guard is None:
        return await handler(request)
    guard.request_started()
    try:
        # A response not yet sent (json_response, a static file) is written by
        # aiohttp after this returns; _expire waits while bytes are still queued.
        return await handler(request)
    finally:
        guard.request_finished()
