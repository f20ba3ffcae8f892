"""A small MCP server on Streamable HTTP (spec 2025-11-25): ``POST``/``GET``/``DELETE /mcp``.

- ``initialize`` opens a session: the JSON answer carries ``Mcp-Session-Id``;
  every later request must send it (none: 400; unknown or deleted: 404, so the
  client must re-initialise). ``DELETE`` ends a session.
- ``tools/list`` lists one tool, ``stream_answer`` (``{"prompt": str}``);
  ``tools/call`` answers with an SSE stream: a priming event (an ``id`` and an
  empty ``data``, which the spec says a server SHOULD send so the client can
  resume), one ``notifications/progress`` per answer token when the request
  carried ``_meta.progressToken`` (the token in ``message``), then the JSON-RPC
  response whose ``result.content[0].text`` is the whole answer.
- The tool runs apart from the connection: a stream that closes early is not a
  cancellation (spec: "Disconnection SHOULD NOT be interpreted as the client
  cancelling its request"). Every event has an id ``<stream>-<seq>``, unique
  in the session, and a ``GET`` with ``Last-Event-ID`` replays the events of
  that stream after it and follows the rest (resumability).
- ``GET`` without ``Last-Event-ID`` asks for a standalone stream of server
  messages; the mock has none to send and answers 405, as the spec allows.

Pacing follows the mock's settings and its ``x-chaosstream-mock-*`` headers.
Held at most: :data:`MAX_SESSIONS` sessions of :data:`MAX_STREAMS` streams.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from chaosstream.mock._json import loads_bounded
from chaosstream.mock._settings import SETTINGS, BadOverride, MockSettings, with_overrides
from chaosstream.mock._stats import STATS
from chaosstream.mock._text import answer_tokens
from chaosstream.streams.mcp import jsonrpc_error, sse_message

PATH = "/mcp"
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
"""Revisions the mock speaks, newest first (it answers with the client's when it knows it)."""
TOOL = "stream_answer"
MAX_SESSIONS = 256
MAX_STREAMS = 16
SESSION_HEADER = "Mcp-Session-Id"


@dataclass(slots=True)
class _Stream:
    """One request's SSE stream: its events so far, and a wake-up for those following it."""

    number: int
    events: list[bytes] = field(default_factory=list)
    finished: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, message: dict[str, Any] | None) -> None:
        event_id = f"{self.number}-{len(self.events)}"
        if message is None:  # the priming event: an id and an empty data field
            self.events.append(f"id: {event_id}\ndata: \n\n".encode())
        else:
            self.events.append(sse_message(message, event_id))
        self.changed.set()
        self.changed = asyncio.Event()


@dataclass(slots=True)
class _Session:
    id: str
    streams: OrderedDict[int, _Stream] = field(default_factory=OrderedDict)
    next_stream: int = 1


@dataclass(slots=True)
class McpState:
    """The mock's MCP sessions and the tool runs still producing events."""

    sessions: OrderedDict[str, _Session] = field(default_factory=OrderedDict)
    runs: set[asyncio.Task[None]] = field(default_factory=set)


STATE = web.AppKey("chaosstream_mcp", McpState)


def setup(app: web.Application) -> None:
    """Add the ``/mcp`` routes and their state to the mock app."""
    app[STATE] = McpState()
    app.router.add_post(PATH, post)
    app.router.add_get(PATH, get)
    app.router.add_delete(PATH, delete)
    app.on_cleanup.append(_stop_runs)


async def _stop_runs(app: web.Application) -> None:
    runs = list(app[STATE].runs)
    for task in runs:
        task.cancel()
    if runs:
        await asyncio.wait(runs)


def _error(status: int, code: int, message: str, request_id: Any = None) -> web.Response:
    return web.json_response(jsonrpc_error(request_id, code, message), status=status)


def _session(request: web.Request) -> _Session | web.Response:
    sid = request.headers.get(SESSION_HEADER)
    if not sid:
        return _error(400, -32600, f"Bad Request: {SESSION_HEADER} header is required")
    session = request.app[STATE].sessions.get(sid)
    if session is None:
        # Spec: a request with a session id the server does not know is answered 404.
        return _error(404, -32001, "Session not found")
    return session


async def post(request: web.Request) -> web.StreamResponse:
    """``POST /mcp``: one JSON-RPC message."""
    try:
        message = loads_bounded(await request.read())
        settings = with_overrides(request.app[SETTINGS], request.headers)
    except BadOverride as exc:
        return _error(400, -32602, str(exc))
    except ValueError as exc:
        return _error(400, -32700, f"Parse error: {exc}")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return _error(400, -32600, "Invalid Request: one JSON-RPC 2.0 message object")
    method = message.get("method")
    request_id = message.get("id")
    if method == "initialize":
        return _initialize(request, message)
    found = _session(request)
    if isinstance(found, web.Response):
        return found
    if request_id is None or not isinstance(method, str):
        return web.Response(status=202)  # a notification or a response: accepted, no body
    if method == "ping":
        return web.json_response({"jsonrpc": "2.0", "id": request_id, "result": {}})
    if method == "tools/list":
        return web.json_response({"jsonrpc": "2.0", "id": request_id, "result": _TOOLS})
    if method == "tools/call":
        return await _call(request, found, message, settings)
    return web.json_response(jsonrpc_error(request_id, -32601, f"Method not found: {method}"))


