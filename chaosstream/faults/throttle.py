"""Throttle: a slow drip at a set rate of bytes, events or tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import Field, model_validator

from chaosstream.faults._events import is_event, tokens
from chaosstream.faults._feed import closing
from chaosstream.faults.base import Chunk, Clock, Fault, FaultContext

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

    Or bursts instead of a rate: `burst_events` events leave together, then
    nothing for `burst_every_ms`, then the next burst (a provider that
    batches tokens server-side, or a gateway that flushes in groups: the UI
    jumps by a few words at a time). A burst never leaves before its events
    arrived, and a slow upstream earns no credit.
    """

    type: Literal["throttle"] = "throttle"
    bytes_per_s: float | None = Field(None, gt=0, description="Bytes per second.")
    events_per_s: float | None = Field(None, gt=0, description="Data events per second.")
    tokens_per_s: float | None = Field(None, gt=0, description="Token events per second.")
    burst_events: int | None = Field(
        None, ge=1, description="Bursts: this many data events leave together (no rate then)."
    )
    burst_every_ms: float | None = Field(
        None, gt=0, description="Bursts: the gap from one burst to the next."
    )

    @model_validator(mode="after")
    def _one_rate(self) -> Throttle:
        given = [n for n in ("bytes_per_s", "events_per_s", "tokens_per_s") if getattr(self, n)]
        burst = (self.burst_events is not None, self.burst_every_ms is not None)
        if any(burst):
            if not all(burst):
                raise ValueError("bursts need both burst_events and burst_every_ms")
            if given:
                raise ValueError("give a rate or bursts, not both")
        elif len(given) != 1:
            raise ValueError(
                "give exactly one of bytes_per_s, events_per_s, tokens_per_s "
                "(or burst_events with burst_every_ms)"
            )
        return self

    @property
    def needs_events(self) -> bool:
        return self.bytes_per_s is None

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        if self.bytes_per_s is not None:
            stream = self._bytes(chunks, ctx, self.bytes_per_s)
        elif self.burst_events is not None and self.burst_every_ms is not None:
            stream = self._bursts(chunks, ctx, self.burst_events, self.burst_every_ms / 1000.0)
        else:
            stream = self._events(chunks, ctx)
        async with closing(stream):
            async for chunk in stream:
                yield chunk

    async def _events(
        self, chunks: AsyncIterator[Chunk], ctx: FaultContext
    ) -> AsyncIterator[Chunk]:
        async with closing(chunks):
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

    async def _bursts(
        self, chunks: AsyncIterator[Chunk], ctx: FaultContext, size: int, gap_s: float
    ) -> AsyncIterator[Chunk]:
        async with closing(chunks):
            # Held until the burst is whole, then sent together: a burst leaves when its
            # last event arrived, and never sooner than `gap_s` after the one before.
            clock = ctx.clock
            held: list[Chunk] = []
            events = 0
            last_at: float | None = None
            async for chunk in chunks:
                held.append(chunk)
                events += is_event(chunk.data, ctx)
                if events < size:
                    continue
                if last_at is None:
                    ctx.fired("burst", detail=f"{size} events every {gap_s * 1000:g} ms")
                last_at = await self._release(held, clock, last_at, gap_s)
                for c in held:
                    yield c
                held, events = [], 0
            if held:
                await self._release(held, clock, last_at, gap_s)
                for c in held:
                    yield c

    @staticmethod
    async def _release(held: list[Chunk], clock: Clock, last_at: float | None, gap: float) -> float:
        due = held[-1].received if last_at is None else max(held[-1].received, last_at + gap)
        await clock.sleep(due - clock.now())
        held[:] = [replace(c, received=due) for c in held]
        return due

    async def _bytes(
        self, chunks: AsyncIterator[Chunk], ctx: FaultContext, rate: float
    ) -> AsyncIterator[Chunk]:
        async with closing(chunks):
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
