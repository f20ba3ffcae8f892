"""The profile's ``network:`` block, expressed as faults that fire on every exchange.

Both directions are shaped: the response through ``apply``, the request body
through ``apply_upload``. Order: propagation delay, then bandwidth, then loss.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chaosstream.faults._feed import closing, prefetched
from chaosstream.faults._shape import DISTRIBUTION_HELP, Distribution, Shape, jitter
from chaosstream.faults.base import Chunk, Fault, FaultContext
from chaosstream.faults.loss import Loss, lossy
from chaosstream.faults.throttle import Throttle


class Network(BaseModel):
    """Link conditions that hold for every exchange, in both directions."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    latency_ms: float = Field(
        0.0,
        ge=0,
        description="One-way delay added to each direction's data, and to the response head.",
    )
    jitter_ms: float = Field(
        0.0,
        ge=0,
        description="Jitter on that delay (+/- range for `uniform`, standard deviation for "
        "the others); never reorders bytes.",
    )
    distribution: Distribution = Field("uniform", description=DISTRIBUTION_HELP)
    shape: Shape | None = Field(
        None, description="A delay that changes with time, added to the one-way delay."
    )
    down_kbps: float | None = Field(
        None, gt=0, description="Server -> client bandwidth, kilobits/s."
    )
    up_kbps: float | None = Field(None, gt=0, description="Client -> server bandwidth, kilobits/s.")
    loss: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Segment loss rate, TCP-modelled: a lost segment stalls delivery by the "
        "retransmit timeout (200 ms, doubling); bytes are never dropped.",
    )


class LinkDelay(Fault):
    """A one-way link delay: every chunk leaves ``delay_ms`` (+/- jitter) after it arrived.

    Like a real link, a later chunk never overtakes an earlier one, and a busy
    stream is not delayed more than an idle one.
    """

    type: Literal["link_delay"] = "link_delay"
    delay_ms: float = Field(0.0, ge=0, description="One-way delay.")
    jitter_ms: float = Field(0.0, ge=0, description="Jitter; never reorders bytes.")
    distribution: Distribution = Field("uniform", description=DISTRIBUTION_HELP)
    shape: Shape | None = Field(None, description="A delay that changes with time.")

    def head_delay_ms(self, ctx: FaultContext) -> float:
        """The response head crosses the same link as the body: the base delay and the
        shape's, no jitter (a draw here would shift every seeded body jitter after it)."""
        extra = 0.0
        if self.shape is not None:
            extra = self.shape.extra_ms(ctx.clock.now() - ctx.proxy_started)
        return self.delay_ms + extra

    def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        return self._delayed(chunks, ctx, "delay")

    def apply_upload(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        """The request body, delayed the same way."""
        return self._delayed(chunks, ctx, "delay_upload")

    async def _delayed(
        self, chunks: AsyncIterator[Chunk], ctx: FaultContext, action: str
    ) -> AsyncIterator[Chunk]:
        clock, rng, sigma, shape = ctx.clock, ctx.rng, self.jitter_ms, self.shape
        not_before = 0.0
        first = True
        async with closing(prefetched(chunks)) as ahead:
            async for chunk in ahead:
                delay = self.delay_ms
                if shape is not None:
                    delay += shape.extra_ms(chunk.received - ctx.proxy_started)
                if sigma:
                    delay = max(0.0, delay + jitter(rng, self.distribution, sigma))
                due = max(chunk.received + delay / 1000.0, not_before)
                await clock.sleep(due - clock.now())
                not_before = due
                if first:  # once per direction: the report says the link was slow
                    first = False
                    ctx.fired(action, detail=self._describe())
                yield replace(chunk, received=due)

    def _describe(self) -> str:
        text = f"{self.delay_ms:g} ms +/- {self.jitter_ms:g} ms"
        if self.distribution != "uniform":
            text += f" {self.distribution}"
        return text + (f", {self.shape.kind}" if self.shape is not None else "")


class LinkDown(Throttle):
    """Server -> client bandwidth: a bytes throttle on the response."""

    type: Literal["link_down"] = "link_down"  # type: ignore[assignment]


class LinkUp(Fault):
    """Client -> server bandwidth: a bytes throttle on the request body only."""

    type: Literal["link_up"] = "link_up"
    bytes_per_s: float = Field(..., gt=0, description="Bytes per second.")

    def apply_upload(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        """The request body at ``bytes_per_s``."""
        return Throttle(bytes_per_s=self.bytes_per_s).apply(chunks, ctx)


class LinkLoss(Loss):
    """Segment loss in both directions (the model of :class:`Loss`)."""

    type: Literal["link_loss"] = "link_loss"  # type: ignore[assignment]

    def apply_upload(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        """The request body through the same lossy link."""
        return lossy(chunks, ctx, self)


def kbps(value: float) -> float:
    """Kilobits per second (1000 bits, as network speeds are quoted) to bytes per second."""
    return value * 1000.0 / 8.0


def network_faults(network: Network | None) -> list[Fault]:
    """The faults that make up a ``network:`` block, in the order they act."""
    if network is None:
        return []
    faults: list[Fault] = []
    if network.latency_ms or network.jitter_ms or network.shape is not None:
        faults.append(
            LinkDelay(
                delay_ms=network.latency_ms,
                jitter_ms=network.jitter_ms,
                distribution=network.distribution,
                shape=network.shape,
            )
        )
    if network.down_kbps:
        faults.append(LinkDown(bytes_per_s=kbps(network.down_kbps)))
    if network.up_kbps:
        faults.append(LinkUp(bytes_per_s=kbps(network.up_kbps)))
    if network.loss:
        faults.append(LinkLoss(rate=network.loss))
    return faults
