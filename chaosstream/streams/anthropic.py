"""Anthropic Messages (``/v1/messages``) as a wire format.

What the SDK does (anthropic-python 2.x ``_streaming.py``, ``Stream.__stream__``):
it skips ``event: ping`` and events with no ``event:`` field; ``event: error``
raises ``client._make_status_error`` on the 200 response, i.e.
``anthropic.APIStatusError`` with the JSON as body; every other event's data
is JSON typed by its ``"type"``. With an HTTP error status it maps the status
to a class (429 ``RateLimitError``, >=500 ``InternalServerError``, 503
``ServiceUnavailableError``, 529 ``OverloadedError``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chaosstream.streams.format import (
    ErrorKind,
    StopKind,
    ToolCall,
    WireFormat,
    dumps,
    json_or_none,
    words,
)
from chaosstream.streams.sse import Event

__all__ = ["STATUS_TYPES", "STREAM_ERRORS", "Anthropic"]

STREAM_ERRORS: dict[ErrorKind, tuple[str, str]] = {
    "overloaded": ("overloaded_error", "Overloaded"),
    "server_error": ("api_error", "Internal server error"),
    "rate_limit": ("rate_limit_error", "Rate limit exceeded. Please try again later."),
}
"""In-stream error kind -> (Anthropic error type, the API's message)."""

STATUS_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Billing error."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Rate limit exceeded. Please try again later."),
    500: ("api_error", "Internal server error"),
    503: ("overloaded_error", "Overloaded"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}
"""HTTP status -> (Anthropic error type, default message)."""


# `stop_reason` per stop (docs "Handling stop reasons": "end_turn" | "max_tokens" |
# "tool_use" | "refusal"). Anthropic has no content-filter reason: its streaming
# classifiers stop with "refusal", and a refusal is that stop, not a text.
_STOP: dict[StopKind, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "refusal": "refusal",
    "tool_calls": "tool_use",
}


def _event(obj: dict[str, Any]) -> bytes:
    return f"event: {obj['type']}\ndata: {dumps(obj)}\n\n".encode()


def _blocks(last: Event | None) -> tuple[bytes, int]:
    """After ``last``: the ``content_block_stop`` an open block still needs, and the
    index the next block takes (blocks are numbered from 0 in order)."""
    obj = json_or_none(last.data) if last is not None and last.has_data else None
    if not isinstance(obj, dict) or not isinstance(obj.get("index"), int):
        return b"", 0
    index: int = obj["index"]
    if obj.get("type") == "content_block_stop":
        return b"", index + 1
    return _event({"type": "content_block_stop", "index": index}), index + 1


def status_error(status: int) -> tuple[str, str]:
    """(error type, default message) for an HTTP status, Anthropic's words."""
    default = (
        ("api_error", f"Server error {status}.")
        if status >= 500
        else ("invalid_request_error", f"Request failed with status {status}.")
    )
    return STATUS_TYPES.get(status, default)


class Anthropic(WireFormat):
    """Typed SSE events; text in ``content_block_delta`` ``text_delta``; ends ``message_stop``."""

    name = "anthropic"

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        return path.rstrip("/").endswith("/v1/messages")

    def text(self, frame: Event) -> str | None:
        if not frame.has_data:
            return None
        obj = json_or_none(frame.data)
        if not isinstance(obj, dict) or obj.get("type") != "content_block_delta":
            return None
        delta = obj.get("delta")
        if not isinstance(delta, dict) or delta.get("type") != "text_delta":
            return None
        text = delta.get("text")
        return text if isinstance(text, str) and text else None

    def is_terminal(self, frame: Event) -> bool:
        if frame.event == "message_stop":
            return True
        if frame.event != "message" or '"message_stop"' not in frame.data:
            return False
        obj = json_or_none(frame.data)
        return isinstance(obj, dict) and obj.get("type") == "message_stop"

    def is_error(self, frame: Event) -> bool:
        return frame.event == "error"

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        err_type, message = STREAM_ERRORS[kind]
        body = {"type": "error", "error": {"type": err_type, "message": message}}
        return f"event: error\ndata: {dumps(body)}\n\n".encode()

    def terminal_frame(self) -> bytes:
        return b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

    def stop_frame(
        self, kind: StopKind, last: Event | None = None, *, text: str = "", tokens: int = 0
    ) -> bytes | None:
        close, _ = _blocks(last)
        delta = {"stop_reason": _STOP[kind], "stop_sequence": None}
        stop = {"type": "message_delta", "delta": delta, "usage": {"output_tokens": tokens}}
        return close + _event(stop) + self.terminal_frame()

    def tool_call_frames(
        self, calls: Sequence[ToolCall], last: Event | None = None
    ) -> bytes | None:
        # A tool_use block per call, its input streamed as `input_json_delta`
        # pieces (docs "Streaming Messages", "Input JSON delta"); the SDK's
        # MessageStream parses the joined pieces as partial JSON as they come.
        out, index = _blocks(last)
        for call in calls:
            block = {"type": "tool_use", "id": f"toolu_{call.id}", "name": call.name, "input": {}}
            out += _event({"type": "content_block_start", "index": index, "content_block": block})
            for piece in call.arguments:
                delta = {"type": "input_json_delta", "partial_json": piece}
                out += _event({"type": "content_block_delta", "index": index, "delta": delta})
            out += _event({"type": "content_block_stop", "index": index})
            index += 1
        return out

    def reasoning_frames(self, text: str, last: Event | None = None) -> bytes | None:
        # Extended thinking (docs "Building with extended thinking", streaming): a
        # thinking block of thinking_delta pieces closed by a signature_delta.
        out, index = _blocks(last)
        block = {"type": "thinking", "thinking": "", "signature": ""}
        out += _event({"type": "content_block_start", "index": index, "content_block": block})
        for word in words(text):
            delta = {"type": "thinking_delta", "thinking": word}
            out += _event({"type": "content_block_delta", "index": index, "delta": delta})
        signature = {"type": "signature_delta", "signature": "Q2hhb3NzdHJlYW0="}
        out += _event({"type": "content_block_delta", "index": index, "delta": signature})
        return out + _event({"type": "content_block_stop", "index": index})

    def error_body(self, status: int, message: str | None = None) -> bytes:
        err_type, default_message = status_error(status)
        body = {"type": "error", "error": {"type": err_type, "message": message or default_message}}
        return dumps(body).encode()

    def body_text(self, body: str) -> str:
        """``content[]`` text blocks joined."""
        obj = json_or_none(body)
        blocks = obj.get("content") if isinstance(obj, dict) else None
        if not isinstance(blocks, list):
            return ""
        return "".join(
            b["text"]
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
