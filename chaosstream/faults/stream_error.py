"""Stream error: the provider reports an error in the middle of a stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import Field

from chaosstream.faults._events import is_event
from chaosstream.faults._feed import closing
from chaosstream.faults.base import Chunk, Fault, FaultContext, StreamEnd
from chaosstream.streams.format import ErrorKind
from chaosstream.streams.registry import framer_for, get


class StreamError(Fault):
    """After `after_events` data events, sends an error event and ends the stream.

    The error is in the provider's own shape: Anthropic `event: error` with
    `{"type": "error", "error": {"type": "overloaded_error", ...}}`, OpenAI a
    `data: {"error": {...}}` chunk (both SDKs raise on it), plain SSE
    `event: error`. Then the response ends cleanly, without the terminal
    event, as the providers do. On a WebSocket the error is a JSON message
    `{"type": "error", "error": {"type": kind, ...}}` (OpenAI Realtime: its own
    `error` event, `{"type": "server_error", "code": "server_overloaded", ...}`)
    followed by close code 1011. If the stream ends before the position,
    nothing fires.
    """

    type: Literal["stream_error"] = "stream_error"
    after_events: int = Field(0, ge=0, description="Data events delivered before the error.")
    kind: ErrorKind = Field("overloaded", description="overloaded | server_error | rate_limit.")

    @property
    def needs_events(self) -> bool:
        return True

    @property
    def prompt(self) -> bool:
        return True

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        async with closing(chunks):
            events = sent = 0
            last = b""  # the last event delivered: numbered formats continue its sequence
            async for chunk in chunks:
                if is_event(chunk.data, ctx):
                    if events >= self.after_events:
                        ctx.fired(self.kind, events=events, nbytes=sent)
                        yield replace(chunk, data=self._error(ctx, last))
                        raise StreamEnd("close", f"stream_error {self.kind}", keep_alive=True)
                    events += 1
                    last = chunk.data
                sent += len(chunk.data)
                yield chunk

    def _error(self, ctx: FaultContext, last: bytes) -> bytes:
        fmt = get(ctx.request.provider)
        if ctx.request.websocket and fmt.framing != "ws-json":
            message = {"type": "error", "error": {"type": self.kind, "message": self.kind}}
            return json.dumps(message).encode()
        previous = framer_for(fmt).parse(last, False) if last else None
        return fmt.error_frame(self.kind, previous)
