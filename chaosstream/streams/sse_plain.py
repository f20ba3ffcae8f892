"""Any other event stream: the provider-neutral format, and the registry's fallback.

Text is the data of a ``message`` event; a complete stream ends with
``event: done`` or ``data: [DONE]``; an error is ``event: error``. Every data
event counts as a token, as the neutral case has no notion of tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

from chaosstream.streams.anthropic import STREAM_ERRORS, status_error
from chaosstream.streams.format import ErrorKind, WireFormat, dumps
from chaosstream.streams.sse import Event

__all__ = ["PlainSse"]


class PlainSse(WireFormat):
    """The neutral SSE shape the mock's ``/sse`` speaks; recognises every exchange."""

    name = "sse"

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        return True

    def text(self, frame: Event) -> str | None:
        if not frame.has_data or frame.event != "message" or not frame.data:
            return None
        if frame.data.startswith("[DONE]"):
            return None
        return frame.data

    def tokens(self, frame: Event) -> int:
        return 1 if frame.has_data else 0

    def is_terminal(self, frame: Event) -> bool:
        return frame.event == "done" or (frame.has_data and frame.data.strip() == "[DONE]")

    def is_error(self, frame: Event) -> bool:
        return frame.event == "error"

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        body = {"error": {"type": kind, "message": STREAM_ERRORS[kind][1]}}
        return f"event: error\ndata: {dumps(body)}\n\n".encode()

    def terminal_frame(self) -> bytes:
        return b"event: done\ndata: [DONE]\n\n"

    def error_body(self, status: int, message: str | None = None) -> bytes:
        default_message = status_error(status)[1]
        return dumps({"error": {"status": status, "message": message or default_message}}).encode()

    def body_text(self, body: str) -> str:
        """The whole body: a neutral response has no envelope to look inside."""
        return body
