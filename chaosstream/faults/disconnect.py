"""Disconnect: the connection breaks in the middle of the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import Field, model_validator

from chaosstream.faults._events import is_event, tokens
from chaosstream.faults._feed import Feed, closing
from chaosstream.faults.base import Chunk, EndMode, Fault, FaultContext, Horizon, StreamEnd
from chaosstream.streams.registry import get

KeepaliveKind = Literal["comment", "ping", "auto"]

#: What each keep-alive kind writes. A comment dispatches nothing (WHATWG HTML,
#: 9.2.6: a line starting with ":" is ignored); Anthropic's `ping` is a real event
#: every SDK reads and skips (anthropic-python `_streaming.py`: `if sse.event ==
#: "ping": continue`); an empty NDJSON line is what Ollama-style streams idle with.
KEEPALIVES: dict[str, bytes] = {
    "comment": b": keepalive\n\n",
    "ping": b'event: ping\ndata: {"type": "ping"}\n\n',
    "ndjson": b"\n",
}


def _utf8_cut(data: bytes) -> int:
    """A cut point near the middle of ``data``, inside a multi-byte character if there is one."""
    middle = len(data) // 2
    for i in range(len(data)):
        # Continuation bytes are 0b10xxxxxx: cutting before one splits a character.
        if data[i] & 0xC0 == 0x80:
            return i
    return max(1, middle)


def _torn(chunk: Chunk) -> Chunk:
    return replace(chunk, data=chunk.data[: _utf8_cut(chunk.data)])


class Disconnect(Fault):
    """Cuts the stream after a number of events, bytes, tokens or milliseconds.

    `mode` says how the cut looks to the client: `reset` aborts the TCP
    connection (RST), `close` ends the HTTP response cleanly but without the
    stream's terminal event (`[DONE]`, `message_stop`) and then closes the
    connection (FIN; the response says `Connection: close`, so a client does
    not send its next request onto it), `stall` keeps the socket open and
    never sends another byte. Exactly one `after_*` field is given.
    Events are data events (comment-only keep-alives do not count); on a
    WebSocket they are messages, and `reset` drops the TCP connection (the
    client sees close code 1006) while `close` sends close code 1011.
    `split_event` delivers the first part of the next event before the cut,
    torn inside a UTF-8 character when the event has one. If the stream ends
    before the cut point, nothing fires.

    A `stall` with `keepalive_every_ms` keeps the connection breathing while the
    content has stopped: every so often it sends a keep-alive that carries no
    text -- an SSE comment (`comment`), Anthropic's `event: ping` (`ping`), or
    with `auto` the one the wire format uses (ping for Anthropic Messages, an
    empty line for NDJSON streams such as Ollama, a comment elsewhere). It
    models the stall that defeats byte-level read timeouts (undici's 300 s
    `bodyTimeout` and httpx's read timeout restart on every byte): a client
    that times "no data" instead of "no content" waits forever.
    """

    type: Literal["disconnect"] = "disconnect"
    after_events: int | None = Field(
        None, ge=0, description="Deliver this many data events, then cut."
    )
    after_bytes: int | None = Field(None, ge=0, description="Deliver this many bytes, then cut.")
    after_tokens: int | None = Field(
        None, ge=0, description="Deliver events carrying this many tokens, then cut."
    )
    after_ms: float | None = Field(
        None, ge=0, description="Cut this many milliseconds after the request arrived."
    )
    mode: EndMode = Field(
        "reset",
        description="reset (RST) | close (clean end, no terminal event) | stall (silent, open).",
    )
    split_event: bool = Field(
        False,
        description="Also deliver part of the next event, cut inside a UTF-8 character when "
        "it has one, so the client sees a torn event.",
    )

    keepalive_every_ms: float | None = Field(
        None,
        ge=10,
        description="With `mode: stall`: send a keep-alive this often (at least 10 ms) while "
        "no content flows, so the connection never goes quiet.",
    )
    keepalive: KeepaliveKind = Field(
        "auto",
        description="What the keep-alive is: comment (`: keepalive`) | ping (Anthropic "
        "`event: ping`) | auto (ping for Anthropic, an empty line for NDJSON, else a comment).",
    )

    @model_validator(mode="after")
    def _one_trigger(self) -> Disconnect:
        if self.keepalive_every_ms is not None and self.mode != "stall":
            raise ValueError("keepalive_every_ms needs mode: stall")
        given = [
            n
            for n in ("after_events", "after_bytes", "after_tokens", "after_ms")
            if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of after_events, after_bytes, after_tokens, after_ms"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def prompt(self) -> bool:
        # after_ms runs a timer beside the stream; keep-alives are written on a timer.
        return self.after_ms is None and self.keepalive_every_ms is None

    @property
    def closes_connection(self) -> bool:
        return self.mode == "close"

    @property
    def needs_events(self) -> bool:
        return self.after_events is not None or self.after_tokens is not None

    def horizon(self, ctx: FaultContext) -> Horizon | None:
        # Every chunk before the cut point passes as it is; the cut comes at the data
        # event after the last one delivered, or at the chunk that reaches after_bytes.
        # Tokens need each event parsed, and a timer runs beside the stream: no promise.
        if self.after_events is not None:
            return Horizon(events=self.after_events + 1)
        if self.after_bytes is not None:
            return Horizon(nbytes=self.after_bytes)
        return None

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        limit = self.after_events if self.after_events is not None else self.after_tokens
        # Events (or tokens) and bytes delivered so far, the ones the proxy passed
        # before starting this chain included (see horizon); only after_events counts
        # events (an after_bytes cut logs 0 of them).
        counted = ctx.passed_events if self.after_events is not None else 0
        sent = ctx.passed_bytes
        deadline = None if self.after_ms is None else ctx.started + self.after_ms / 1000.0
        # Without a deadline the input is read as it is: one async generator less per event.
        feed_in = chunks if deadline is None else _until(chunks, deadline, ctx)
        # Closed on the way out, the cut included: it closes the faults before this one.
        async with closing(feed_in) as feed:
            async for chunk in feed:
                data = chunk.data
                if self.after_bytes is not None and sent + len(data) >= self.after_bytes:
                    head = data[: self.after_bytes - sent]
                    sent += len(head)
                    if head:
                        yield replace(chunk, data=head)
                    break
                if limit is not None and self._counts(data, ctx):
                    if counted >= limit:
                        if self.split_event:
                            torn = _torn(chunk)
                            sent += len(torn.data)
                            yield torn
                        break
                    counted += 1
                sent += len(data)
                yield chunk
            else:
                if deadline is None or ctx.clock.now() < deadline:
                    return  # the stream ended before the cut point: nothing fired
            if self.keepalive_every_ms is not None and not ctx.request.websocket:
                beat = self.keepalive_bytes(ctx)
                ctx.fired("stall_keepalive", events=counted, nbytes=sent, detail=_beat(beat))
                # Content is over, the connection is not: breathe until the client leaves
                # (the proxy's handler is cancelled then), exactly like a silent stall.
                every = self.keepalive_every_ms / 1000.0
                due = ctx.clock.now()
                while True:
                    due += every
                    await ctx.clock.sleep(due - ctx.clock.now())
                    yield Chunk(beat, due)
            ctx.fired(self.mode, events=counted, nbytes=sent)
            raise StreamEnd(self.mode, "disconnect")

    def keepalive_bytes(self, ctx: FaultContext) -> bytes:
        """The keep-alive this exchange's wire format gets."""
        kind = self.keepalive
        if kind == "auto":
            fmt = get(ctx.request.provider)
            if fmt.framing == "ndjson":
                return KEEPALIVES["ndjson"]
            kind = "ping" if fmt.name == "anthropic" else "comment"
        return KEEPALIVES[kind]

    def _counts(self, data: bytes, ctx: FaultContext) -> bool:
        if self.after_events is not None:
            return is_event(data, ctx)
        return tokens(data, ctx) > 0


def _beat(beat: bytes) -> str:
    return f"keepalive {beat.decode().strip() or 'empty line'!r}"


async def _until(
    chunks: AsyncIterator[Chunk], deadline: float, ctx: FaultContext
) -> AsyncIterator[Chunk]:
    """The chunks that arrive before ``deadline``; a silent upstream does not hold the cut back."""
    feed = Feed(chunks, ctx.clock)
    try:
        async for chunk in feed.until(deadline):
            if chunk.received >= deadline:
                return
            yield chunk
    finally:
        await feed.aclose()
