"""OpenAI Realtime over WebSocket (``/v1/realtime``): one JSON event per message.

Server events this format reads (openai-python ``types/realtime``, the GA
Realtime API): ``response.output_text.delta`` (``delta``: answer text; an
audio answer's words come as ``response.output_audio_transcript.delta``),
``response.done`` (the terminal: ``response.status`` is ``completed``,
``cancelled``, ``failed`` or ``incomplete``), ``error`` (``{"type": "error",
"event_id", "error": {"type", "code", "message", "param", "event_id"}}``,
``RealtimeError``), ``rate_limits.updated``. A ``response.done`` whose status
is ``failed`` is an error too.

What openai-python does (``resources/realtime/realtime.py``): an ``error``
event is just an event the loop yields (no exception); a connection that
closes raises websockets' ``ConnectionClosedError`` out of ``recv()`` (its
``__aiter__`` ends quietly on a clean 1000 close); nothing watches for
``response.done``, so a missing terminal is the application's to notice.
The connection's URL is the client's ``base_url`` with ``ws``/``wss`` and
``/realtime`` appended: ``OPENAI_BASE_URL`` points it at the proxy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chaosstream.streams.format import ErrorKind, RequestView, WireFormat, dumps, json_or_none
from chaosstream.streams.openai_chat import openai_error
from chaosstream.streams.sse import Event
from chaosstream.streams.wsjson import MEDIA_TYPE

__all__ = ["REALTIME_ERRORS", "TEXT_DELTAS", "OpenAIRealtime", "realtime_error"]

_PATH = re.compile(r"/realtime/?$")

TEXT_DELTAS = frozenset({"response.output_text.delta", "response.output_audio_transcript.delta"})
"""Server events whose ``delta`` is answer text."""

REALTIME_ERRORS: dict[ErrorKind, tuple[str, str | None, str]] = {
    "overloaded": ("server_error", "server_overloaded", "The server is overloaded."),
    "server_error": ("server_error", None, "The server had an error processing your request."),
    "rate_limit": ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached."),
}
"""In-stream error kind -> the ``error`` object's (type, code, message)."""


def realtime_error(
    kind_type: str, code: str | None, message: str, event_id: str = "event_chaosstream"
) -> dict[str, Any]:
    """An ``error`` server event (openai-python ``RealtimeErrorEvent``)."""
    error = {"type": kind_type, "code": code, "message": message, "param": None, "event_id": None}
    return {"type": "error", "event_id": event_id, "error": error}


def _event(frame: Event) -> dict[str, Any] | None:
    obj = json_or_none(frame.data)
    return obj if isinstance(obj, dict) else None


class OpenAIRealtime(WireFormat):
    """OpenAI Realtime: JSON events over a WebSocket; text in output text deltas."""

    name = "openai-realtime"
    framing = "ws-json"
    media_type = MEDIA_TYPE

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        return _PATH.search(path) is not None

    def wants_stream(self, request: RequestView) -> bool:
        """A realtime session is a stream of events."""
        return True

    def text(self, frame: Event) -> str | None:
        obj = _event(frame)
        if obj is None or obj.get("type") not in TEXT_DELTAS:
            return None
        delta = obj.get("delta")
        return delta if isinstance(delta, str) else None

    def is_terminal(self, frame: Event) -> bool:
        obj = _event(frame)
        return obj is not None and obj.get("type") == "response.done"

    def is_error(self, frame: Event) -> bool:
        obj = _event(frame)
        if obj is None:
            return False
        if obj.get("type") == "error":
            return True
        response = obj.get("response")
        failed = isinstance(response, dict) and response.get("status") == "failed"
        return obj.get("type") == "response.done" and failed

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        """An ``error`` event: one WebSocket message (no framing bytes)."""
        return dumps(realtime_error(*REALTIME_ERRORS[kind])).encode()

    def terminal_frame(self) -> bytes:
        response = {"object": "realtime.response", "id": "resp_chaosstream", "status": "completed"}
        return dumps(
            {"type": "response.done", "event_id": "event_done", "response": response}
        ).encode()

    def error_body(self, status: int, message: str | None = None) -> bytes:
        """Before the upgrade the endpoint answers as the REST API does: OpenAI's error JSON."""
        return dumps(openai_error(status, message)).encode()
