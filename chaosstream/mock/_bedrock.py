"""Bedrock Runtime Converse: ``POST /model/{modelId}/converse-stream`` and ``/converse``.

The stream is AWS's binary event stream (``application/vnd.amazon.eventstream``):
``messageStart``, ``contentBlockDelta`` per token, ``contentBlockStop``,
``messageStop`` (``stopReason: end_turn``), ``metadata`` (usage, metrics), as
Bedrock sends them (botocore's ``bedrock-runtime`` service model,
``ConverseStreamOutput``). ``converse`` answers one JSON ``ConverseResponse``.
SigV4 signatures are not checked: boto3 with dummy keys works unchanged.

Per-request extra: ``x-chaosstream-mock-error-after: N`` ends the stream with a
``modelStreamErrorException`` after N tokens, as Bedrock does when the model
fails mid-answer.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from chaosstream.mock._json import loads_bounded
from chaosstream.mock._settings import SETTINGS, BadOverride, with_overrides
from chaosstream.mock._stats import STATS, ClientGone
from chaosstream.mock._stream import Pacer
from chaosstream.mock._text import answer_tokens, count_prompt_tokens
from chaosstream.streams.bedrock import bedrock_error, event_message, exception_message

EVENTSTREAM = "application/vnd.amazon.eventstream"
HEADER_ERROR_AFTER = "x-chaosstream-mock-error-after"
#: The mock's in-stream model failure (Bedrock's modelStreamErrorException).
MODEL_STREAM_ERROR = "The model encountered an error while streaming the response."


def _error(status: int, message: str) -> web.Response:
    name, body = bedrock_error(status, message)
    # botocore reads the error's type from this header first (RestJSONParser).
    return web.json_response(body, status=status, headers={"x-amzn-ErrorType": name})


def _error_after(request: web.Request) -> int | None:
    raw = request.headers.get(HEADER_ERROR_AFTER)
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadOverride(f"{HEADER_ERROR_AFTER} must be an integer >= 0, got {raw[:80]!r}")
    return int(raw)


def _usage(body: dict[str, Any], tokens: list[str]) -> dict[str, int]:
    prompt = count_prompt_tokens(body)
    return {"inputTokens": prompt, "outputTokens": len(tokens), "totalTokens": prompt + len(tokens)}


async def converse_stream(request: web.Request) -> web.StreamResponse:
    """``POST /model/{modelId}/converse-stream``: the answer as event stream messages."""
    return await _converse(request, stream=True)


async def converse(request: web.Request) -> web.StreamResponse:
    """``POST /model/{modelId}/converse``: the whole answer as one JSON response."""
    return await _converse(request, stream=False)


async def _converse(request: web.Request, stream: bool) -> web.StreamResponse:
    try:
        body = loads_bounded(await request.read())
        settings = with_overrides(request.app[SETTINGS], request.headers)
        error_after = _error_after(request)
    except (ValueError, BadOverride) as exc:
        return _error(400, str(exc))
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return _error(
            400,
            "1 validation error detected: Value at 'messages' failed to satisfy "
            "constraint: Member must not be null",
        )
    tokens = answer_tokens(body, settings.tokens)
    pacer = Pacer(request, settings)
    started = time.monotonic()
    if not stream:
        try:
            await pacer.wait_token(max(len(tokens) - 1, 0))
        except ClientGone:
            return web.Response(status=499)
        return web.json_response(
            {
                "output": {
                    "message": {"role": "assistant", "content": [{"text": "".join(tokens)}]}
                },
                "stopReason": "end_turn",
                "usage": _usage(body, tokens),
                "metrics": {"latencyMs": int((time.monotonic() - started) * 1000)},
            }
        )
    resp = web.StreamResponse(headers={"Content-Type": EVENTSTREAM})
    await resp.prepare(request)
    try:
        async with request.app[STATS].track():
            await resp.write(event_message("messageStart", {"role": "assistant"}))
            for index, token in enumerate(tokens):
                await pacer.wait_token(index)
                if index == error_after:
                    break
                delta = {"contentBlockIndex": 0, "delta": {"text": token}}
                await resp.write(event_message("contentBlockDelta", delta))
            if not tokens:
                await pacer.wait_token(0)  # an empty answer still comes at TTFT
            if error_after is not None and error_after <= len(tokens):
                await resp.write(exception_message("modelStreamErrorException", MODEL_STREAM_ERROR))
            else:
                await resp.write(event_message("contentBlockStop", {"contentBlockIndex": 0}))
                await resp.write(event_message("messageStop", {"stopReason": "end_turn"}))
                metadata = {
                    "usage": _usage(body, tokens),
                    "metrics": {"latencyMs": int((time.monotonic() - started) * 1000)},
                }
                await resp.write(event_message("metadata", metadata))
            await resp.write_eof()
    except (ClientGone, ConnectionError):
        pass
    return resp
