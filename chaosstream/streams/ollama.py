"""Ollama (``/api/chat``, ``/api/generate``) as a wire format: NDJSON, one JSON object a line.

Shapes from Ollama's ``docs/api.md``; what the client does, from the ``ollama``
Python package 0.6 (``_client.py``, ``Client._request``): it reads
``r.iter_lines()``, ``json.loads`` each line (so a broken line raises
``json.JSONDecodeError``), raises ``ollama.ResponseError`` for a line whose
``error`` is truthy, and otherwise yields every line -- it never checks for
``"done": true``, so a stream that just stops ends the iteration quietly. With
an HTTP error status it raises ``ResponseError(body.error, status_code)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaosstream.streams.format import (
    REFUSAL,
    ErrorKind,
    RequestView,
    StopKind,
    WireFormat,
    json_or_none,
)
from chaosstream.streams.ndjson import format_line
from chaosstream.streams.sse import Event

__all__ = ["STREAM_ERRORS", "Ollama"]

STREAM_ERRORS: dict[ErrorKind, str] = {
    # Ollama's scheduler when OLLAMA_MAX_QUEUE is full (server/sched.go ErrMaxQueue).
    "overloaded": "server busy, please try again.  maximum pending requests exceeded",
    # What a runner that dies mid-answer reports (llm/server.go).
    "server_error": "an error was encountered while running the model: unexpected EOF",
    # ollama.com's hosted API when a plan's limit is reached.
    "rate_limit": "you've reached your hourly usage limit, please try again later",
}
"""In-stream error kind -> the ``error`` string Ollama sends."""

_PATHS = ("/api/chat", "/api/generate")


class Ollama(WireFormat):
    """NDJSON lines with ``message.content`` (chat) or ``response`` (generate), ending ``done``."""

    name = "ollama"
    framing = "ndjson"
    media_type = "application/x-ndjson"

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        return path.rstrip("/").endswith(_PATHS)

    def recognises_response(self, content_type: str, headers: Mapping[str, str]) -> bool:
        # An NDJSON stream on any other path (a gateway's prefix) is read line by line too.
        return content_type == self.media_type

    def wants_stream(self, request: RequestView) -> bool:
        """Ollama streams unless the body says ``"stream": false`` (api.md: "stream: if false
        the response will be returned as a single response object")."""
        body = request.json
        return isinstance(body, dict) and body.get("stream") is not False

    def text(self, frame: Event) -> str | None:
        """``message.content`` on /api/chat lines, ``response`` on /api/generate lines."""
        if not frame.has_data:
            return None
        obj = json_or_none(frame.data)
        if not isinstance(obj, dict):
            return None
        return _answer(obj) or None

    def is_terminal(self, frame: Event) -> bool:
        if not frame.has_data or '"done"' not in frame.data:
            return False
        obj = json_or_none(frame.data)
        return isinstance(obj, dict) and obj.get("done") is True

    def is_error(self, frame: Event) -> bool:
        if not frame.has_data or '"error"' not in frame.data:
            return False
        obj = json_or_none(frame.data)
        # Mirrors the client: `if err := part.get('error'): raise ResponseError(err)`.
        return isinstance(obj, dict) and bool(obj.get("error"))

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        return format_line({"error": STREAM_ERRORS[kind]})

    def terminal_frame(self) -> bytes:
        return format_line(
            {
                "model": "",
                "created_at": "1970-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
            }
        )

    def stop_frame(
        self, kind: StopKind, last: Event | None = None, *, text: str = "", tokens: int = 0
    ) -> bytes | None:
        # Ollama ends with `done_reason` "stop" or "length" (num_predict reached;
        # api.md, "done_reason"); it has no filter or tool-call stop, and a model
        # refuses in plain text.
        if kind not in ("stop", "length", "refusal"):
            return None
        prev = json_or_none(last.data) if last is not None and last.has_data else None
        prev = prev if isinstance(prev, dict) else {}
        base = {
            "model": prev.get("model", ""),
            "created_at": prev.get("created_at", "1970-01-01T00:00:00Z"),
        }
        generate = "response" in prev  # /api/generate lines carry `response`, chat `message`

        def line(content: str, **end: Any) -> bytes:
            body = (
                {"response": content}
                if generate
                else {"message": {"role": "assistant", "content": content}}
            )
            return format_line({**base, **body, **end})

        out = line(REFUSAL, done=False) if kind == "refusal" else b""
        reason = "length" if kind == "length" else "stop"
        return out + line("", done=True, done_reason=reason, eval_count=tokens)

    def error_body(self, status: int, message: str | None = None) -> bytes:
        default = {
            400: "invalid request",
            404: "model not found, try pulling it first",
            429: STREAM_ERRORS["rate_limit"],
            503: STREAM_ERRORS["overloaded"],
        }.get(status, f"server error {status}" if status >= 500 else f"request failed ({status})")
        return format_line({"error": message or default}).rstrip(b"\n")

    def body_text(self, body: str) -> str:
        """A ``stream: false`` answer: ``message.content`` or ``response``."""
        obj = json_or_none(body)
        return _answer(obj) if isinstance(obj, dict) else ""


def _answer(obj: dict[str, Any]) -> str:
    message = obj.get("message")
    text = message.get("content") if isinstance(message, dict) else obj.get("response")
    return text if isinstance(text, str) else ""
