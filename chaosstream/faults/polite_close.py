"""Polite close: the server ends an SSE stream early, telling the client when to come back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from pydantic import Field, model_validator

from chaosstream.faults._events import is_event, is_terminal_chunk
from chaosstream.faults._feed import closing
from chaosstream.faults.base import Chunk, Fault, FaultContext, StreamEnd
from chaosstream.streams.registry import framer_for


class PoliteClose(Fault):
    """Ends the response cleanly after `after_events` data events, or just before the terminal
    event (`before_terminal`: for MCP, the JSON-RPC response), first sending an SSE `retry:
    <retry_ms>` field.

    This is a server closing a stream it means the client to resume: MCP Streamable HTTP
    (2025-11-25) lets a server close an SSE stream after sending an event id, and says it
    SHOULD first send `retry`; the client must then reconnect with `GET` and
    `Last-Event-ID` after that long, and must not take the close as cancellation. With
    `retry_ms: null` no field is sent: a plain cut before the response. Unlike `disconnect`,
    the events before the cut carry their ids, so the stream is resumable. Only SSE streams
    get a `retry` field; other framings are only cut. If the stream ends first, nothing
    fires.
    """

    type: Literal["polite_close"] = "polite_close"
    after_events: int | None = Field(
        None, ge=0, description="Close after this many data events (0 = before the first)."
    )
    before_terminal: bool = Field(
        False, description="Instead: close just before the terminal event (the answer itself)."
    )
    retry_ms: int | None = Field(
        1000, ge=0, description="The `retry:` field sent before closing; null sends none."
    )

    @model_validator(mode="after")
    def _position(self) -> PoliteClose:
        if (self.after_events is None) == (not self.before_terminal):
            raise ValueError("give exactly one of after_events, before_terminal: true")
        return self

    @property
    def needs_events(self) -> bool:
        return True

    @property
    def prompt(self) -> bool:
        return True

    @property
    def closes_connection(self) -> bool:
        return True

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        async with closing(chunks):
            events = sent = 0
            async for chunk in chunks:
                if is_event(chunk.data, ctx):
                    if (self.before_terminal and is_terminal_chunk(chunk.data, ctx)) or (
                        self.after_events is not None and events >= self.after_events
                    ):
                        sse = (
                            not ctx.request.websocket
                            and framer_for(ctx.request.provider).name == "sse"
                        )
                        retry = self.retry_ms if sse else None
                        ctx.fired("close", events=events, nbytes=sent, detail=f"retry {retry} ms")
                        if retry is not None:
                            # WHATWG HTML 9.2.6: a block with only a `retry` field sets the
                            # reconnection time and dispatches nothing.
                            yield Chunk(f"retry: {retry}\n\n".encode(), chunk.received)
                        raise StreamEnd("close", "polite_close")
                    events += 1
                sent += len(chunk.data)
                yield chunk
