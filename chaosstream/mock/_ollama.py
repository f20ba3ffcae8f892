"""Ollama-compatible endpoints: ``POST /api/chat``, ``POST /api/generate``, tags, version.

Shapes from Ollama's ``docs/api.md`` and what the ``ollama`` Python package
(0.6, ``_client.py``) reads:

- ``stream`` absent means *stream* (Ollama's default); the client always sends it.
- A stream is ``application/x-ndjson``: one JSON object per line, ``"done": false``
  with ``message.content`` (chat) or ``response`` (generate), then one line with
  ``"done": true``, ``done_reason`` and the counters.
- An error is ``{"error": "..."}``: the whole body with a 4xx/5xx status before
  a stream, or one line inside it (the client raises ``ollama.ResponseError``
  for both).

Per-request extras of the mock: ``x-chaosstream-mock-error-after: N`` ends the
stream with an ``{"error": ...}`` line after N tokens, as Ollama does when its
model runner dies mid-answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from chaosstream.mock._json import loads_bounded
from chaosstream.mock._settings import SETTINGS, BadOverride, with_overrides
from chaosstream.mock._stats import STATS, ClientGone
from chaosstream.mock._stream import Pacer
from chaosstream.mock._text import answer_tokens, count_prompt_tokens
from chaosstream.streams.ndjson import format_line

DEFAULT_MODEL = "chaosstream-mock"
NDJSON = "application/x-ndjson"
HEADER_ERROR_AFTER = "x-chaosstream-mock-error-after"
#: What the mock says in its in-stream error line (Ollama's wording when a runner dies).
RUNNER_ERROR = "an error was encountered while running the model: unexpected EOF"
# The Ollama release whose API the mock follows; clients may ask /api/version.
OLLAMA_VERSION = "0.12.0"


def ollama_error(status: int, message: str) -> web.Response:
    """An error response in Ollama's shape: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status)


def chat_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """The messages as ``{role, content}`` pairs: the part that decides the answer.

    The same conversation sent to ``/v1/chat/completions`` gets the same text,
    since the mock keys answers on these messages.
    """
    return [
        {"role": m.get("role"), "content": m.get("content", "")} if isinstance(m, dict) else m
        for m in messages
    ]


async def _read(request: web.Request, field: str) -> tuple[dict[str, Any], bool]:
    raw = await request.read()
    try:
        body = loads_bounded(raw)
    except ValueError as exc:
        raise ValueError(f"invalid request body: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    if field == "messages" and not isinstance(body.get("messages", []), list):
        raise ValueError("messages must be a list")
    if field == "prompt" and not isinstance(body.get("prompt", ""), str):
        raise ValueError("prompt must be a string")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise ValueError("stream must be true or false")
    return body, stream


def _error_after(headers: Mapping[str, str]) -> int | None:
    raw = headers.get(HEADER_ERROR_AFTER)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise BadOverride(f"{HEADER_ERROR_AFTER} must be an integer >= 0, got {raw[:80]!r}")
    return value


def _now() -> str:
    # Ollama writes RFC 3339 with nanoseconds; microseconds parse the same way.
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


async def chat(request: web.Request) -> web.StreamResponse:
    """``POST /api/chat``: a chat answer, as NDJSON lines unless ``stream`` is false."""
    return await _answer(request, "messages")


async def generate(request: web.Request) -> web.StreamResponse:
    """``POST /api/generate``: the completion of ``prompt``, NDJSON unless ``stream`` is false."""
    return await _answer(request, "prompt")


async def _answer(request: web.Request, field: str) -> web.StreamResponse:
    try:
        body, stream = await _read(request, field)
        settings = with_overrides(request.app[SETTINGS], request.headers)
        error_after = _error_after(request.headers)
    except (ValueError, BadOverride) as exc:
        return ollama_error(400, str(exc))
    if field == "messages":
        key: dict[str, Any] = {"messages": chat_messages(body.get("messages") or [])}
        if isinstance(body.get("system"), str):
            key["system"] = body["system"]
    else:
        key = {"prompt": body.get("prompt") or ""}
    tokens = answer_tokens(key, settings.tokens)
    model = str(body.get("model") or DEFAULT_MODEL)
    pacer = Pacer(request, settings)
    started = time.monotonic_ns()

    def line(text: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "created_at": _now()}
        if field == "messages":
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        return out

    def last(text: str) -> dict[str, Any]:
        out = line(text)
        out["done"] = True
        out["done_reason"] = "stop"
        if field == "prompt":
            out["context"] = list(range(1, len(tokens) + 1))
        elapsed = time.monotonic_ns() - started
        out.update(
            total_duration=elapsed,
            load_duration=0,
            prompt_eval_count=count_prompt_tokens(key),
            prompt_eval_duration=0,
            eval_count=len(tokens),
            eval_duration=elapsed,
        )
        return out

    if not stream:
        try:
            await pacer.wait_token(max(len(tokens) - 1, 0))
        except ClientGone:
            return web.Response(status=499)
        return web.json_response(last("".join(tokens)))
    resp = web.StreamResponse(headers={"Content-Type": NDJSON})
    await resp.prepare(request)
    try:
        async with request.app[STATS].track():
            for index, token in enumerate(tokens):
                await pacer.wait_token(index)
                if index == error_after:
                    break
                await resp.write(format_line({**line(token), "done": False}))
            if not tokens:
                await pacer.wait_token(0)  # an empty answer still comes at TTFT
            # The closing line follows the last token at once, as Ollama sends it.
            if error_after is not None and error_after <= len(tokens):
                await resp.write(format_line({"error": RUNNER_ERROR}))
            else:
                await resp.write(format_line(last("")))
            await resp.write_eof()
    except (ClientGone, ConnectionError):
        pass
    return resp


async def tags(request: web.Request) -> web.Response:
    """``GET /api/tags``: the mock's one model, in Ollama's list shape."""
    return web.json_response(
        {
            "models": [
                {
                    "name": DEFAULT_MODEL,
                    "model": DEFAULT_MODEL,
                    "modified_at": "2023-11-14T22:13:20Z",
                    "size": 0,
                    "digest": "0" * 64,
                    "details": {"format": "gguf", "family": "chaosstream"},
                }
            ]
        }
    )


async def version(request: web.Request) -> web.Response:
    """``GET /api/version``: the Ollama API version the mock follows."""
    return web.json_response({"version": OLLAMA_VERSION})
