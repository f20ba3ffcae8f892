"""Anthropic-compatible endpoint: ``POST /v1/messages``."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from chaosstream.mock._openai import read_json_object
from chaosstream.mock._settings import SETTINGS, BadOverride, with_overrides
from chaosstream.mock._stats import STATS, ClientGone
from chaosstream.mock._stream import Pacer, json_data, open_event_stream, sse_event
from chaosstream.mock._text import answer_tokens, count_prompt_tokens

DEFAULT_MODEL = "chaosstream-mock-claude"
# The real API pings now and then while it generates; clients must skip them.
PING_EVERY_TOKENS = 10


def anthropic_error(
    status: int, message: str, error_type: str = "invalid_request_error"
) -> web.Response:
    """An error response in Anthropic's shape."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return web.json_response(body, status=status)


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``: a ``message`` object or its event stream."""
    try:
        body = await read_json_object(request)
        settings = with_overrides(request.app[SETTINGS], request.headers)
    except (ValueError, BadOverride) as exc:
        return anthropic_error(400, str(exc))
    pacer = Pacer(request, settings)
    tokens = answer_tokens(body, settings.tokens)
    model = str(body.get("model") or DEFAULT_MODEL)
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    input_tokens = count_prompt_tokens(body)
    if body.get("stream") is True:
        return await _stream(request, pacer, tokens, message_id, model, input_tokens)
    try:
        await pacer.wait_token(max(len(tokens) - 1, 0))
    except ClientGone:
        return web.Response(status=499)
    return web.json_response(
        _message(message_id, model, input_tokens, len(tokens), "".join(tokens), "end_turn")
    )


def _message(
    message_id: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    text: str | None,
    stop_reason: str | None,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [] if text is None else [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return sse_event(json_data({"type": name, **payload}), event=name)


async def _stream(
    request: web.Request,
    pacer: Pacer,
    tokens: list[str],
    message_id: str,
    model: str,
    input_tokens: int,
) -> web.StreamResponse:
    resp = await open_event_stream(request)
    try:
        async with request.app[STATS].track():
            await pacer.wait_token(0)
            # The opening events travel with the first delta, so the first body byte
            # arrives at TTFT for both providers alike.
            pending = (
                _event(
                    "message_start",
                    {"message": _message(message_id, model, input_tokens, 1, None, None)},
                )
                + _event(
                    "content_block_start",
                    {"index": 0, "content_block": {"type": "text", "text": ""}},
                )
                + _event("ping", {})
            )
            for index, token in enumerate(tokens):
                if index:
                    await pacer.wait_token(index)
                    if index % PING_EVERY_TOKENS == 0:
                        pending += _event("ping", {})
                pending += _event(
                    "content_block_delta",
                    {
                        "index": 0,
                        "delta": {"type": "text_delta", "text": token},
                    },
                )
                await resp.write(pending)
                pending = b""
            pending += (
                _event("content_block_stop", {"index": 0})
                + _event(
                    "message_delta",
                    {
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": len(tokens)},
                    },
                )
                + _event("message_stop", {})
            )
            await resp.write(pending)
            await resp.write_eof()
    except (ClientGone, ConnectionError):
        pass
    return resp
