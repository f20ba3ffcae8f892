"""OpenAI Chat Completions (``/chat/completions``, legacy ``/completions``) as a wire format.

What the SDK does (openai-python 3.x ``_streaming.py``, ``Stream.__stream__``):
it stops at a data that starts with ``[DONE]``; every other data is JSON, and
a mapping with a truthy top-level ``"error"`` raises ``openai.APIError``
(message from ``error.message``). The ``event:`` field is ignored. With an
HTTP error status the SDK maps the status to a class (429 ``RateLimitError``,
>=500 ``InternalServerError``) and keeps the body's ``error`` object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chaosstream.streams.format import (
    REFUSAL,
    ErrorKind,
    StopKind,
    ToolCall,
    WireFormat,
    dumps,
    json_or_none,
    words,
)
from chaosstream.streams.sse import Event

__all__ = ["OpenAIChat", "first_choice", "openai_error", "openai_stream_error"]


def is_done(data: str) -> bool:
    """The openai SDK checks ``sse.data.startswith("[DONE]")``."""
    return data.startswith("[DONE]")


def first_choice(obj: Any) -> dict[str, Any] | None:
    """``choices[0]`` of a chunk or completion, when it is a mapping."""
    if not isinstance(obj, dict):
        return None
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return choices[0]


# In-stream errors as OpenAI sends them. The messages are the ones the real
# API uses, so a client that shows them to users looks as it would live.
_STREAM_ERRORS: dict[ErrorKind, dict[str, Any]] = {
    "overloaded": {
        "message": "The server is overloaded or not ready yet.",
        "type": "server_error",
        "param": None,
        "code": None,
    },
    "server_error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    },
    "rate_limit": {
        "message": "Rate limit reached for requests. Please try again later.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    },
}


def openai_stream_error(kind: ErrorKind) -> dict[str, Any]:
    """The ``error`` object OpenAI puts in an in-stream error of ``kind`` (a fresh copy)."""
    return dict(_STREAM_ERRORS[kind])


def openai_error(status: int, message: str | None) -> dict[str, Any]:
    """The JSON body the OpenAI API sends with HTTP ``status``; ``type``/``code`` per status."""
    err_type, code, default = {
        400: ("invalid_request_error", None, "Invalid request."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
        404: ("invalid_request_error", "model_not_found", "The model does not exist."),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
        500: (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        503: ("server_error", None, "The server is overloaded or not ready yet."),
    }.get(
        status,
        ("server_error", None, f"Server error {status}.")
        if status >= 500
        else ("invalid_request_error", None, f"Request failed with status {status}."),
    )
    return {
        "error": {
            "message": message or default,
            "type": err_type,
            "param": None,
            "code": code,
        }
    }


# `finish_reason` per stop (API reference, the chat completion chunk object:
# "stop" | "length" | "tool_calls" | "content_filter"); a refusal is `delta.refusal`
# text that ends with "stop" (structured outputs, "Refusals").
_FINISH: dict[StopKind, str] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "refusal": "stop",
    "tool_calls": "tool_calls",
}


def _chunk(last: Event | None, delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One chunk continuing ``last``'s id, created and model."""
    prev = json_or_none(last.data) if last is not None and last.has_data else None
    prev = prev if isinstance(prev, dict) else {}
    body = {
        "id": prev.get("id", "chatcmpl-chaosstream"),
        "object": "chat.completion.chunk",
        "created": prev.get("created", 0),
        "model": prev.get("model", "chaosstream"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {dumps(body)}\n\n".encode()


class OpenAIChat(WireFormat):
    """``data:`` JSON chunks, text in ``choices[0].delta.content``, ending ``data: [DONE]``."""

    name = "openai"

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        # Azure and gateways mount Chat Completions under their own prefixes
        # (/openai/deployments/x/chat/completions), so only the tail decides.
        return path.rstrip("/").endswith("/chat/completions")

    def text(self, frame: Event) -> str | None:
        """``choices[0].delta.content`` (``choices[0].text`` for legacy completions)."""
        if not frame.has_data or is_done(frame.data):
            return None
        choice = first_choice(json_or_none(frame.data))
        if choice is None:
            return None
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        return text if isinstance(text, str) and text else None

    def is_terminal(self, frame: Event) -> bool:
        return frame.has_data and is_done(frame.data)

    def is_error(self, frame: Event) -> bool:
        if not frame.has_data or is_done(frame.data) or '"error"' not in frame.data:
            return False
        obj = json_or_none(frame.data)
        # Mirrors the openai SDK: `is_mapping(data) and data.get("error")`.
        return isinstance(obj, dict) and bool(obj.get("error"))

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        # No `event:` line: the openai SDK reads only the data.
        return f"data: {dumps({'error': _STREAM_ERRORS[kind]})}\n\n".encode()

    def terminal_frame(self) -> bytes:
        return b"data: [DONE]\n\n"

    def stop_frame(
        self, kind: StopKind, last: Event | None = None, *, text: str = "", tokens: int = 0
    ) -> bytes | None:
        out = b""
        if kind == "refusal":
            delta = {"role": "assistant", "content": None, "refusal": REFUSAL}
            out += _chunk(last, delta)
        return out + _chunk(last, {}, _FINISH[kind]) + self.terminal_frame()

    def tool_call_frames(
        self, calls: Sequence[ToolCall], last: Event | None = None
    ) -> bytes | None:
        # The API streams each call as a first delta with index, id, type and name,
        # then argument pieces under the same index (openai-python's
        # ChoiceDeltaToolCall; its stream helper joins them by index).
        out = b""
        for i, call in enumerate(calls):
            head = {
                "index": i,
                "id": f"call_{call.id}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            out += _chunk(last, {"role": "assistant", "content": None, "tool_calls": [head]})
            for piece in call.arguments:
                out += _chunk(
                    last, {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                )
        return out

    def reasoning_frames(self, text: str, last: Event | None = None) -> bytes | None:
        # OpenAI's own API never streams reasoning on Chat Completions; the
        # compatible servers that do (DeepSeek's "Reasoning Model" guide, vLLM's
        # reasoning outputs) send `delta.reasoning_content`, which the SDK keeps
        # as an extra field.
        return b"".join(
            _chunk(last, {"content": None, "reasoning_content": w}) for w in words(text)
        )

    def error_body(self, status: int, message: str | None = None) -> bytes:
        return dumps(openai_error(status, message)).encode()

    def body_text(self, body: str) -> str:
        """``choices[0].message.content``."""
        obj = json_or_none(body)
        choice = first_choice(obj)
        message = choice.get("message") if choice is not None else None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""
