"""OpenAI-compatible endpoints: ``/v1/chat/completions`` and ``/v1/models``."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from chaosstream.mock._json import JsonTooDeep, loads_bounded
from chaosstream.mock._settings import SETTINGS, BadOverride, with_overrides
from chaosstream.mock._stats import STATS, ClientGone
from chaosstream.mock._stream import Pacer, json_data, open_event_stream, sse_event
from chaosstream.mock._text import answer_tokens, count_prompt_tokens

DEFAULT_MODEL = "chaosstream-mock"
MODEL_IDS = ("chaosstream-mock", "chaosstream-mock-claude")


def openai_error(
    status: int, message: str, error_type: str = "invalid_request_error"
) -> web.Response:
    """An error response in OpenAI's shape."""
    body = {"error": {"message": message, "type": error_type, "param": None, "code": None}}
    return web.json_response(body, status=status)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """Parse the request body as a JSON object; ValueError says what is wrong."""
    raw = await request.read()
    try:
        body = loads_bounded(raw)
    except JsonTooDeep:
        raise
    except ValueError as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    if not isinstance(body.get("messages"), list):
        raise ValueError("'messages' is a required property and must be a list")
    return body


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``: a ``chat.completion`` or a stream of chunks."""
    try:
        body = await read_json_object(request)
        settings = with_overrides(request.app[SETTINGS], request.headers)
    except (ValueError, BadOverride) as exc:
        return openai_error(400, str(exc))
    pacer = Pacer(request, settings)
    tokens = answer_tokens(body, settings.tokens)
    model = str(body.get("model") or DEFAULT_MODEL)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    usage = {
        "prompt_tokens": count_prompt_tokens(body),
        "completion_tokens": len(tokens),
        "total_tokens": count_prompt_tokens(body) + len(tokens),
    }
    if body.get("stream") is True:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return await _stream(
            request, pacer, tokens, completion_id, created, model, usage if include_usage else None
        )
    try:
        # A real non-streaming call answers once the whole text is generated.
        await pacer.wait_token(max(len(tokens) - 1, 0))
    except ClientGone:
        return web.Response(status=499)
    return web.json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    )


async def _stream(
    request: web.Request,
    pacer: Pacer,
    tokens: list[str],
    completion_id: str,
    created: int,
    model: str,
    usage: dict[str, int] | None,
) -> web.StreamResponse:
    def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if usage is not None:
            payload["usage"] = None
        return sse_event(json_data(payload))

    resp = await open_event_stream(request)
    try:
        async with request.app[STATS].track():
            await pacer.wait_token(0)
            # The role chunk goes out with the first token: the first body byte
            # arrives at TTFT, as with the real API.
            opening = chunk({"role": "assistant", "content": ""}, None)
            for index, token in enumerate(tokens):
                if index:
                    await pacer.wait_token(index)
                await resp.write(opening + chunk({"content": token}, None))
                opening = b""
            tail = opening + chunk({}, "stop")
            if usage is not None:
                tail += sse_event(
                    json_data(
                        {
                            "id": completion_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                )
            await resp.write(tail + sse_event("[DONE]"))
            await resp.write_eof()
    except (ClientGone, ConnectionError):
        pass
    return resp


def _model(model_id: str) -> dict[str, Any]:
    # One object that satisfies both SDKs' model shapes.
    return {
        "id": model_id,
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "chaosstream",
        "type": "model",
        "display_name": model_id,
        "created_at": "2023-11-14T22:13:20Z",
    }


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: the mock's models in OpenAI's (and Anthropic's) list shape."""
    return web.json_response(
        {
            "object": "list",
            "data": [_model(model_id) for model_id in MODEL_IDS],
            "has_more": False,
            "first_id": MODEL_IDS[0],
            "last_id": MODEL_IDS[-1],
        }
    )


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}``: the mock answers as any model, so every id exists."""
    return web.json_response(_model(request.match_info["model_id"]))
