"""TCP links: each accepted client gets an upstream connection and two one-way pumps.

``upstream`` is client -> server bytes, ``downstream`` is server -> client. A pump
takes chunks in arrival order and runs each through its direction's firing toxics
one after another, so nothing is ever reordered. The toxic list is read per chunk
and changes are pushed into live links, so add/update/remove act at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence

from chaosstream.toxiproxy.toxics import Chunk, Stage, ToxicEntry, fires

__all__ = ["DIRECTIONS", "Connection", "split_host_port"]

DIRECTIONS = ("upstream", "downstream")
_HIGH_WATER = 256 * 1024  # pause reading a socket when this much waits in a pump's inbox
_log = logging.getLogger(__name__)


def split_host_port(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> (host, port); ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {address}: missing or bad port")
    return host.removeprefix("[").removesuffix("]"), int(port)


class _Inbox:
    """Chunks read from one socket, waiting for that direction's pump."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._chunks: deque[Chunk] = deque()
        self._size = 0
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self.source: asyncio.Transport | None = None
        self._paused = False

    def push(self, data: bytes) -> None:
        self._chunks.append(Chunk(data, self._loop.time()))
        self._size += len(data)
        if self._size > _HIGH_WATER and not self._paused and self.source is not None:
            self._paused = True
            self.source.pause_reading()
        self._wake()

    def push_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Chunk | None:
        """The next chunk, or None at end of stream."""
        while not self._chunks:
            if self._eof:
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._size -= len(chunk.data)
        if self._paused and self._size <= _HIGH_WATER // 4 and self.source is not None:
            self._paused = False
            with contextlib.suppress(RuntimeError):
                self.source.resume_reading()
        return chunk


