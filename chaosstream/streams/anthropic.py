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

from collections.abc import Mapping

from chaosstream.streams.format import ErrorKind, WireFormat, dumps, json_or_none
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
