"""Content: the stream is well-formed, but the answer is not the one a user wanted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from chaosstream.faults._events import tokens
from chaosstream.faults.base import Chunk, Fault, FaultContext
from chaosstream.streams.registry import framer_for, get

ContentKind = Literal["length", "content_filter", "refusal", "empty"]

REFUSAL = "I'm sorry, but I can't help with that."
"""The refusal text sent (OpenAI's ``delta.refusal``)."""

# The stop each kind ends with, in each API's words. OpenAI Chat Completions:
# `finish_reason` "length" | "content_filter" | "stop" (API reference, the chat
# completion chunk object). Anthropic Messages: `stop_reason` "max_tokens" |
# "refusal" | "end_turn" (docs "Handling stop reasons"; Anthropic has no
# content-filter reason: its streaming classifiers stop with "refusal").
_OPENAI_STOP = {"length": "length", "content_filter": "content_filter", "refusal": "stop"}
_ANTHROPIC_STOP = {"length": "max_tokens", "content_filter": "refusal", "refusal": "refusal"}
FORMATS = ("openai", "anthropic")
"""Wire formats this fault speaks; on any other the stream passes untouched (nothing fires)."""


def _sse(obj: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


class Content(Fault):
    """Ends a well-formed stream with an answer the user did not ask for.

    `length` stops after `after_tokens` tokens mid-sentence with OpenAI's
    `finish_reason: "length"` / Anthropic's `stop_reason: "max_tokens"` (a
    `max_tokens` too small, or a long answer: the response is cut and says
    so in one field most UIs never read). `content_filter` stops with
    `finish_reason: "content_filter"` (Azure OpenAI's content filters do it
    mid-stream) / Anthropic's `stop_reason: "refusal"`. `refusal` answers
    with OpenAI's `delta.refusal` text (structured outputs' refusals) or
    Anthropic's `stop_reason: "refusal"` after `after_tokens` tokens. `empty`
    sends no text at all and ends cleanly (an answer of zero tokens, what a
    `max_tokens` spent on hidden reasoning leaves). Every stream still ends
    with its terminal event (`[DONE]`, `message_stop`), so a client that only
    waits for it presents the stub as the whole answer. Acts on OpenAI Chat
    Completions and Anthropic Messages streams; others pass untouched.
    """

    type: Literal["content"] = "content"
    kind: ContentKind = Field(
        ..., description="length | content_filter | refusal | empty (see above)."
    )
    after_tokens: int = Field(
        5, ge=0, description="Tokens delivered before the stop (`empty` delivers none)."
    )

    @property
    def needs_events(self) -> bool:
        return True

    @property
    def prompt(self) -> bool:
        return True

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        fmt = get(ctx.request.provider)
        if ctx.request.websocket or fmt.name not in FORMATS:
            async for chunk in chunks:
                yield chunk
            return
        framer = framer_for(fmt)
        limit = 0 if self.kind == "empty" else self.after_tokens
        delivered = sent = 0
        last: dict[str, Any] = {}  # the last JSON frame: ids and model to copy
        async for chunk in chunks:
            event = framer.parse(chunk.data, False)
            if event.has_data and fmt.is_terminal(event):
                break  # the stream ended before the stop point: end it our way
            count = tokens(chunk.data, ctx)
            if count and delivered >= limit:
                break
            if self.kind == "empty" and fmt.name == "anthropic" and count == 0:
                obj = _json(event.data)
                if obj.get("type") in ("content_block_start", "content_block_stop"):
                    continue  # no text block at all: content is []
            if event.has_data:
                last = _json(event.data) or last
            delivered += count
            sent += len(chunk.data)
            yield chunk
        else:
            return  # upstream ended without a terminal event: nothing to stop
        ctx.fired(self.kind, events=delivered, nbytes=sent, detail=self._reason(fmt.name))
        tail = (
            self._openai(last) if fmt.name == "openai" else self._anthropic(delivered)
        ) + fmt.terminal_frame()
        yield replace(chunk, data=tail)
        # The rest of upstream's answer is dropped: the response ends here, cleanly.

    def _reason(self, fmt: str) -> str:
        if self.kind == "empty":
            return "stop" if fmt == "openai" else "end_turn"
        return (_OPENAI_STOP if fmt == "openai" else _ANTHROPIC_STOP)[self.kind]

    def _openai(self, last: dict[str, Any]) -> bytes:
        base = {
            "id": last.get("id", "chatcmpl-chaosstream"),
            "object": "chat.completion.chunk",
            "created": last.get("created", 0),
            "model": last.get("model", "chaosstream"),
        }
        out = b""
        if self.kind == "refusal":
            delta = {"role": "assistant", "content": None, "refusal": REFUSAL}
            out += _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        stop = {"index": 0, "delta": {}, "finish_reason": self._reason("openai")}
        return out + _sse({**base, "choices": [stop]})

    def _anthropic(self, delivered: int) -> bytes:
        out = b""
        if self.kind != "empty":
            out += _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        delta = {"stop_reason": self._reason("anthropic"), "stop_sequence": None}
        stop = {"type": "message_delta", "delta": delta, "usage": {"output_tokens": delivered}}
        return out + _sse(stop, "message_delta")


def _json(data: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}
