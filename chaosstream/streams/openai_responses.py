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
    REFUSAL,
    ErrorKind,
    RequestView,
    StopKind,
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


# Events after which a message item is still open (its text parts not yet done).
_OPEN = ("response.output_item.added", "response.content_part.added", _DELTA)
# A limit or a filter ends the response "incomplete" with its reason (API reference,
# the Response object's `incomplete_details.reason`: max_output_tokens | content_filter).
_INCOMPLETE: dict[StopKind, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


def _message(item_id: str, status: str, part: dict[str, Any] | None) -> dict[str, Any]:
    content = [] if part is None else [part]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


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

    def stop_frame(
        self, kind: StopKind, last: Event | None = None, *, text: str = "", tokens: int = 0
    ) -> bytes | None:
        if kind == "tool_calls":
            return None  # function-call items are not built here
        prev = json_or_none(last.data) if last is not None and last.has_data else None
        prev = prev if isinstance(prev, dict) else {}
        seq = prev.get("sequence_number")
        frames: list[dict[str, Any]] = []
        output: list[dict[str, Any]] = []
        reason = _INCOMPLETE.get(kind)
        status = "incomplete" if reason else "completed"
        if prev.get("type") in _OPEN:
            # Close the message being streamed as the API does before the end:
            # text done, part done, item done (with the text delivered so far).
            item = prev.get("item")
            item_id = prev.get("item_id") or (item.get("id") if isinstance(item, dict) else None)
            item_id = item_id if isinstance(item_id, str) else "msg_chaosstream"
            where = {"item_id": item_id, "output_index": 0, "content_index": 0}
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            message = _message(item_id, status, part)
            frames += [
                {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
                {"type": "response.content_part.done", **where, "part": part},
                {"type": "response.output_item.done", "output_index": 0, "item": message},
            ]
            output.append(message)
        if kind == "refusal":
            # A refusal is its own content part (API reference, "response.refusal.delta").
            refusal_id = "msg_chaosstream_refusal"
            where = {"item_id": refusal_id, "output_index": len(output), "content_index": 0}
            done = {"type": "refusal", "refusal": REFUSAL}
            message = _message(refusal_id, "completed", done)
            frames += [
                {
                    "type": "response.output_item.added",
                    "output_index": len(output),
                    "item": _message(refusal_id, "in_progress", None),
                },
                {
                    "type": "response.content_part.added",
                    **where,
                    "part": {"type": "refusal", "refusal": ""},
                },
                {"type": "response.refusal.delta", **where, "delta": REFUSAL},
                {"type": "response.refusal.done", **where, "refusal": REFUSAL},
                {"type": "response.content_part.done", **where, "part": done},
                {"type": "response.output_item.done", "output_index": len(output), "item": message},
            ]
            output.append(message)
        response = {
            "id": "resp_chaosstream",
            "object": "response",
            "created_at": 0,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": reason} if reason else None,
            "model": "chaosstream",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": None,
        }
        frames.append({"type": f"response.{status}", "response": response})
        n = seq + 1 if isinstance(seq, int) else 0
        out = b""
        for i, body in enumerate(frames):
            body = {"type": body["type"], "sequence_number": n + i, **body}
            out += f"event: {body['type']}\ndata: {dumps(body)}\n\n".encode()
        return out

    def error_body(self, status: int, message: str | None = None) -> bytes:
        return dumps(openai_error(status, message)).encode()

    def body_text(self, body: str) -> str:
        return response_output_text(json_or_none(body))