_TOOLS = {
    "tools": [
        {
            "name": TOOL,
            "description": "Answers the prompt, streaming each token as a progress message.",
            "inputSchema": {
                "type": "object",
                "properties": {"prompt": {"type": "string"}},
                "required": ["prompt"],
            },
        }
    ]
}


def _initialize(request: web.Request, message: dict[str, Any]) -> web.Response:
    params = message.get("params")
    asked = params.get("protocolVersion") if isinstance(params, dict) else None
    version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
    state = request.app[STATE]
    session = _Session(secrets.token_hex(16))
    state.sessions[session.id] = session
    while len(state.sessions) > MAX_SESSIONS:
        state.sessions.popitem(last=False)
    result = {
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": "chaosstream-mock", "version": "1"},
    }
    return web.json_response(
        {"jsonrpc": "2.0", "id": message.get("id"), "result": result},
        headers={SESSION_HEADER: session.id},
    )


async def _call(
    request: web.Request, session: _Session, message: dict[str, Any], settings: MockSettings
) -> web.StreamResponse:
    request_id = message.get("id")
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    arguments = params.get("arguments")
    if params.get("name") != TOOL or not isinstance(arguments, dict):
        return web.json_response(
            jsonrpc_error(request_id, -32602, f"Unknown tool: {params.get('name')!r}")
        )
    prompt = arguments.get("prompt", "")
    meta = params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    stream = _Stream(session.next_stream)
    session.next_stream += 1
    session.streams[stream.number] = stream
    while len(session.streams) > MAX_STREAMS:
        session.streams.popitem(last=False)
    stream.add(None)
    runs = request.app[STATE].runs
    task = asyncio.ensure_future(_run_tool(stream, request_id, str(prompt), token, settings))
    runs.add(task)
    task.add_done_callback(runs.discard)
    return await _follow(request, stream, 0)


async def _run_tool(
    stream: _Stream, request_id: Any, prompt: str, token: Any, settings: MockSettings
) -> None:
    """Produce the tool's events on the loop clock, whoever is reading them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tokens = answer_tokens(prompt, settings.tokens)
    try:
        for index, piece in enumerate(tokens):
            await asyncio.sleep(max(0.0, start + settings.token_offset_s(index) - loop.time()))
            if token is not None:
                params = {
                    "progressToken": token,
                    "progress": index + 1,
                    "total": len(tokens),
                    "message": piece,
                }
                stream.add({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})
        if not tokens:
            await asyncio.sleep(settings.token_offset_s(0))
        result = {"content": [{"type": "text", "text": "".join(tokens)}], "isError": False}
        stream.add({"jsonrpc": "2.0", "id": request_id, "result": result})
    finally:
        stream.finished = True
        stream.changed.set()


async def _follow(request: web.Request, stream: _Stream, start: int) -> web.StreamResponse:
    """Send a stream's events from index ``start`` as they come, until the response."""
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    at = start
    try:
        async with request.app[STATS].track():
            while True:
                changed = stream.changed
                while at < len(stream.events):
                    await resp.write(stream.events[at])
                    at += 1
                if stream.finished:
                    break
                await changed.wait()
            await resp.write_eof()
    except ConnectionError:
        pass  # the client left; the tool runs on, and a GET with Last-Event-ID resumes it
    return resp


async def get(request: web.Request) -> web.StreamResponse:
    """``GET /mcp``: resume a stream after ``Last-Event-ID``; no standalone stream (405)."""
    found = _session(request)
    if isinstance(found, web.Response):
        return found
    last = request.headers.get("Last-Event-ID")
    if last is None:
        return web.Response(status=405, headers={"Allow": "POST, DELETE"})
    number, _, seq = last.strip().partition("-")
    stream = found.streams.get(int(number)) if number.isdigit() else None
    if stream is None or not seq.isdigit() or int(seq) >= len(stream.events):
        return _error(400, -32600, f"Bad Request: unknown Last-Event-ID {last[:80]!r}")
    return await _follow(request, stream, int(seq) + 1)


async def delete(request: web.Request) -> web.StreamResponse:
    """``DELETE /mcp``: end the session."""
    found = _session(request)
    if isinstance(found, web.Response):
        return found
    request.app[STATE].sessions.pop(found.id, None)
    return web.Response(status=200)
