"""The profile's ``network:`` block, expressed as faults that fire on every exchange."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from chaosstream.faults.base import Chunk, Fault, FaultContext

if TYPE_CHECKING:
    from chaosstream.profile import Network


class LinkDelay(Fault):
    """A one-way link delay: every chunk leaves ``delay_ms`` (+/- jitter) after it arrived.

    Like a real link, a later chunk never overtakes an earlier one, and a busy
    stream is not delayed more than an idle one.
    """

    type: Literal["link_delay"] = "link_delay"
    delay_ms: float = Field(0.0, ge=0, description="One-way delay.")
    jitter_ms: float = Field(0.0, ge=0, description="Uniform +/- jitter; never reorders bytes.")

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:  # type: ignore[override]
        async for chunk in self._delayed(chunks, ctx):
            yield chunk

    def apply_upload(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        return self._delayed(chunks, ctx)

    async def _delayed(
        self, chunks: AsyncIterator[Chunk], ctx: FaultContext
    ) -> AsyncIterator[Chunk]:
        clock, rng, jitter = ctx.clock, ctx.rng, self.jitter_ms
        not_before = 0.0
        async for chunk in chunks:
            delay = self.delay_ms
            if jitter:
                delay = max(0.0, delay + rng.uniform(-jitter, jitter))
            due = max(chunk.received + delay / 1000.0, not_before)
            await clock.sleep(due - clock.now())
            not_before = due
            yield chunk


def network_faults(network: Network | None) -> list[Fault]:
    """The faults that make up a ``network:`` block, in the order they act."""
    if network is None:
        return []
    faults: list[Fault] = []
    if network.latency_ms or network.jitter_ms:
        faults.append(LinkDelay(delay_ms=network.latency_ms, jitter_ms=network.jitter_ms))
    return faults
