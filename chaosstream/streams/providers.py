"""What OpenAI Chat Completions, Anthropic Messages and plain SSE streams look like.

Faults and the recorder ask this module where the text is, how a complete
stream ends and what an error looks like, so an injected error is one the
official SDKs really raise on. What the SDKs do (openai 3.x and anthropic 2.x,
``_streaming.py``):

- openai ``Stream.__stream__``: stops at a data that starts with ``[DONE]``;
  every other data is JSON, and a mapping with a truthy top-level ``"error"``
  raises ``openai.APIError`` (message from ``error.message``). The ``event:``
  field is ignored for chat completions.
- anthropic ``Stream.__stream__``: skips ``event: ping`` and events with no
  ``event:`` field; ``event: error`` raises ``client._make_status_error`` on
  the 200 response, i.e. ``anthropic.APIStatusError`` with the JSON as body;
  every other event's data is JSON typed by its ``"type"``.
- With an HTTP error status both SDKs map the status to a class
  (429 ``RateLimitError``, >=500 ``InternalServerError``; anthropic also 503
  ``ServiceUnavailableError`` and 529 ``OverloadedError``) and keep the body's
  ``error`` object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from chaosstream.streams.sse import Event, EventDecoder

__all__ = [
    "ErrorKind",
    "Provider",
    "StreamSummary",
    "error_body",
    "error_event",
    "is_error",
    "is_terminal",
    "provider_for",
    "response_text",
    "stream_summary",
    "terminal_event",
    "token_text",
]

Provider = Literal["openai", "anthropic", "sse"]
"""The stream shapes chaosstream knows; "sse" is any other event stream."""

ErrorKind = Literal["overloaded", "server_error", "rate_limit"]
"""The in-stream error kinds of the ``stream_error`` fault."""


def provider_for(path: str) -> Provider:
    """Name the provider whose API serves ``path`` (any prefix, query ignored)."""
    path = path.split("?", 1)[0].rstrip("/")
    # Azure and gateways mount Chat Completions under their own prefixes
    # (/openai/deployments/x/chat/completions), so only the tail decides.
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/v1/messages"):
        return "anthropic"
    return "sse"


def _json(data: str) -> Any:
    """Parse JSON, or None when it is not JSON: a stream may carry anything."""
    try:
        return json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return None
    except RecursionError:
        return None


def _is_done(data: str) -> bool:
    # The openai SDK checks `sse.data.startswith("[DONE]")`.
    return data.startswith("[DONE]")


def token_text(ev: Event, provider: Provider) -> str | None:
    """The answer text an event carries, or None (no text, not JSON, terminal...).

    openai: ``choices[0].delta.content`` (``choices[0].text`` for legacy
    completions); anthropic: a ``content_block_delta`` whose delta is a
    ``text_delta``; sse: the data of a ``message`` event. Never raises.
    """
    if not ev.has_data:
        return None
    if provider == "sse":
        if ev.event != "message" or _is_done(ev.data) or not ev.data:
            return None
        return ev.data
    if provider == "openai":
        if _is_done(ev.data):
            return None
        obj = _json(ev.data)
        choice = _first_choice(obj)
        if choice is None:
            return None
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        return text if isinstance(text, str) and text else None
    obj = _json(ev.data)
    if not isinstance(obj, dict) or obj.get("type") != "content_block_delta":
        return None
    delta = obj.get("delta")
    if not isinstance(delta, dict) or delta.get("type") != "text_delta":
        return None
    text = delta.get("text")
    return text if isinstance(text, str) and text else None


def _first_choice(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return choices[0]


def is_terminal(ev: Event, provider: Provider) -> bool:
    """True for the event a complete stream ends with.

    openai ``data: [DONE]``; anthropic ``message_stop``; sse ``event: done``
    or ``data: [DONE]``.
    """
    if provider == "openai":
        return ev.has_data and _is_done(ev.data)
    if provider == "anthropic":
        if ev.event == "message_stop":
            return True
        if ev.event != "message" or '"message_stop"' not in ev.data:
            return False
        obj = _json(ev.data)
        return isinstance(obj, dict) and obj.get("type") == "message_stop"
    return ev.event == "done" or (ev.has_data and ev.data.strip() == "[DONE]")


def is_error(ev: Event, provider: Provider) -> bool:
    """True for an in-stream error event the provider's client treats as a failure."""
    if provider == "anthropic" or provider == "sse":
        return ev.event == "error"
    if not ev.has_data or _is_done(ev.data) or '"error"' not in ev.data:
        return False
    obj = _json(ev.data)
    # Mirrors the openai SDK: `is_mapping(data) and data.get("error")`.
    return isinstance(obj, dict) and bool(obj.get("error"))


