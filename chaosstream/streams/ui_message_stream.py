"""The Vercel AI SDK UI message stream (what ``useChat`` reads) as a wire format.

An app's own chat route speaks it, so a path cannot name it: the response does,
with the header ``x-vercel-ai-ui-message-stream: v1`` (ai 6,
``ui-message-stream-headers.ts``). SSE, one ``data:`` JSON part an event:
``start``, ``text-start``/``text-delta``/``text-end``, ``finish``
(``finishReason``), ``error`` (``errorText``), ``abort``; the server's
``JsonToSseTransformStream`` writes ``data: [DONE]`` whenever the stream
closes, after an error or abort too.

What the client does (ai 6.0.325, ``DefaultChatTransport.processResponseStream``
and ``AbstractChat.makeRequest``): ``parseJsonEventStream`` skips ``[DONE]`` and
validates every other data against the part schema, so a broken part throws
and the chat ends in status ``error``; an ``error`` part throws
``new Error(errorText)`` (status ``error``); an ``abort`` part and a stream that
simply stops both end in status ``ready`` with no error -- only the missing
``finishReason`` tells them from a finished answer. So ``finish`` is the
terminal frame here, not ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaosstream.streams.format import ErrorKind, RequestView, WireFormat, dumps, json_or_none
from chaosstream.streams.sse import Event

__all__ = ["HEADER", "STREAM_ERRORS", "UiMessageStream"]

HEADER = "x-vercel-ai-ui-message-stream"
"""The response header that names the protocol (value ``v1``)."""

STREAM_ERRORS: dict[ErrorKind, str] = {
    "overloaded": "Overloaded",
    # streamText's default onError masks every error with this text.
    "server_error": "An error occurred.",
    "rate_limit": "Rate limit exceeded. Please try again later.",
}
"""In-stream error kind -> the ``errorText`` sent."""

# The chat route the embedded mock serves; any other route is known by its response.
_MOCK_PATH = "/api/ui/chat"
# Body fields that differ between a request and its retry: `regenerate()` sends the
# same messages with trigger "regenerate-message" (ai 6, AbstractChat.regenerate).
_RETRY_FIELDS = ("trigger", "messageId")
_DONE = b"data: [DONE]\n\n"


class UiMessageStream(WireFormat):
    """SSE ``data:`` parts; text in ``text-delta`` parts; complete at ``finish``."""

    name = "ui-message-stream"

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        return path.rstrip("/").endswith(_MOCK_PATH) or HEADER in headers

    def recognises_response(self, content_type: str, headers: Mapping[str, str]) -> bool:
        return bool(headers.get(HEADER))

    def wants_stream(self, request: RequestView) -> bool:
        """``useChat`` always asks for a stream; the protocol has no other answer."""
        return True

    def equivalent(self, path: str, query: str, body: Any) -> tuple[str, str, Any]:
        path, query, body = super().equivalent(path, query, body)
        if isinstance(body, dict):
            for name in _RETRY_FIELDS:
                body.pop(name, None)
        return path, query, body

    def text(self, frame: Event) -> str | None:
        """The ``delta`` of a ``text-delta`` part."""
        part = _part(frame)
        if part is None or part.get("type") != "text-delta":
            return None
        delta = part.get("delta")
        return delta if isinstance(delta, str) and delta else None

    def is_terminal(self, frame: Event) -> bool:
        part = _part(frame, '"finish"')
        return part is not None and part.get("type") == "finish"

    def is_error(self, frame: Event) -> bool:
        part = _part(frame, '"error"')
        return part is not None and part.get("type") == "error"

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        # The SDK's server closes the stream after an error part, and closing writes [DONE].
        part = {"type": "error", "errorText": STREAM_ERRORS[kind]}
        return f"data: {dumps(part)}\n\n".encode() + _DONE

    def terminal_frame(self) -> bytes:
        return b'data: {"type":"finish","finishReason":"stop"}\n\n'

    def error_body(self, status: int, message: str | None = None) -> bytes:
        # HttpChatTransport throws `new Error(await response.text())`: any body is shown
        # as is, so the body is the message an app's route would send.
        return dumps({"error": message or f"Request failed with status {status}."}).encode()

    def body_text(self, body: str) -> str:
        return ""


def _part(frame: Event, needle: str | None = None) -> dict[str, Any] | None:
    if not frame.has_data or (needle is not None and needle not in frame.data):
        return None
    obj = json_or_none(frame.data)
    return obj if isinstance(obj, dict) else None
