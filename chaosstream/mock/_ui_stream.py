"""A chat route in the Vercel AI SDK's UI message stream protocol (what ``useChat`` reads).

``POST /api/ui/chat`` always; ``POST /api/chat`` too when the body is an AI SDK
request (it has ``trigger``, which ``DefaultChatTransport`` always sends and
Ollama never does), so a page built on ``useChat``'s default ``api`` works
against the mock unchanged.

The stream is what ``streamText(...).toUIMessageStreamResponse()`` sends (ai 6,
``src/ui-message-stream/ui-message-stream-headers.ts`` and
``json-to-sse-transform-stream.ts``): SSE with header
``x-vercel-ai-ui-message-stream: v1``, one ``data:`` JSON part per event --
``start``, ``start-step``, ``text-start``, ``text-delta``..., ``text-end``,
``finish-step``, ``finish`` -- and ``data: [DONE]`` last. An error is a part
``{"type": "error", "errorText": ...}``; a stopped generation is ``{"type": "abort"}``.

Per-request extras of the mock: ``x-chaosstream-mock-error-after: N`` sends an
``error`` part after N tokens, ``x-chaosstream-mock-abort-after: N`` an
``abort`` part (each followed by ``[DONE]``, as the SDK's server side closes).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from chaosstream.mock import _ollama
from chaosstream.mock._json import loads_bounded
from chaosstream.mock._settings import SETTINGS, BadOverride, with_overrides
from chaosstream.mock._stats import STATS, ClientGone
from chaosstream.mock._stream import Pacer, json_data, sse_event
from chaosstream.mock._text import answer_tokens

HEADER = "x-vercel-ai-ui-message-stream"
HEADER_ERROR_AFTER = _ollama.HEADER_ERROR_AFTER
HEADER_ABORT_AFTER = "x-chaosstream-mock-abort-after"
#: The AI SDK's own default error text (``toUIMessageStream``'s onError masks errors).
ERROR_TEXT = "An error occurred."
# ui-message-stream-headers.ts, less `connection: keep-alive` (hop-by-hop: aiohttp decides).
_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    HEADER: "v1",
    "X-Accel-Buffering": "no",
}


def is_ui_request(body: Any) -> bool:
    """True for the body ``DefaultChatTransport`` sends: it always carries ``trigger``."""
    return isinstance(body, dict) and isinstance(body.get("trigger"), str)


def ui_messages_as_chat(messages: list[Any]) -> list[dict[str, Any]]:
    """UI messages (``parts``) as ``{role, content}``: the text decides the answer, not the ids.

    ``useChat`` gives every message a random id, so keying on the whole message
    would change the answer on every run; the same words sent to
    ``/v1/chat/completions`` get the same text.
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        parts = m.get("parts")
        text = "".join(
            p["text"]
            for p in (parts if isinstance(parts, list) else [])
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
        out.append({"role": m.get("role"), "content": text})
    return out


def _count(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise BadOverride(f"{name} must be an integer >= 0, got {raw[:80]!r}")
    return value


def _bad_request(message: str) -> web.Response:
    # HttpChatTransport throws `new Error(await response.text())`: plain text reads best.
    return web.Response(status=400, text=message)


async def ollama_or_ui_chat(request: web.Request) -> web.StreamResponse:
    """``POST /api/chat``: the UI stream for an AI SDK request, else Ollama's chat."""
    try:
        body = loads_bounded(await request.read())
    except ValueError:
        body = None
    if is_ui_request(body):
        return await chat(request)
    return await _ollama.chat(request)


async def chat(request: web.Request) -> web.StreamResponse:
    """``POST /api/ui/chat``: the answer to the conversation as a UI message stream."""
    try:
        body = loads_bounded(await request.read())
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise ValueError("request body must be a JSON object with a 'messages' list")
        settings = with_overrides(request.app[SETTINGS], request.headers)
        error_after = _count(request.headers, HEADER_ERROR_AFTER)
        abort_after = _count(request.headers, HEADER_ABORT_AFTER)
    except (ValueError, BadOverride) as exc:
        return _bad_request(str(exc))
    tokens = answer_tokens({"messages": ui_messages_as_chat(body["messages"])}, settings.tokens)
    pacer = Pacer(request, settings)
    stop_after, stop_part = len(tokens) + 1, b""
    for after, part in (
        (abort_after, {"type": "abort"}),
        (error_after, {"type": "error", "errorText": ERROR_TEXT}),
    ):
        if after is not None and after <= min(stop_after, len(tokens)):
            stop_after, stop_part = after, _part(part)
    text_id = "text-0"
    resp = web.StreamResponse(headers=_HEADERS)
    await resp.prepare(request)
    try:
        async with request.app[STATS].track():
            await pacer.wait_token(0)
            # The opening parts go out with the first delta, so the first body
            # byte arrives at TTFT as on the other routes.
            pending = (
                _part({"type": "start", "messageId": f"msg-{uuid.uuid4().hex[:16]}"})
                + _part({"type": "start-step"})
                + _part({"type": "text-start", "id": text_id})
            )
            for index, token in enumerate(tokens):
                if index:
                    await pacer.wait_token(index)
                if index == stop_after:
                    break
                delta = _part({"type": "text-delta", "id": text_id, "delta": token})
                await resp.write(pending + delta)
                pending = b""
            if stop_part:
                pending += stop_part
            else:
                pending += (
                    _part({"type": "text-end", "id": text_id})
                    + _part({"type": "finish-step"})
                    + _part({"type": "finish", "finishReason": "stop"})
                )
            await resp.write(pending + sse_event("[DONE]"))
            await resp.write_eof()
    except (ClientGone, ConnectionError):
        pass
    return resp


def _part(part: dict[str, Any]) -> bytes:
    return sse_event(json_data(part))
