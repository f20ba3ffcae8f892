"""OpenAI Responses (`POST /v1/responses`, `GET /v1/responses/{id}`) as a wire format.

Typed SSE events, each with ``"type"`` and a ``sequence_number``; text in
``response.output_text.delta``; a stream ends with ``response.completed``
(``response.incomplete`` when stopped by a limit, ``response.failed`` on a
failure); an error mid-stream is ``event: error``. No ``[DONE]``.

What openai-python (3.x) does with it: ``responses.create(stream=True)`` is the
same ``Stream.__stream__`` as Chat Completions (``_streaming.py``): a data whose
JSON has a truthy top-level ``"error"`` raises ``openai.APIError``.
``responses.stream(...)`` wraps it (``lib/streaming/responses/_responses.py``);
its ``get_final_response()`` raises ``RuntimeError("Didn't receive a
`response.completed` event.")`` when the stream ends without one.

The error event: the API reference documents ``{"type": "error", "code",
"message", "param", "sequence_number"}``, while the live API has been seen
sending the fields nested in an ``"error"`` object (openai/openai-dotnet#881).
We send both, so a reader of either shape finds them, and the nested object is
what makes openai-python raise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chaosstream.streams.format import (
    DELIVERY_FIELDS,
    ErrorKind,
    RequestView,
    WireFormat,
    dumps,
    json_or_none,
)
from chaosstream.streams.openai_chat import openai_error, openai_stream_error
from chaosstream.streams.sse import Event

__all__ = ["TERMINAL_TYPES", "OpenAIResponses", "response_output_text"]

_PATH = re.compile(r"/responses(?:/[^/]+)?/?$")
_DELTA = "response.output_text.delta"

TERMINAL_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})
"""Event types a Responses stream ends with (``response.failed`` is also an error)."""

# The query of `GET /v1/responses/{id}?stream=true&starting_after=N`: how to
# deliver, not what; a resume and a plain fetch of one response are equivalent.
_DELIVERY_QUERY = ("stream", "starting_after")


def response_output_text(obj: Any) -> str:
    """The text of a Response object: ``output[].content[]`` parts of type ``output_text``."""
    output = obj.get("output") if isinstance(obj, dict) else None
    if not isinstance(output, list):
        return ""
    pieces: list[str] = []
    for item in output:
        content = item.get("content") if isinstance(item, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "output_text":
                text = part.get("text")
                if isinstance(text, str):
                    pieces.append(text)
    return "".join(pieces)


def _type(frame: Event) -> str | None:
    """The event's type: the ``event:`` field when sent, else the data's ``"type"``."""
    if frame.event != "message":
        return frame.event
    obj = json_or_none(frame.data)
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) else None


class OpenAIResponses(WireFormat):
    """Typed events with ``sequence_number``; ends ``response.completed``."""

    name = "openai-responses"

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        # Any prefix (gateways, Azure's /openai/v1/responses): the tail decides.
        return _PATH.search(path) is not None and "/input_items" not in path

    def wants_stream(self, request: RequestView) -> bool:
        if request.method == "GET":
            # Resuming a background response: GET /v1/responses/{id}?stream=true.
            return any(p == "stream=true" for p in request.query.split("&"))
        return super().wants_stream(request)

    def equivalent(self, path: str, query: str, body: Any) -> tuple[str, str, Any]:
        if isinstance(body, dict):
            for name in DELIVERY_FIELDS:
                body.pop(name, None)
        if query:
            kept = [p for p in query.split("&") if p.split("=", 1)[0] not in _DELIVERY_QUERY]
            query = "&".join(kept)
        return path, query, body

    def text(self, frame: Event) -> str | None:
        if not frame.has_data or _DELTA not in frame.data:
            return None  # cheap: most events are not deltas
        if frame.event not in ("message", _DELTA):
            return None
        obj = json_or_none(frame.data)
        if not isinstance(obj, dict) or obj.get("type") != _DELTA:
            return None
        delta = obj.get("delta")
        return delta if isinstance(delta, str) and delta else None

    def is_terminal(self, frame: Event) -> bool:
        if not frame.has_data:
            return False
        if frame.event != "message":
            return frame.event in TERMINAL_TYPES
        return _type(frame) in TERMINAL_TYPES

    def is_error(self, frame: Event) -> bool:
        if not frame.has_data:
            return False
        if frame.event in ("error", "response.failed"):
            return True
        if frame.event != "message" or '"error"' not in frame.data:
            return False
        obj = json_or_none(frame.data)
        # openai-python raises on a truthy top-level "error"; a typed error event
        # (no event: line) is one too.
        return isinstance(obj, dict) and (bool(obj.get("error")) or obj.get("type") == "error")

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        err = openai_stream_error(kind)
        code = err["code"] or err["type"]
        previous = json_or_none(last.data) if last is not None else None
        seq = previous.get("sequence_number") if isinstance(previous, dict) else None
        body = {
            "type": "error",
            "sequence_number": seq + 1 if isinstance(seq, int) else 0,
            "code": code,
            "message": err["message"],
            "param": None,
            "error": {**err, "code": code},
        }
        return f"event: error\ndata: {dumps(body)}\n\n".encode()

    def terminal_frame(self) -> bytes:
        body = {
            "type": "response.completed",
            "sequence_number": 0,
            "response": {"id": "resp_0", "object": "response", "status": "completed"},
        }
        return f"event: response.completed\ndata: {dumps(body)}\n\n".encode()

    def error_body(self, status: int, message: str | None = None) -> bytes:
        return dumps(openai_error(status, message)).encode()

    def body_text(self, body: str) -> str:
        return response_output_text(json_or_none(body))
