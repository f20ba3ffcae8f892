"""Provider-neutral endpoints: ``/sse``, ``/ws``, ``/bytes``, ``/echo``, ``/healthz``."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import WSMsgType, web

from chaosstream.mock._json import JsonTooDeep, loads_bounded
from chaosstream.mock._limits import LIMITS
from chaosstream.mock._settings import SETTINGS, BadOverride, MockSettings, with_overrides
from chaosstream.mock._stats import STATS, ClientGone
from chaosstream.mock._stream import Pacer, client_gone, open_event_stream, sse_event
from chaosstream.mock._text import answer_tokens, iter_mock_bytes

SSE_RETRY_MS = 1000
MAX_BYTES = 256 * 1024 * 1024


def generic_error(status: int, message: str) -> web.Response:
    """An error response for the generic endpoints."""
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error"}}, status=status
    )


async def sse(request: web.Request) -> web.StreamResponse:
    """``GET /sse?prompt=...``: one event per token, ``id`` = 1-based token index.

    The first event carries ``retry:``; the stream ends with ``event: done`` /
    ``data: [DONE]`` (id = tokens + 1). ``Last-Event-ID: k`` resumes at token k + 1.
    """
    try:
        settings = with_overrides(request.app[SETTINGS], request.headers, request.query)
    except BadOverride as exc:
        return generic_error(400, str(exc))
    prompt = request.query.get("prompt", "")
    tokens = answer_tokens(prompt, settings.tokens)
    done_id = len(tokens) + 1
    last_id_raw = request.headers.get("Last-Event-ID", "").strip()
    try:
        last_id = int(last_id_raw) if last_id_raw else 0
    except ValueError:
        last_id = -1
    if not 0 <= last_id <= done_id:
        return generic_error(
            400, f"Last-Event-ID must be an integer from 0 to {done_id}, got {last_id_raw!r}"
        )
    pacer = Pacer(request, settings)
    resp = await open_event_stream(request)
    try:
        async with request.app[STATS].track():
            retry: int | None = SSE_RETRY_MS
            for sent, index in enumerate(range(last_id, len(tokens))):
                await pacer.wait_token(sent)
                await resp.write(sse_event(tokens[index], event_id=index + 1, retry_ms=retry))
                retry = None
            if retry is not None:
                await pacer.wait_token(0)
            await resp.write(sse_event("[DONE]", event="done", event_id=done_id, retry_ms=retry))
            await resp.write_eof()
    except (ClientGone, ConnectionError):
        pass
    return resp


# A prompt to answer, or an error message to send back.
_WsJob = tuple[str, MockSettings] | str


async def ws(request: web.Request) -> web.StreamResponse:
    """``GET /ws``: each JSON ``{"prompt": ...}`` message gets token messages, then done.

    Token messages are ``{"type": "token", "index": i, "text": ...}`` with a 1-based
    ``i`` (as the ``/sse`` ids); ``tokens``, ``ttft_ms`` and ``tokens_per_s`` in the
    message override the pacing for that prompt.
    """
    try:
        base = with_overrides(request.app[SETTINGS], request.headers, request.query)
    except BadOverride as exc:
        return generic_error(400, str(exc))
    limits = request.app[LIMITS]
    # A message over the cap is refused by aiohttp with close code 1009 (RFC 6455
    # 7.4.1, "message too big") before it is buffered whole.
    socket = web.WebSocketResponse(max_msg_size=limits.ws_max_msg_bytes)
    await socket.prepare(request)
    # Reading and answering run apart, so a close frame or a drop that arrives while
    # an answer streams ends that answer at once (and counts it as abandoned). The
    # queue is bounded: when it is full the reader waits, aiohttp stops reading the
    # socket and TCP pushes back on the client. Every prompt is still answered, as a
    # real server's would be; closing with 1008 instead would invent a refusal no
    # provider sends. Held per socket: ws_queue + 2 messages of ws_max_msg_bytes.
    queue: asyncio.Queue[_WsJob] = asyncio.Queue(maxsize=limits.ws_queue)
    writer = asyncio.create_task(_ws_writer(request, socket, queue))
    try:
        async for msg in socket:
            if msg.type != WSMsgType.TEXT:
                await queue.put("send JSON text messages")
                continue
            try:
                job: _WsJob = _parse_ws_prompt(msg.data, base)
            except ValueError as exc:
                job = str(exc)
            await queue.put(job)
    finally:
        writer.cancel()
        await asyncio.wait([writer])
    return socket


async def _ws_writer(
    request: web.Request, socket: web.WebSocketResponse, queue: asyncio.Queue[_WsJob]
) -> None:
    try:
        while True:
            job = await queue.get()
            if isinstance(job, str):
                await socket.send_json({"type": "error", "message": job})
                continue
            async with request.app[STATS].track():
                await _ws_answer(request, socket, *job)
    except (ClientGone, ConnectionError):
        pass


def _parse_ws_prompt(data: str, base: MockSettings) -> tuple[str, MockSettings]:
    try:
        message: Any = loads_bounded(data, "message")
    except JsonTooDeep:
        raise
    except ValueError as exc:
        raise ValueError(f"message is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError('message must be a JSON object like {"prompt": "..."}')
    prompt = message.get("prompt", "")
    if not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    return prompt, with_overrides(base, {}, message)


async def _ws_answer(
    request: web.Request, socket: web.WebSocketResponse, prompt: str, settings: MockSettings
) -> None:
    pacer = Pacer(request, settings)
    for index, token in enumerate(answer_tokens(prompt, settings.tokens)):
        await pacer.wait_token(index)
        if socket.closed:
            raise ClientGone
        await socket.send_json({"type": "token", "index": index + 1, "text": token})
    if socket.closed or client_gone(request):
        raise ClientGone
    await socket.send_json({"type": "done"})


async def random_bytes(request: web.Request) -> web.StreamResponse:
    """``GET /bytes?n=N&seed=S``: N deterministic bytes with a Content-Length."""
    try:
        n = int(request.query.get("n", "1024"))
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_BYTES:
        return generic_error(400, f"n must be an integer from 0 to {MAX_BYTES}")
    seed = request.query.get("seed", "0")
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = n
    await resp.prepare(request)
    try:
        for chunk in iter_mock_bytes(n, seed):
            await resp.write(chunk)
        await resp.write_eof()
    except ConnectionError:
        pass
    return resp


async def echo(request: web.Request) -> web.Response:
    """``POST /echo``: the request body back, verbatim, with its SHA-256 in a header."""
    body = await request.read()
    return web.Response(
        body=body,
        headers={
            "Content-Type": request.headers.get("Content-Type", "application/octet-stream"),
            "x-chaosstream-sha256": hashlib.sha256(body).hexdigest(),
        },
    )


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: liveness."""
    return web.json_response({"ok": True})
