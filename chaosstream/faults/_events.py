"""What a chunk means to a fault that counts events or tokens.

When ``ctx.framed`` holds, a chunk is one raw frame of the request's wire
format (an SSE event, an NDJSON line: ``streams.registry.framer_for``), or one
WebSocket message (``ctx.request.websocket``), where every message counts as
one event and one token. Keep-alives (comment-only SSE blocks, blank lines)
are not events: they dispatch nothing.
"""

from __future__ import annotations

import json

from chaosstream.faults.base import FaultContext
from chaosstream.streams.registry import framer_for, get


def _generic_ws(ctx: FaultContext) -> bool:
    """A WebSocket whose format is not known (``/ws``): every message is an event and a token.

    A WebSocket format (OpenAI Realtime) has a message framing of its own
    (``ws-json``), so its messages are read like any format's frames.
    """
    return ctx.request.websocket and framer_for(ctx.request.provider).name != "ws-json"


def is_event(data: bytes, ctx: FaultContext) -> bool:
    """Does this chunk dispatch an event (a frame with data, or a WebSocket message)?"""
    if ctx.request.websocket:
        return True
    return framer_for(ctx.request.provider).dispatches(data)


def tokens(data: bytes, ctx: FaultContext) -> int:
    """Content pieces this chunk carries: 1 for a token frame, else 0.

    Plain SSE counts every data event, as the provider-neutral case has no
    notion of tokens.
    """
    if _generic_ws(ctx):
        return 1
    fmt = get(ctx.request.provider)
    event = framer_for(fmt).parse(data, True)
    if not event.has_data:
        return 0
    return fmt.tokens(event)


def is_terminal_chunk(data: bytes, ctx: FaultContext) -> bool:
    """Is this the frame a complete stream ends with (``[DONE]``, ``message_stop``, ...)?

    On a WebSocket without a format, a JSON message whose ``type`` is ``done`` or
    ``message_stop``; with one (OpenAI Realtime), the format's terminal (``response.done``).
    """
    if _generic_ws(ctx):
        try:
            obj = json.loads(data)
        except ValueError:
            return False
        return isinstance(obj, dict) and obj.get("type") in ("done", "message_stop")
    fmt = get(ctx.request.provider)
    return fmt.is_terminal(framer_for(fmt).parse(data, True))


def payload(data: bytes, ctx: FaultContext) -> tuple[int, int]:
    """Start and end of a frame's payload (the whole message on a WebSocket)."""
    if ctx.request.websocket:
        return 0, len(data)
    return framer_for(ctx.request.provider).payload(data)
