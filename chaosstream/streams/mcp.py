"""MCP Streamable HTTP (spec revision 2025-11-25, "Transports"): JSON-RPC over POST and SSE.

A client POSTs one JSON-RPC message to the MCP endpoint (``/mcp``) with
``Accept: application/json, text/event-stream``; the server answers a request
either with one JSON body or with an SSE stream whose events each carry one
JSON-RPC message (``data: {...}``, no ``event:`` field, so the event type is
``message``): notifications such as ``notifications/progress`` first, then the
JSON-RPC response to the request, after which the server may close the stream.
The server may also close an SSE stream *before* the response, after sending an
event ``id`` (and it SHOULD first send a ``retry`` field); that close is not a
cancellation: the client resumes with ``GET`` + ``Last-Event-ID``. A session
(``Mcp-Session-Id``, set on the ``initialize`` response) that the server no
longer knows is answered ``404``; the client must then start a new session with
a fresh ``initialize``.

What the frames mean here:

- text: the tool result, ``result.content[].text`` of the JSON-RPC response
  (what an MCP client shows); progress notifications carry no answer text but
  count as tokens, so ``after_tokens`` can cut between them;
- terminal: the JSON-RPC response carrying a ``result``;
- error: a JSON-RPC error response (``{"error": {"code", "message"}}``), in the
  stream or as a body.

What the official ``mcp`` Python SDK does (``mcp/client/streamable_http.py``):
an SSE stream that ends before the response is resumed with ``GET`` and
``last-event-id`` after the last ``retry`` (1 s without one), at most twice in
a row, if any event had an id; with no id it fails the request with
``CONNECTION_CLOSED``; a 404 on a request carrying a session id becomes a
JSON-RPC error ``Session terminated`` (the SDK does not re-initialise by itself).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chaosstream.streams.format import ErrorKind, RequestView, WireFormat, dumps, json_or_none
from chaosstream.streams.sse import Event

__all__ = [
    "JSONRPC_ERRORS",
    "Mcp",
    "jsonrpc_error",
    "sse_message",
]

_PATH = re.compile(r"/mcp/?$")

JSONRPC_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    # -32000..-32099 are the JSON-RPC 2.0 spec's "implementation-defined server errors".
    "overloaded": (-32000, "Server overloaded, try again later"),
    "server_error": (-32603, "Internal error"),
    "rate_limit": (-32029, "Rate limit exceeded"),
}
"""In-stream error kind -> (JSON-RPC error code, message)."""


def jsonrpc_error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC 2.0 error response."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def sse_message(message: Mapping[str, Any], event_id: str | None = None) -> bytes:
    """One JSON-RPC message as an SSE event (type ``message``), with an ``id`` when given."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {dumps(message)}\n\n".encode()


def _result_text(result: Any) -> str | None:
    content = result.get("content") if isinstance(result, dict) else None
    if not isinstance(content, list):
        return None
    return "".join(
        block["text"]
        for block in content
        if isinstance(block, dict) and isinstance(block.get("text"), str)
    )


def _is_response(obj: Any) -> bool:
    return isinstance(obj, dict) and "id" in obj and "method" not in obj


class Mcp(WireFormat):
    """MCP Streamable HTTP: SSE (or JSON) carrying JSON-RPC; the tool result is the answer."""

    name = "mcp"

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        return _PATH.search(path) is not None

    def wants_stream(self, request: RequestView) -> bool:
        """A ``tools/call`` POST (its result may stream progress first), or a resuming ``GET``.

        Every MCP POST accepts SSE, so the Accept header says nothing; the method
        that produces an answer does. A ``GET`` without ``Last-Event-ID`` opens the
        standalone stream of server messages, which is no answer.
        """
        if request.method == "GET":
            return "last-event-id" in request.headers
        body = request.json
        return isinstance(body, dict) and body.get("method") == "tools/call"

    def equivalent(self, path: str, query: str, body: Any) -> tuple[str, str, Any]:
        """A request and its retry differ in the JSON-RPC ``id`` and the progress token."""
        if isinstance(body, dict):
            body.pop("id", None)
            params = body.get("params")
            if isinstance(params, dict):
                params.pop("_meta", None)
        return path, query, body

    def text(self, frame: Event) -> str | None:
        obj = json_or_none(frame.data)
        if not _is_response(obj):
            return None
        return _result_text(obj.get("result"))

    def tokens(self, frame: Event) -> int:
        """A progress notification or the result: each is one piece of the answer's way."""
        obj = json_or_none(frame.data)
        if not isinstance(obj, dict):
            return 0
        if obj.get("method") == "notifications/progress":
            return 1
        return 1 if _is_response(obj) and "result" in obj else 0

    def is_terminal(self, frame: Event) -> bool:
        obj = json_or_none(frame.data)
        return _is_response(obj) and "result" in obj

    def is_error(self, frame: Event) -> bool:
        obj = json_or_none(frame.data)
        return _is_response(obj) and "error" in obj

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        """A JSON-RPC error for the request the stream answers.

        Its id is the progress token of the last notification when there was one
        (the SDK uses the request id as progress token); else null, which the SDK
        maps to the request the stream belongs to.
        """
        code, message = JSONRPC_ERRORS[kind]
        request_id: Any = None
        previous = json_or_none(last.data) if last is not None else None
        params = previous.get("params") if isinstance(previous, dict) else None
        if isinstance(params, dict) and isinstance(params.get("progressToken"), (int, str)):
            request_id = params["progressToken"]
        return sse_message(jsonrpc_error(request_id, code, message))

    def terminal_frame(self) -> bytes:
        result = {"content": [{"type": "text", "text": ""}], "isError": False}
        return sse_message({"jsonrpc": "2.0", "id": 1, "result": result})

    def error_body(self, status: int, message: str | None = None) -> bytes:
        """A JSON-RPC error with ``id: null``, as the SDK servers send with an HTTP error.

        -32001 for a 404 (the reference servers' "Session not found"), else
        -32000 (server error) or -32600 (invalid request) for a 4xx.
        """
        if status == 404:
            code, text = -32001, "Session not found"
        elif status >= 500 or status == 429:
            code, text = -32000, f"Server error: HTTP {status}"
        else:
            code, text = -32600, f"Bad Request: HTTP {status}"
        return dumps(jsonrpc_error(None, code, message or text)).encode()

    def body_text(self, body: str) -> str:
        """A JSON answer: the result text of the JSON-RPC response."""
        obj = json_or_none(body)
        if not _is_response(obj):
            return ""
        return _result_text(obj.get("result")) or ""