# In-stream errors as the providers send them. The messages are the ones the
# real APIs use, so a client that shows them to users looks as it would live.
_OPENAI_STREAM_ERRORS: dict[ErrorKind, dict[str, Any]] = {
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

_ANTHROPIC_STREAM_ERRORS: dict[ErrorKind, tuple[str, str]] = {
    "overloaded": ("overloaded_error", "Overloaded"),
    "server_error": ("api_error", "Internal server error"),
    "rate_limit": ("rate_limit_error", "Rate limit exceeded. Please try again later."),
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def error_event(provider: Provider, kind: ErrorKind) -> bytes:
    """An in-stream error event in the provider's own shape, ready to write."""
    if provider == "openai":
        # No `event:` line: the openai SDK reads only the data.
        return f"data: {_dumps({'error': _OPENAI_STREAM_ERRORS[kind]})}\n\n".encode()
    err_type, message = _ANTHROPIC_STREAM_ERRORS[kind]
    if provider == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": err_type, "message": message}}
    else:
        body = {"error": {"type": kind, "message": message}}
    return f"event: error\ndata: {_dumps(body)}\n\n".encode()


def _openai_error(status: int, message: str | None) -> dict[str, Any]:
    # Shapes as the OpenAI API returns them; `type`/`code` per status.
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


_ANTHROPIC_STATUS_TYPES: dict[int, tuple[str, str]] = {
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


def error_body(provider: Provider, status: int, message: str | None = None) -> bytes:
    """The JSON body the provider sends with an HTTP error ``status``."""
    if provider == "openai":
        return _dumps(_openai_error(status, message)).encode()
    default = (
        ("api_error", f"Server error {status}.")
        if status >= 500
        else ("invalid_request_error", f"Request failed with status {status}.")
    )
    err_type, default_message = _ANTHROPIC_STATUS_TYPES.get(status, default)
    if provider == "anthropic":
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": err_type, "message": message or default_message},
        }
    else:
        body = {"error": {"status": status, "message": message or default_message}}
    return _dumps(body).encode()


_TERMINAL: dict[Provider, bytes] = {
    "openai": b"data: [DONE]\n\n",
    "anthropic": b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    "sse": b"event: done\ndata: [DONE]\n\n",
}


def terminal_event(provider: Provider) -> bytes:
    """The event a complete stream of this provider ends with."""
    return _TERMINAL[provider]


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What a recorded SSE body amounts to."""

    events: int  #: blocks that dispatch an event (have data)
    tokens: int  #: events that carry answer text
    text: str  #: the answer text, all pieces joined
    terminated: bool  #: the provider's terminal event was seen
    errored: bool  #: an in-stream error event was seen
    last_event_id: str  #: the spec's last event ID string ("" if none)


_SUMMARY_SLICE = 64 * 1024


def stream_summary(body: bytes, provider: Provider) -> StreamSummary:
    """Summarise an SSE body; an unterminated last block is discarded, as clients do."""
    decoder = EventDecoder()
    pieces: list[str] = []
    terminated = errored = False
    count = 0
    # Fed in slices so only one slice's events exist at a time: a body of a
    # million tiny events must not become a million objects at once.
    view = memoryview(body)
    for at in range(0, len(body), _SUMMARY_SLICE):
        for ev in decoder.feed(bytes(view[at : at + _SUMMARY_SLICE])):
            count += 1
            text = token_text(ev, provider)
            if text is not None:
                pieces.append(text)
            terminated = terminated or is_terminal(ev, provider)
            errored = errored or is_error(ev, provider)
    decoder.flush()
    return StreamSummary(
        events=count,
        tokens=len(pieces),
        text="".join(pieces),
        terminated=terminated,
        errored=errored,
        last_event_id=decoder.last_event_id,
    )


def response_text(body: bytes, content_type: str | None, provider: Provider) -> str:
    """The full answer text of a recorded response body, streamed or not; "" if none.

    ``text/event-stream`` bodies join every token's text; JSON bodies give
    openai ``choices[0].message.content`` or anthropic ``content[].text``.
    Without a content type the body is sniffed. Never raises.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "text/event-stream" or (not media and not body.lstrip().startswith(b"{")):
        return stream_summary(body, provider).text
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    obj = _json(text)
    if provider == "openai":
        choice = _first_choice(obj)
        message = choice.get("message") if choice is not None else None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""
    if provider == "anthropic":
        blocks = obj.get("content") if isinstance(obj, dict) else None
        if not isinstance(blocks, list):
            return ""
        return "".join(
            b["text"]
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return text
