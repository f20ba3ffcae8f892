"""Buffer: a middlebox that holds the response and delivers it all at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import Field

from chaosstream.faults._feed import closing
from chaosstream.faults.base import Chunk, Fault, FaultContext


class Buffer(Fault):
    """Holds the whole response, then delivers it at once when upstream ends.

    That is what a buffering reverse proxy (nginx with `proxy_buffering on`,
    some corporate proxies and antivirus gateways) does to a stream: the
    client sees nothing, then everything. With `flush_bytes` the buffer lets
    go each time it holds that much, like a proxy with a fixed buffer size.
    Inside a recurring `window` it holds bytes only while the window is open
    and lets them all go when it shuts: a tunnel outage. Nothing is dropped.
    """

    type: Literal["buffer"] = "buffer"
    flush_bytes: int | None = Field(
        None, gt=0, description="Deliver whenever this many bytes are held (default: at the end)."
    )

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        async with closing(chunks):
            held: list[Chunk] = []
            size = sent = 0
            limit = self.flush_bytes
            ctx.fired("hold")
            async for chunk in chunks:
                held.append(chunk)
                size += len(chunk.data)
                if limit is not None and size >= limit:
                    for out in self._release(held, ctx):
                        yield out
                    sent += size
                    held, size = [], 0
            if held:
                ctx.fired("flush", nbytes=sent, detail=f"{size} bytes held")
                for out in self._release(held, ctx):
                    yield out

    @staticmethod
    def _release(held: list[Chunk], ctx: FaultContext) -> list[Chunk]:
        now = ctx.clock.now()
        if ctx.framed:  # events and messages keep their boundaries for the faults after this
            return [replace(c, received=now) for c in held]
        return [replace(held[-1], data=b"".join(c.data for c in held), received=now)]