class _Side(asyncio.Protocol):
    """One socket of a connection: its reads feed one inbox, the other pump writes to it."""

    def __init__(self, conn: Connection, inbox: _Inbox) -> None:
        self._conn = conn
        self._inbox = inbox
        self.transport: asyncio.Transport | None = None
        self._drain: asyncio.Future[None] | None = None
        self.paused = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._inbox.source = transport
        self._conn.side_made(self)

    def data_received(self, data: bytes) -> None:
        self._inbox.push(data)

    def eof_received(self) -> bool:
        self._inbox.push_eof()
        return True  # keep the socket open: the other direction may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._inbox.push_eof()
        self._release()
        if exc is not None:
            self._conn.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._release()

    def _release(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def write(self, data: bytes) -> None:
        """Write, waiting while the peer is slow to read."""
        if self.lost or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        while self.paused and not self.lost:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def write_eof(self) -> None:
        """Half-close towards this peer."""
        t = self.transport
        if t is not None and not t.is_closing() and not self.lost:
            if t.can_write_eof():
                t.write_eof()
            else:
                t.close()


class _Link:
    """One direction of a connection: the pump and the per-link state of each toxic."""

    def __init__(self, conn: Connection, direction: str, inbox: _Inbox, rng: random.Random) -> None:
        self._conn = conn
        self.direction = direction
        self._inbox = inbox
        self.rng = rng
        self.dest: _Side | None = None
        self._stages: dict[str, Stage] = {}
        self._active: list[tuple[ToxicEntry, Stage]] = []

    # -- what toxics may call (toxics.Link) --
    def now(self) -> float:
        return self._conn.loop.time()

    def close(self) -> None:
        self._conn.close()

    def reset(self) -> None:
        self._conn.reset()

    def call_later(self, seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self._conn.loop.call_later(seconds, callback)

    # -- chain changes pushed from the proxy --
    def sync(self, chain: Sequence[ToxicEntry], changed: ToxicEntry | None, removed: bool) -> None:
        """Bring this link in line with ``chain`` after ``changed`` was added/updated/removed."""
        if changed is not None:
            old = self._stages.pop(changed.name, None)
            if old is not None:
                old.cancel_timer()
                old.interrupt()
                if removed or not fires(self._conn.seed, changed):
                    old.removed = True
                    if removed:
                        changed.toxic.cleanup(old, self)
                else:
                    self._start(changed, old)
            elif not removed and fires(self._conn.seed, changed):
                self._start(changed, Stage(self._conn.loop))
        else:  # a new link: every toxic already on the proxy starts here
            for entry in chain:
                if fires(self._conn.seed, entry):
                    self._start(entry, Stage(self._conn.loop))
        # Copy-on-write: a chunk already in flight keeps the list it started with.
        self._active = [(e, self._stages[e.name]) for e in chain if e.name in self._stages]

    def _start(self, entry: ToxicEntry, stage: Stage) -> None:
        self._stages[entry.name] = stage
        entry.toxic.activate(stage, self)

    def shutdown(self) -> None:
        """The connection is gone: stop timers and wake any sleeping toxic."""
        for stage in self._stages.values():
            stage.cancel_timer()
            stage.removed = True
            stage.interrupt()
        self._stages.clear()
        self._active = []

    # -- the pump --
    async def run(self) -> None:
        try:
            while (chunk := await self._inbox.get()) is not None:
                if self._conn.closed:
                    return
                if self._active:
                    await self._feed(self._active, 0, chunk)
                else:
                    await self._write(chunk)
            for entry, stage in list(self._active):
                if not stage.removed and not await entry.toxic.on_eof(stage, self):
                    return
            if not self._conn.closed and self.dest is not None:
                self.dest.write_eof()
                self._conn.direction_done()
        except Exception:  # a bug must not leave the connection half-alive
            _log.exception("toxiproxy link %s failed", self.direction)
            self._conn.close()

    async def _feed(self, stages: list[tuple[ToxicEntry, Stage]], i: int, chunk: Chunk) -> None:
        while i < len(stages) and stages[i][1].removed:
            i += 1
        if self._conn.closed:
            return
        if i == len(stages):
            await self._write(chunk)
            return
        entry, stage = stages[i]
        await entry.toxic.pipe(chunk, stage, self, lambda c: self._feed(stages, i + 1, c))

    async def _write(self, chunk: Chunk) -> None:
        if self.dest is not None and not self._conn.closed:
            await self.dest.write(chunk.data)


class Connection:
    """One accepted client, its upstream connection and the two links between them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstream: str,
        seed: int,
        chains: dict[str, list[ToxicEntry]],
        on_close: Callable[[Connection], None],
    ) -> None:
        self.loop = loop
        self.seed = seed
        self.closed = False
        self._upstream = upstream
        self._on_close = on_close
        self._done = 0
        self.tasks: set[asyncio.Task[None]] = set()
        up_inbox, down_inbox = _Inbox(loop), _Inbox(loop)
        self.client = _Side(self, up_inbox)
        self.server = _Side(self, down_inbox)
        self.links = {
            "upstream": _Link(self, "upstream", up_inbox, random.Random(f"{seed}:upstream")),
            "downstream": _Link(
                self, "downstream", down_inbox, random.Random(f"{seed}:downstream")
            ),
        }
        self.links["upstream"].dest = self.server
        self.links["downstream"].dest = self.client
        for direction, link in self.links.items():
            link.sync(chains[direction], None, False)

    def side_made(self, side: _Side) -> None:
        """A socket is up: the client starts the upstream dial, the server starts the pumps."""
        if side is self.client:
            self._spawn(self._dial())
        elif self.closed:
            if side.transport is not None:
                side.transport.abort()
        else:
            for link in self.links.values():
                self._spawn(link.run())

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _dial(self) -> None:
        try:
            host, port = split_host_port(self._upstream)
            await self.loop.create_connection(lambda: self.server, host or "127.0.0.1", port)
        except (OSError, ValueError) as exc:
            # Toxiproxy closes the client when the upstream cannot be reached.
            _log.warning("toxiproxy upstream %s unreachable: %s", self._upstream, exc)
            self.close()

    def direction_done(self) -> None:
        """One direction delivered its EOF; when both have, the connection is over."""
        self._done += 1
        if self._done == 2:
            self.close()

    def close(self, abort: bool = False) -> None:
        """Close both sockets (FIN after flushing; ``abort`` drops unsent bytes)."""
        if self.closed:
            return
        self.closed = True
        for link in self.links.values():
            link.shutdown()
        current = asyncio.current_task(self.loop) if self.loop.is_running() else None
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        for side in (self.client, self.server):
            if side.transport is None:
                continue
            if abort:
                side.transport.abort()
            else:
                side.transport.close()
        self._on_close(self)

    def reset(self) -> None:
        """Close both sockets with RST: SO_LINGER {on, 0} then close."""
        for side in (self.client, self.server):
            sock = side.transport.get_extra_info("socket") if side.transport else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close(abort=True)

    async def wait_closed(self) -> None:
        """Wait for the pumps and the dial to finish after :meth:`close`."""
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
