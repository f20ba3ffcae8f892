"""Gemini: ``POST /v1beta|v1/models/{m}:streamGenerateContent?alt=sse`` and ``:generateContent``.

Each streamed chunk is a whole ``GenerateContentResponse`` with one token of
text; the last one also carries ``finishReason: "STOP"`` and
``usageMetadata``; there is no ``[DONE]``, as with the real API. Without
``alt=sse`` the stream is a JSON array, as the API sends it then.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from chaosstream.mock._json import JsonTooDeep, loads_bounded
from chaosstream.mock._settings import SETTINGS, BadOverride, with_overrides
from chaosstream.mock._stats import STATS, ClientGone
from chaosstream.mock._stream import Pacer, json_data, open_event_stream, sse_event
from chaosstream.mock._text import answer_tokens, count_prompt_tokens


def gemini_error(status: int, message: str, name: str = "INVALID_ARGUMENT") -> web.Response:
    """An error response in Gemini's shape (google.rpc.Status)."""
    body = {"error": {"code": status, "message": message, "status": name}}
    return web.json_response(body, status=status)


def _chunk(text: str, model: str, response_id: str, usage: dict[str, int] | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if usage is not None:
        candidate["finishReason"] = "STOP"
    out: dict[str, Any] = {"candidates": [{**candidate, "index": 0}], "modelVersion": model}
    if usage is not None:
        out["usageMetadata"] = usage
    out["responseId"] = response_id
    return out


async def generate(request: web.Request) -> web.StreamResponse:
    """``POST /v1beta/models/{model}:generateContent`` or ``:streamGenerateContent``."""
    model, _, method = request.match_info["model_method"].partition(":")
    if method not in ("generateContent", "streamGenerateContent"):
        return gemini_error(404, f"Method {method or '(none)'} is not found.", "NOT_FOUND")
    try:
        body = loads_bounded(await request.read())
        settings = with_overrides(request.app[SETTINGS], request.headers)
    except JsonTooDeep:
        raise
    except (ValueError, BadOverride) as exc:
        return gemini_error(400, f"Invalid JSON payload received. {exc}")
    if not isinstance(body, dict) or not isinstance(body.get("contents"), list):
        return gemini_error(400, "* GenerateContentRequest.contents: contents is not specified")
    tokens = answer_tokens(body, settings.tokens)
    prompt = count_prompt_tokens(body)
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": len(tokens),
        "totalTokenCount": prompt + len(tokens),
    }
    response_id = uuid.uuid4().hex[:22]
    pacer = Pacer(request, settings)
    if method == "generateContent":
        try:
            await pacer.wait_token(max(len(tokens) - 1, 0))
        except ClientGone:
            return web.Response(status=499)
        return web.json_response(_chunk("".join(tokens), model, response_id, usage))
    sse = request.query.get("alt") == "sse"
    resp = await open_event_stream(request) if sse else await _open_json(request)
    try:
        async with request.app[STATS].track():
            for index, token in enumerate(tokens or [""]):
                await pacer.wait_token(index)
                last = index >= len(tokens) - 1
                chunk = _chunk(token, model, response_id, usage if last else None)
                if sse:
                    await resp.write(sse_event(json_data(chunk)))
                else:
                    await resp.write(
                        (b"[" if index == 0 else b",\r\n") + json.dumps(chunk).encode()
                    )
            if not sse:
                await resp.write(b"]")
            await resp.write_eof()
    except (ClientGone, ConnectionError):
        pass
    return resp


async def _open_json(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=UTF-8"})
    await resp.prepare(request)
    return resp
