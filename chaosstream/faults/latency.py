"""Latency: a slow first token and slow tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Literal

from pydantic import Field

from chaosstream.faults._feed import aclose, closing, prefetched
from chaosstream.faults._shape import DISTRIBUTION_HELP, Distribution, Shape, jitter
from chaosstream.faults.base import Chunk, Fault, FaultContext


class Latency(Fault):
    """Delays the first byte of the response and then every event.

    Each delay is measured from the moment the proxy received the chunk (as
    Toxiproxy does), so delays do not pile up on a stream that is already
    behind: a stream with `per_event_ms: 100` whose upstream sends an event
    every 20 ms delivers every event 100 ms late, not 100 ms apart. Jitter is
    drawn per chunk, but a chunk never leaves before the one ahead of it, so
    bytes are never reordered. On a WebSocket every message is an event. For the
    head and the first byte that moment is, on Linux, when the kernel got the
    bytes: a proxy busy with a thousand streams starting at once does not add
    its own lag to the setting (the kernel counts in ticks, 4 ms at HZ=250, so
    a first byte may leave up to a tick early or late; on average on time).

    `headers_ms` holds the response head (status line and headers) back, apart
    from the body: "headers on time, body late" is the opposite case
    (`first_byte_ms` alone), and a slow head is what a cold model, a queue in
    front of it or a slow TLS-terminating gateway look like. SDKs time the two
    differently: openai-python's `timeout` covers the wait for the head, its
    read timeout then restarts with every chunk of the body.

    `distribution` draws the jitter as netem does (`normal`, `pareto`,
    `pareto_normal`: a heavy tail of late tokens), and `shape` adds a delay
    that changes with time (a `ramp`, a `sine` or `sawtooth` wave) to the
    first byte and to every event; both are seeded.
    """

    type: Literal["latency"] = "latency"
    first_byte_ms: float = Field(0.0, ge=0, description="Extra delay before the first byte.")
    per_event_ms: float = Field(0.0, ge=0, description="Extra delay for every event after it.")
    headers_ms: float = Field(
        0.0,
        ge=0,
        description="Hold the response head this long after upstream's head arrived (the "
        "body's delays are separate; its first byte never comes before the head).",
    )
    jitter_ms: float = Field(
        0.0,
        ge=0,
        description="Jitter added to each delay (never below zero): +/- range for `uniform`, "
        "standard deviation for the others.",
    )
    distribution: Distribution = Field("uniform", description=DISTRIBUTION_HELP)
    shape: Shape | None = Field(
        None, description="A delay that changes with time, added to every delay (see Shape)."
    )

    def head_delay_ms(self, ctx: FaultContext) -> float:
        return self.headers_ms

    @property
    def needs_events(self) -> bool:
        # Only a per-event delay needs event boundaries; a first-byte delay works on bytes.
        return self.per_event_ms > 0 or self.shape is not None

    @property
    def prompt(self) -> bool:
        # Only the first chunk waits (first_byte_ms, on bytes): the proxy writes what the
        # chain yields at its next read, which this fault asks for as soon as the held
        # chunk is out, so the rest of the stream is batched like a clean one's.
        return not (self.per_event_ms or self.jitter_ms or self.shape is not None)

    def first_byte_hold_ms(self, ctx: FaultContext) -> float | None:
        # What _FirstByte does, and all it does.
        return self.first_byte_ms if self.prompt else None

    def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        if self.prompt:
            return _FirstByte(chunks, ctx, self.first_byte_ms)
        return self._each(chunks, ctx)

    async def _each(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        clock, rng, sigma, shape = ctx.clock, ctx.rng, self.jitter_ms, self.shape
        first = True
        not_before = 0.0
        logged = False
        sent = 0
        if self.per_event_ms or sigma or shape:
            chunks = prefetched(chunks)
        async with closing(chunks):  # the read-ahead task stops with this stream
            async for chunk in chunks:
                delay = self.first_byte_ms if first else self.per_event_ms
                if shape is not None:
                    delay += shape.extra_ms(chunk.received - ctx.proxy_started)
                if delay or sigma:
                    if sigma:
                        delay = max(0.0, delay + jitter(rng, self.distribution, sigma))
                    due = max(chunk.received + delay / 1000.0, not_before)
                    if not logged:
                        # Logged as the hold begins: a client that gives up during it (a read
                        # timeout shorter than first_byte_ms) has met the fault all the same.
                        logged = True
                        action = "delay_first_byte" if first else "delay_events"
                        ctx.fired(
                            action, events=0 if first else 1, nbytes=sent, detail=f"{delay:.1f} ms"
                        )
                    await clock.sleep(due - clock.now())
                    not_before = due
                    # Re-stamped: a fault after this one measures from when the chunk left here.
                    chunk = replace(chunk, received=due)
                first = False
                sent += len(chunk.data)
                yield chunk


class _FirstByte:
    """``chunks`` with the first one held until ``ms`` after it arrived; then inert.

    After the first chunk, :meth:`__anext__` hands out the input's own reads: no frame
    of this fault is left in the path, so a first-byte delay costs the rest of the
    stream what a clean stream costs.
    """

    __slots__ = ("_chunks", "_ctx", "_ms", "_next")

    def __init__(self, chunks: AsyncIterator[Chunk], ctx: FaultContext, ms: float) -> None:
        self._chunks = chunks
        self._ctx = ctx
        self._ms = ms
        self._next: Callable[[], Awaitable[Chunk]] = self._first

    def __aiter__(self) -> _FirstByte:
        return self

    def __anext__(self) -> Awaitable[Chunk]:
        return self._next()

    async def _first(self) -> Chunk:
        chunk = await self._chunks.__anext__()
        self._next = self._chunks.__anext__
        if self._ms:
            ctx = self._ctx
            # Logged as the hold begins: a client that gives up during it (a read timeout
            # shorter than first_byte_ms) has met the fault all the same.
            ctx.fired("delay_first_byte", detail=f"{self._ms:.1f} ms")
            # From the chunk's arrival stamp, as Toxiproxy's latency toxic does
            # (toxics/latency.go: ``t.delay() - time.Since(c.Timestamp)``).
            due = chunk.received + self._ms / 1000.0
            await ctx.clock.sleep(due - ctx.clock.now())
            # Re-stamped: a fault after this one measures from when the chunk left here.
            chunk = replace(chunk, received=due)
        return chunk

    async def aclose(self) -> None:
        """Close the input (the chain closes down to the proxy's read)."""
        await aclose(self._chunks)
