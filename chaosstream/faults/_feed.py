"""Reading a chunk stream against deadlines on the exchange's clock.

``asyncio.wait_for`` would cancel the pending read on timeout, and a cancelled
async generator cannot be resumed; a :class:`Feed` keeps that read pending
instead, so a stream can be watched for a deadline (a window opening, an
``after_ms`` cut) and then read on. Deadlines use the exchange's clock, so the
fake clock of :mod:`chaosstream.testing` drives them too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from chaosstream.faults.base import Chunk, Clock


async def aclose(chunks: AsyncIterator[Chunk]) -> None:
    """Close ``chunks`` if it can be closed (an async generator can; a plain iterator not)."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


class closing:
    """``async with closing(chunks):`` -- a fault's input is closed when the fault's own
    stream ends, fails or is closed.

    A generator closed at its ``yield`` (or ended by a ``StreamEnd``) does not close the
    stream its ``async for`` reads: without this, closing the outermost stream of a chain
    leaves the inner ones open -- and a read-ahead task (``prefetched``, ``Feed``) still
    inside upstream's read. ``contextlib.aclosing`` needs an ``aclose`` the
    ``AsyncIterator`` type does not promise; this one skips iterators without it.
    """

    __slots__ = ("_chunks",)

    def __init__(self, chunks: AsyncIterator[Chunk]) -> None:
        self._chunks = chunks

    async def __aenter__(self) -> AsyncIterator[Chunk]:
        return self._chunks

    async def __aexit__(self, *exc: object) -> None:
        await aclose(self._chunks)


async def _anext(it: AsyncIterator[Chunk]) -> Chunk | None:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


class Feed:
    """An async chunk iterator that can be read with a deadline and read on afterwards."""

    def __init__(self, chunks: AsyncIterator[Chunk], clock: Clock) -> None:
        self._it = chunks.__aiter__()
        self._clock = clock
        self._pending: asyncio.Task[Chunk | None] | None = None
        self.done = False
        """True once the underlying stream has ended."""

    async def get(self, deadline: float | None = None) -> Chunk | None:
        """The next chunk; None when the stream ended (``done``) or ``deadline`` came first."""
        if self.done:
            return None
        if deadline is None and self._pending is None:
            chunk = await _anext(self._it)  # the common case costs no task
        else:
            if self._pending is None:
                self._pending = asyncio.ensure_future(_anext(self._it))
            if deadline is not None and not self._pending.done():
                remaining = deadline - self._clock.now()
                if remaining <= 0:
                    return None
                timer = asyncio.ensure_future(self._clock.sleep(remaining))
                try:
                    await asyncio.wait((self._pending, timer), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    timer.cancel()
                if not self._pending.done():
                    return None
            task, self._pending = self._pending, None
            chunk = await task
        if chunk is None:
            self.done = True
        return chunk

    async def until(self, deadline: float | None) -> AsyncIterator[Chunk]:
        """The chunks that arrive before ``deadline`` (all of them when None)."""
        while (chunk := await self.get(deadline)) is not None:
            yield chunk

    async def aclose(self) -> None:
        """Drop a pending read and close the underlying stream."""
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(BaseException):
                await self._pending
            self._pending = None
        await aclose(self._it)


async def prefetched(chunks: AsyncIterator[Chunk], limit: int = 1024) -> AsyncIterator[Chunk]:
    """``chunks``, read ahead by a task so each is stamped when it arrives, not when pulled.

    A delaying fault sleeps between chunks; without read-ahead the chunk behind
    would only be read (and stamped) after that sleep, and delays would add up.
    Toxiproxy gets the same effect from a goroutine and a channel per toxic.
    At most ``limit`` chunks wait, so a client that stops reading still pushes
    back on upstream.

    Closing it cancels the read-ahead task first and then closes ``chunks``: the
    task may be inside ``chunks.__anext__()``, and closing a generator another
    task is running raises ``RuntimeError: aclose(): asynchronous generator is
    already running``.
    """
    queue: asyncio.Queue[Chunk | Exception | None] = asyncio.Queue(limit)

    async def reader() -> None:
        try:
            async for chunk in chunks:
                await queue.put(chunk)
        except Exception as e:  # handed to the consumer, which raises it in order
            await queue.put(e)
        else:
            await queue.put(None)

    task = asyncio.ensure_future(reader())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        task.cancel()
        # wait() neither raises the reader's own cancellation nor swallows ours.
        await asyncio.wait((task,))
        await aclose(chunks)
