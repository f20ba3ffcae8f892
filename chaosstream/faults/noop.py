"""The noop fault: the reference implementation and the template for new faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from chaosstream.faults._feed import closing
from chaosstream.faults.base import Chunk, Fault, FaultContext


class Noop(Fault):
    """Passes every chunk through unchanged. Useful to test triggers and as a template."""

    type: Literal["noop"] = "noop"

    @property
    def prompt(self) -> bool:
        return True

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        async with closing(chunks):
            async for chunk in chunks:
                yield chunk
