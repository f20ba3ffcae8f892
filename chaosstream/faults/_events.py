"""What a chunk means to a fault that counts events or tokens.

When ``ctx.framed`` holds, a chunk is one raw SSE event, or one WebSocket
message (``ctx.request.websocket``), where every message counts as one event
and one token. Comment-only blocks (keep-alives) are not events: the SSE spec
dispatches nothing for them.
"""

from __future__ import annotations

import json

from chaosstream.faults.base import FaultContext
from chaosstream.streams.providers import is_terminal, token_text
from chaosstream.streams.sse import parse_event


def is_event(data: bytes, ctx: FaultContext) -> bool:
    """Does this chunk dispatch an event (has a data field, or is a WebSocket message)?"""
    if ctx.request.websocket or data.startswith(b"data:"):
        return True  # the usual shape needs no parse: a data field dispatches
    return parse_event(data).has_data


def tokens(data: bytes, ctx: FaultContext) -> int:
    """Content pieces this chunk carries: 1 for a token event, else 0.

    Plain SSE counts every data event, as the provider-neutral case has no
    notion of tokens.
    """
    if ctx.request.websocket:
        return 1
    event = parse_event(data)
    if not event.has_data:
        return 0
    provider = ctx.request.provider
    if provider == "sse":
        return 1
    return 1 if token_text(event, provider) is not None else 0


def is_terminal_chunk(data: bytes, ctx: FaultContext) -> bool:
    """Is this the event a complete stream ends with (``[DONE]``, ``message_stop``)?

    On a WebSocket, a JSON message whose ``type`` is ``done`` or ``message_stop``.
    """
    if ctx.request.websocket:
        try:
            obj = json.loads(data)
        except ValueError:
            return False
        return isinstance(obj, dict) and obj.get("type") in ("done", "message_stop")
    return is_terminal(parse_event(data), ctx.request.provider)
