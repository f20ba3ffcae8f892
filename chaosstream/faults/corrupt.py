"""Corrupt: bad bytes inside a live stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import Field, model_validator

from chaosstream.faults._events import is_event, is_terminal_chunk, payload
from chaosstream.faults._feed import closing
from chaosstream.faults.base import Chunk, Fault, FaultContext

CorruptAction = Literal[
    "malformed_json",
    "drop_event",
    "duplicate_event",
    "reorder",
    "split",
    "invalid_utf8",
    "drop_terminal",
    "bit_flip",
]


class Corrupt(Fault):
    """Damages one event (at `after_events`) or each event with chance `rate`.

    Actions: `malformed_json` cuts the event's data in half, so JSON parsing
    fails; `drop_event` loses the event; `duplicate_event` sends it twice;
    `reorder` swaps it with the next event; `split` sends it in two writes
    `split_gap_ms` apart (a correct SSE parser joins them); `invalid_utf8`
    puts a byte that is never valid UTF-8 (0xFF) in the middle of its data;
    `drop_terminal` drops the stream's terminal event (`data: [DONE]`,
    `message_stop`) so the response ends cleanly but incomplete, and ignores
    `after_events`/`rate`; `bit_flip` flips one bit in the middle of the
    event's payload and keeps its length, so a binary frame's CRC32 no longer
    matches (Bedrock's event stream: botocore raises `ChecksumMismatch`) and a
    text frame carries one wrong character. On a WebSocket the same actions
    apply to messages.
    """

    type: Literal["corrupt"] = "corrupt"
    action: CorruptAction = Field(..., description="What to do to the event.")
    after_events: int | None = Field(
        None, ge=0, description="Damage the event after this many data events (0 = the first)."
    )
    rate: float | None = Field(
        None, gt=0, le=1, description="Instead: damage each data event with this chance."
    )
    split_gap_ms: float = Field(
        50.0, ge=0, description="`split` only: pause between the two halves."
    )

    @model_validator(mode="after")
    def _position(self) -> Corrupt:
        if self.action == "drop_terminal":
            return self
        if (self.after_events is None) == (self.rate is None):
            raise ValueError(f"{self.action} needs exactly one of after_events, rate")
        return self

    @property
    def needs_events(self) -> bool:
        return True

    @property
    def prompt(self) -> bool:
        # A split exists to arrive as two writes; every other action passes at once.
        return self.action != "split"

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        async with closing(chunks):
            action, rng = self.action, ctx.rng
            events = sent = 0
            held: Chunk | None = None  # `reorder`: the event waiting for the next one
            held_at = (0, 0)  # its events and bytes before it, logged once the swap happens
            carry = False  # `bit_flip` hit an event with no payload: flip the next one
            async for chunk in chunks:
                if not is_event(chunk.data, ctx):
                    sent += len(chunk.data)
                    yield chunk
                    continue
                if action == "drop_terminal":
                    hit = is_terminal_chunk(chunk.data, ctx)
                elif self.rate is not None:
                    hit = rng.random() < self.rate
                else:
                    hit = events == self.after_events
                hit = hit or carry
                if hit and action == "bit_flip":
                    start, end = payload(chunk.data, ctx)
                    # An empty payload has only framing bytes to flip: that would break
                    # the framing, not the data the profile meant -- the next event gets it.
                    carry = end <= start
                    hit = not carry
                gap = 0.0
                if hit and held is None:
                    if action == "reorder":
                        # Logged when the next event swaps in: the last event has none.
                        held, held_at = chunk, (events, sent)
                        out = []
                    else:
                        ctx.fired(action, events=events, nbytes=sent)
                        out = self._damage(chunk, ctx)
                        gap = self.split_gap_ms / 1000.0 if action == "split" else 0.0
                else:
                    out = [chunk]
                    if held is not None:
                        ctx.fired(action, events=held_at[0], nbytes=held_at[1])
                        out.append(held)
                        held = None
                events += 1
                for i, c in enumerate(out):
                    if i and gap:
                        # The second half of a split waits so the client reads the halves apart.
                        await ctx.clock.sleep(gap)
                        c = replace(c, received=ctx.clock.now())
                    sent += len(c.data)
                    yield c
            if held is not None:
                yield held

    def _damage(self, chunk: Chunk, ctx: FaultContext) -> list[Chunk]:
        data, action = chunk.data, self.action
        if action in ("drop_event", "drop_terminal", "reorder"):
            return []
        if action == "duplicate_event":
            return [chunk, chunk]
        start, end = payload(data, ctx)
        middle = start + max(1, (end - start) // 2)
        if action == "malformed_json":
            return [replace(chunk, data=data[:middle] + data[end:])]
        if action == "bit_flip":
            # Length kept, so the framing holds and only a checksum (or the JSON) tells.
            flipped = bytes([data[middle - 1] ^ 0x01])
            return [replace(chunk, data=data[: middle - 1] + flipped + data[middle:])]
        if action == "invalid_utf8":
            return [replace(chunk, data=data[:middle] + b"\xff" + data[middle:])]
        cut = max(1, len(data) // 2)  # split
        return [replace(chunk, data=data[:cut]), replace(chunk, data=data[cut:])]
