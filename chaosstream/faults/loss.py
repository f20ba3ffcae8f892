"""Loss: TCP segment loss, seen from the application as stalls, never as missing bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import Field

from chaosstream.faults._feed import closing
from chaosstream.faults.base import Chunk, Fault, FaultContext, StreamEnd

MSS = 1460
"""Maximum segment size of Ethernet-sized TCP (1500 B MTU - 40 B of IP and TCP headers)."""
MAX_RTO_S = 60.0
"""RFC 6298 (2.5): a maximum may be placed on the RTO, provided it is at least 60 s."""


class Loss(Fault):
    """Packet loss as a TCP application sees it: stalls and head-of-line blocking.

    TCP never hands the application a gap, so a lost segment shows up as a
    delay, not as missing bytes. The model: each write is cut into segments of
    the MSS (1460 bytes, or the whole write when smaller); each segment is lost
    with probability `rate` (drawn from the seeded generator). A lost segment
    is retransmitted after the retransmission timeout, `rto_ms`, and every byte
    behind it waits too (head-of-line blocking). Each further loss of the same
    segment doubles the timeout (exponential backoff, RFC 6298 section 5.5,
    capped at 60 s); after `max_retransmits` failed retransmissions the
    connection is reset, as a TCP stack gives up.

    Sources: RFC 6298 "Computing TCP's Retransmission Timer" (initial RTO,
    backoff, 60 s cap); Linux `TCP_RTO_MIN` = 200 ms (include/net/tcp.h), the
    timeout a lost segment on a short-RTT path really waits, hence the default
    `rto_ms`. Linux retries up to `tcp_retries2` = 15 times; the default here is
    lower so a chaos run gives up in seconds, not minutes. Fast retransmit
    (three duplicate ACKs) is not modelled: on a trickle of small SSE events
    there are rarely three segments behind the lost one to trigger it.
    """

    type: Literal["loss"] = "loss"
    rate: float = Field(..., ge=0, lt=1, description="Chance each segment is lost (0.02 = 2 %).")
    rto_ms: float = Field(
        200.0, gt=0, description="Retransmission timeout for the first loss of a segment."
    )
    max_retransmits: int = Field(
        6, ge=0, description="Losses of one segment in a row before the connection is reset."
    )

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        async with closing(lossy(chunks, ctx, self)) as stream:
            async for chunk in stream:
                yield chunk


async def lossy(
    chunks: AsyncIterator[Chunk], ctx: FaultContext, loss: Loss
) -> AsyncIterator[Chunk]:
    """``chunks`` delivered through a lossy TCP link (also used for uploads)."""
    async with closing(chunks):
        rate, rng, clock = loss.rate, ctx.rng, ctx.clock
        free_at = 0.0  # the link is blocked until a retransmission arrives
        sent = 0
        async for chunk in chunks:
            data = chunk.data
            start = 0
            for end in range(MSS, len(data) + MSS, MSS):
                seg_end = min(end, len(data))
                losses = 0
                while rng.random() < rate:
                    losses += 1
                    if losses > loss.max_retransmits:
                        ctx.fired("reset", nbytes=sent, detail=f"{losses - 1} retransmissions lost")
                        if start:
                            yield replace(chunk, data=data[:start])
                        raise StreamEnd("reset", "loss: retransmissions exhausted")
                if losses:
                    # Bytes before the lost segment are delivered; the rest waits for it.
                    if start:
                        yield replace(chunk, data=data[:start])
                        data, seg_end, start = data[start:], seg_end - start, 0
                    stall = sum(min(loss.rto_ms / 1000.0 * 2**k, MAX_RTO_S) for k in range(losses))
                    free_at = max(chunk.received, free_at) + stall
                    ctx.fired("stall", nbytes=sent, detail=f"{losses} lost, {stall * 1000:.0f} ms")
                    await clock.sleep(free_at - clock.now())
                    chunk = replace(chunk, received=free_at)
                sent += seg_end - start
                start = seg_end
            if data:
                yield replace(chunk, data=data) if data is not chunk.data else chunk
