"""Google Gemini (``:streamGenerateContent?alt=sse``, ``:generateContent``) as a wire format.

Each SSE data is a whole ``GenerateContentResponse``; text in
``candidates[0].content.parts[].text``; the last chunk carries
``finishReason`` (and ``usageMetadata``); there is no ``[DONE]``. An error
mid-stream is a data ``{"error": {"code", "message", "status"}}``.

What google-genai (1.x-3.x, ``_api_client.py``) does: ``request_streamed``
reads ``data:`` lines, and a chunk whose JSON starts with ``{"error":`` raises
``errors.APIError.raise_error(code, ...)``: ``ClientError`` for 4xx,
``ServerError`` for 5xx. HTTP error statuses are mapped the same way
(``raise_for_response``). The SDK reads ``GOOGLE_GEMINI_BASE_URL`` for its
base URL (``_base_url.py``) and ``GOOGLE_API_KEY`` / ``GEMINI_API_KEY``.
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
    dumps,
    json_or_none,
)
from chaosstream.streams.sse import Event

__all__ = ["Gemini", "gemini_error", "gemini_text"]

_STREAM = ":streamGenerateContent"
_UNARY = ":generateContent"

# google.rpc codes as the Gemini API names them, with its own messages.
_STATUS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}

_KIND_STATUS: dict[ErrorKind, int] = {"overloaded": 503, "server_error": 500, "rate_limit": 429}


# `finishReason` per stop (API reference, Candidate.FinishReason: STOP, MAX_TOKENS,
# SAFETY...). Gemini has no refusal field: a refusal is answer text ending STOP.
_FINISH: dict[StopKind, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "refusal": "STOP",
}


def gemini_error(status: int, message: str | None = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "status"}}`` as the Gemini API sends it."""
    default = (
        ("INTERNAL", f"Server error {status}.")
        if status >= 500
        else (
            "FAILED_PRECONDITION",
            f"Request failed with status {status}.",
        )
    )
    name, text = _STATUS.get(status, default)
    return {"error": {"code": status, "message": message or text, "status": name}}


def _first_candidate(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    candidates = obj.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        return None
    return candidates[0]


def gemini_text(obj: Any) -> str:
    """The answer text of one ``GenerateContentResponse`` (thought parts left out)."""
    candidate = _first_candidate(obj)
    content = candidate.get("content") if candidate is not None else None
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    return "".join(
        p["text"]
        for p in parts
        if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
    )


class Gemini(WireFormat):
    """Whole response objects per SSE data; the last has ``finishReason``; no ``[DONE]``."""

    name = "gemini"

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        # /v1beta/models/{m}:streamGenerateContent, also tuned models and Vertex paths.
        return path.endswith(_STREAM) or path.endswith(_UNARY)

    def wants_stream(self, request: RequestView) -> bool:
        """The method in the path asks, not the body (``alt=sse`` picks SSE over a JSON array)."""
        return request.path.endswith(_STREAM)

    def equivalent(self, path: str, query: str, body: Any) -> tuple[str, str, Any]:
        if path.endswith(_STREAM):
            path = path[: -len(_STREAM)] + _UNARY
        if query:
            query = "&".join(p for p in query.split("&") if p.split("=", 1)[0] != "alt")
        return path, query, body

    def text(self, frame: Event) -> str | None:
        if not frame.has_data or '"text"' not in frame.data:
            return None
        text = gemini_text(json_or_none(frame.data))
        return text or None

    def is_terminal(self, frame: Event) -> bool:
        if not frame.has_data or '"finishReason"' not in frame.data:
            return False
        candidate = _first_candidate(json_or_none(frame.data))
        return candidate is not None and bool(candidate.get("finishReason"))

    def is_error(self, frame: Event) -> bool:
        if not frame.has_data or '"error"' not in frame.data:
            return False
        obj = json_or_none(frame.data)
        # google-genai checks json.dumps(chunk).startswith('{"error":').
        return isinstance(obj, dict) and next(iter(obj), None) == "error"

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        return f"data: {dumps(gemini_error(_KIND_STATUS[kind]))}\n\n".encode()

    def terminal_frame(self) -> bytes:
        body = {
            "candidates": [
                {"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 0},
        }
        return f"data: {dumps(body)}\n\n".encode()

    def stop_frame(
        self, kind: StopKind, last: Event | None = None, *, text: str = "", tokens: int = 0
    ) -> bytes | None:
        if kind not in _FINISH:
            return None  # function calls end STOP with functionCall parts: not built here
        prev = json_or_none(last.data) if last is not None and last.has_data else None
        prev = prev if isinstance(prev, dict) else {}
        words = REFUSAL if kind == "refusal" else ""
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": words}], "role": "model"},
            "finishReason": _FINISH[kind],
            "index": 0,
        }
        if kind == "content_filter":
            # A SAFETY stop names the blocked category (API reference, SafetyRating).
            rating = {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
            candidate["safetyRatings"] = [{**rating, "blocked": True}]
        body = {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": 1,
                "candidatesTokenCount": tokens,
                "totalTokenCount": tokens + 1,
            },
            "modelVersion": prev.get("modelVersion", "chaosstream"),
        }
        return f"data: {dumps(body)}\n\n".encode()

    def error_body(self, status: int, message: str | None = None) -> bytes:
        return dumps(gemini_error(status, message)).encode()

    def body_text(self, body: str) -> str:
        return gemini_text(json_or_none(body))
