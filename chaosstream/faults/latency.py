"""Latency: a slow first token and slow tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import Field

from chaosstream.faults._feed import closing, prefetched
from chaosstream.faults._shape import DISTRIBUTION_HELP, Distribution, Shape, jitter
from chaosstream.faults.base import Chunk, Fault, FaultContext


class Latency(Fault):
    """Delays the first byte of the response and then every event.

    Each delay is measured from the moment the proxy received the chunk (as
    Toxiproxy does), so delays do not pile up on a stream that is already
    behind: a stream with `per_event_ms: 100` whose upstream sends an event
    every 20 ms delivers every event 100 ms late, not 100 ms apart. Jitter is
    drawn per chunk, but a chunk never leaves before the one ahead of it, so
    bytes are never reordered. On a WebSocket every message is an event.

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

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
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
