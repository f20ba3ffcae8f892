"""Content: the stream is well-formed, but the answer is not the one a user wanted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

from pydantic import Field

from chaosstream.faults._events import tokens
from chaosstream.faults._feed import closing
from chaosstream.faults.base import Chunk, Fault, FaultContext
from chaosstream.streams.format import (
    REASONING,
    REFUSAL,
    StopKind,
    ToolCall,
    WireFormat,
    json_or_none,
)
from chaosstream.streams.registry import framer_for, get
from chaosstream.streams.sse import Event

__all__ = ["REASONING", "REFUSAL", "Content"]

ContentKind = Literal[
    "length",
    "content_filter",
    "refusal",
    "empty",
    "tool_args_broken",
    "tool_args_cut",
    "duplicate_tool_ids",
    "reasoning_only",
]

# The stop each kind ends with; the format says it its own way (WireFormat.stop_frame).
_STOP: dict[ContentKind, StopKind] = {
    "length": "length",
    "content_filter": "content_filter",
    "refusal": "refusal",
    "empty": "stop",
    "tool_args_broken": "tool_calls",
    "tool_args_cut": "length",
    "duplicate_tool_ids": "tool_calls",
    "reasoning_only": "stop",
}
_TOOLS = ("tool_args_broken", "tool_args_cut", "duplicate_tool_ids")
_NO_TEXT = ("empty", "reasoning_only")

TOOL = "get_weather"
# Arguments as a model streams them. Broken: an unquoted value, what models emit
# without strict mode (openai-python's stream helper then fails to parse them;
# anthropic-python raises "Unable to parse tool parameter JSON from model").
# Cut: max_tokens reached inside the arguments (anthropic-sdk-python#787 shapes).
_BROKEN = ('{"city": "Par', 'is", "unit": cel', "sius}")
_CUT = ('{"city": "Par', 'is", "uni')
_PARIS = ('{"city": ', '"Paris"}')
_TOKYO = ('{"city": ', '"Tokyo"}')


class Content(Fault):
    """Ends a well-formed stream with an answer the user did not ask for.

    After `after_tokens` text tokens the rest of the answer is replaced:
    `length` stops mid-sentence (OpenAI `finish_reason: "length"`, Anthropic
    `stop_reason: "max_tokens"`, Responses `response.incomplete`, Gemini
    `MAX_TOKENS`, Ollama `done_reason: "length"`); `content_filter` stops as
    a filter does (`content_filter`, Anthropic `refusal`, Responses
    `incomplete_details.reason: content_filter`, Gemini `SAFETY`; Azure
    OpenAI's filters do it mid-stream); `refusal` adds a refusal (OpenAI
    `delta.refusal`, Responses' refusal part, Anthropic `stop_reason:
    "refusal"`, refusal text on Gemini and Ollama); `empty` sends no text at
    all and ends cleanly (an answer of zero tokens). OpenAI Chat and
    Anthropic only: `tool_args_broken` streams a tool call whose arguments
    are not valid JSON and stops for tool use; `tool_args_cut` stops with
    `length`/`max_tokens` inside the arguments; `duplicate_tool_ids` streams
    two tool calls sharing one id (OpenAI-compatible servers that number
    ids per response, a collision clients keyed by id merge);
    `reasoning_only` sends hidden reasoning (Anthropic thinking, DeepSeek's
    `reasoning_content`) and no text, what a `max_tokens` spent on reasoning
    leaves. Every stream still ends with its terminal frame, so a client that
    only waits for it presents the stub as the whole answer. Where a format
    has no such answer the stream passes untouched and nothing fires.
    """

    type: Literal["content"] = "content"
    kind: ContentKind = Field(
        ...,
        description="length | content_filter | refusal | empty | tool_args_broken | "
        "tool_args_cut | duplicate_tool_ids | reasoning_only (see above).",
    )
    after_tokens: int = Field(
        5,
        ge=0,
        description="Text tokens delivered before the change (`empty` and `reasoning_only` "
        "deliver none).",
    )

    @property
    def needs_events(self) -> bool:
        return True

    @property
    def prompt(self) -> bool:
        return True

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        async with closing(chunks):
            fmt = get(ctx.request.provider)
            if ctx.request.websocket or self._tail(fmt, None, "", 0, "x") is None:
                async for chunk in chunks:
                    yield chunk
                return
            framer = framer_for(fmt)
            limit = 0 if self.kind in _NO_TEXT else self.after_tokens
            delivered = sent = 0
            pieces: list[str] = []
            last: Event | None = None  # the last data frame delivered: ids, blocks, numbering
            async for chunk in chunks:
                event = framer.parse(chunk.data, last is None)
                if event.has_data and fmt.is_terminal(event):
                    break  # the stream ended before the stop point: end it our way
                count = tokens(chunk.data, ctx)
                if count and delivered >= limit:
                    break
                if limit == 0 and count == 0 and _empty_block(fmt, event):
                    continue  # no text block at all: content is []
                if event.has_data:
                    last = event
                    text = fmt.text(event)
                    if text is not None:
                        pieces.append(text)
                delivered += count
                sent += len(chunk.data)
                yield chunk
            else:
                return  # upstream ended without a terminal event: nothing to stop
            tool_id = f"{ctx.rng.getrandbits(64):016x}"  # seeded: the same ids on replay
            tail = self._tail(fmt, last, "".join(pieces), delivered, tool_id)
            assert tail is not None  # the format answered the same question above
            ctx.fired(
                self.kind, events=delivered, nbytes=sent, detail=f"{fmt.name}: {_STOP[self.kind]}"
            )
            yield replace(chunk, data=tail)
            # The rest of upstream's answer is dropped: the response ends here, cleanly.

    def _tail(
        self, fmt: WireFormat, last: Event | None, text: str, delivered: int, tool_id: str
    ) -> bytes | None:
        """What replaces the rest of the answer, stop and terminal included; None when
        the format cannot say it."""
        body: bytes | None = b""
        if self.kind in _TOOLS:
            calls = {
                "tool_args_broken": [ToolCall(tool_id, TOOL, _BROKEN)],
                "tool_args_cut": [ToolCall(tool_id, TOOL, _CUT)],
                "duplicate_tool_ids": [
                    ToolCall(tool_id, TOOL, _PARIS),
                    ToolCall(tool_id, TOOL, _TOKYO),
                ],
            }[self.kind]
            body = fmt.tool_call_frames(calls, last)
        elif self.kind == "reasoning_only":
            body = fmt.reasoning_frames(REASONING, last)
        if body is None:
            return None
        if body:
            last = _last_frame(fmt, body) or last
        stop = fmt.stop_frame(_STOP[self.kind], last, text=text, tokens=delivered)
        return None if stop is None else body + stop


def _empty_block(fmt: WireFormat, event: Event) -> bool:
    """Anthropic's text block start and stop: left out when no text is sent at all."""
    if fmt.name != "anthropic" or not event.has_data:
        return False
    obj = json_or_none(event.data)
    return isinstance(obj, dict) and obj.get("type") in (
        "content_block_start",
        "content_block_stop",
    )


def _last_frame(fmt: WireFormat, data: bytes) -> Event | None:
    """The last data frame of ``data`` (frames the fault built itself)."""
    splitter = framer_for(fmt).splitter()
    frames = splitter.feed(data)
    parse = framer_for(fmt).parse
    events = [e for e in (parse(raw, False) for raw in frames) if e.has_data]
    return events[-1] if events else None
