"""Throttle: a slow drip at a set rate of bytes, events or tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import Field, model_validator

from chaosstream.faults._events import is_event, tokens
from chaosstream.faults.base import Chunk, Fault, FaultContext

# Unframed byte streams are cut into pieces of at most this much link time, so
# a large chunk trickles out instead of arriving whole after a long pause.
PIECE_S = 0.02
MIN_PIECE = 256


class Throttle(Fault):
    """Delivers the response at a fixed rate: `bytes_per_s`, `events_per_s` or `tokens_per_s`.

    The schedule is a running budget that starts with the first chunk, so the
    rate is exact over time: sleeps that overshoot do not add up (no drift),
    and a pause upstream earns no credit, so nothing bursts after it.
    Events and tokens keep their boundaries: one event leaves every
    `1 / events_per_s` seconds, the first at once. Bytes leave when their last
    byte would have crossed a link of that speed. Tokens are the content
    pieces of OpenAI and Anthropic events (events without text pass without
    waiting, in order); plain SSE and WebSocket messages count one per event.
    Give exactly one rate.
    """

    type: Literal["throttle"] = "throttle"
    bytes_per_s: float | None = Field(None, gt=0, description="Bytes per second.")
    events_per_s: float | None = Field(None, gt=0, description="Data events per second.")
    tokens_per_s: float | None = Field(None, gt=0, description="Token events per second.")

    @model_validator(mode="after")
    def _one_rate(self) -> Throttle:
        given = [n for n in ("bytes_per_s", "events_per_s", "tokens_per_s") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of bytes_per_s, events_per_s, tokens_per_s")
        return self

    @property
    def needs_events(self) -> bool:
        return self.bytes_per_s is None

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        if self.bytes_per_s is not None:
            stream = self._bytes(chunks, ctx, self.bytes_per_s)
        else:
            stream = self._events(chunks, ctx)
        async for chunk in stream:
            yield chunk

    async def _events(
        self, chunks: AsyncIterator[Chunk], ctx: FaultContext
    ) -> AsyncIterator[Chunk]:
        by_tokens = self.tokens_per_s is not None
        interval = 1.0 / (self.tokens_per_s or self.events_per_s or 1.0)
        clock = ctx.clock
        free_at: float | None = None  # when the next unit may leave
        for_log = True
        async for chunk in chunks:
            cost = tokens(chunk.data, ctx) if by_tokens else int(is_event(chunk.data, ctx))
            if cost:
                due = chunk.received if free_at is None else max(chunk.received, free_at)
                free_at = due + cost * interval
                await clock.sleep(due - clock.now())
                if for_log:
                    for_log = False
                    ctx.fired("throttle", detail=f"{1 / interval:g}/s")
                chunk = replace(chunk, received=max(chunk.received, due))
            yield chunk

    async def _bytes(
        self, chunks: AsyncIterator[Chunk], ctx: FaultContext, rate: float
    ) -> AsyncIterator[Chunk]:
        clock = ctx.clock
        piece = 1 << 62 if ctx.framed else max(MIN_PIECE, int(rate * PIECE_S))
        free_at: float | None = None
        ctx.fired("throttle", detail=f"{rate:g} B/s")
        async for chunk in chunks:
            data = chunk.data
            for i in range(0, len(data), piece):
                part = data[i : i + piece] if len(data) > piece else data
                start = chunk.received if free_at is None else max(chunk.received, free_at)
                free_at = start + len(part) / rate
                await clock.sleep(free_at - clock.now())
                yield replace(chunk, data=part, received=free_at)
