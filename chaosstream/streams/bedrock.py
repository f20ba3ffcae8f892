"""AWS Bedrock Runtime Converse (``/model/{modelId}/converse-stream``, ``/converse``).

The stream is ``application/vnd.amazon.eventstream`` (:mod:`.eventstream`):
event messages ``messageStart``, ``contentBlockStart``, ``contentBlockDelta``
(``{"contentBlockIndex", "delta": {"text"}}``), ``contentBlockStop``,
``messageStop`` (``{"stopReason"}``), ``metadata`` (usage, metrics); an
in-stream failure is an exception message (``:message-type: exception``,
``:exception-type`` one of ``internalServerException``,
``modelStreamErrorException``, ``validationException``,
``throttlingException``, ``serviceUnavailableException``) whose payload is
``{"message"}``. Shapes from botocore's service model
``botocore/data/bedrock-runtime/2023-09-30/service-2.json``
(``ConverseStreamOutput``, ``ConverseResponse``).

What boto3 does (botocore ``eventstream.py``, ``EventStream._parse_event``):
an exception message raises ``botocore.exceptions.EventStreamError`` whose
``response["Error"]["Code"]`` is the exception type; a CRC mismatch raises
``ChecksumMismatch``; a stream that just ends stops the iteration quietly (it
never checks for ``messageStop``). HTTP errors are JSON
``{"message"}`` with the type in ``x-amzn-ErrorType`` or ``__type``
(botocore ``RestJSONParser._do_error_parse``); boto3 reads
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` for its endpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from chaosstream.streams.eventstream import encode_message
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

__all__ = [
    "EXCEPTIONS",
    "STREAM_ERRORS",
    "Bedrock",
    "bedrock_error",
    "event_message",
    "exception_message",
]

_PATH = re.compile(r"/model/[^/]+/(converse-stream|converse)$")

EXCEPTIONS = (
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
)
"""The exception members of ``ConverseStreamOutput``."""

STREAM_ERRORS: dict[ErrorKind, tuple[str, str]] = {
    "overloaded": ("serviceUnavailableException", "The service is temporarily unavailable."),
    "server_error": ("internalServerException", "The server encountered an internal error."),
    "rate_limit": ("throttlingException", "Too many requests, please wait before trying again."),
}
"""In-stream error kind -> (exception type, message) as Bedrock sends them."""

# HTTP status -> error type Bedrock names in x-amzn-ErrorType (the service model's errors).
_STATUS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "The input fails to satisfy the constraints."),
    403: ("AccessDeniedException", "You don't have access to the model."),
    404: ("ResourceNotFoundException", "The specified resource could not be found."),
    408: ("ModelTimeoutException", "The request took too long to process."),
    424: ("ModelErrorException", "The model failed to process the request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "The service is temporarily unavailable."),
}


def bedrock_error(status: int, message: str | None = None) -> tuple[str, dict[str, Any]]:
    """(error type, JSON body) of an HTTP error as Bedrock Runtime answers it."""
    default = ("InternalServerException" if status >= 500 else "ValidationException", "")
    name, text = _STATUS.get(status, default)
    text = message or text or f"Request failed with status {status}."
    # __type lets botocore name the error even when a middlebox dropped x-amzn-ErrorType.
    return name, {"__type": name, "message": text}


def event_message(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """One Converse event message (``:message-type: event``), framed with valid CRCs."""
    return encode_message(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
    )


def exception_message(exception_type: str, message: str) -> bytes:
    """One exception message (``:message-type: exception``), framed with valid CRCs."""
    return encode_message(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        dumps({"message": message}).encode("utf-8"),
    )


def _kind(frame: Event) -> str:
    return frame.comments[0] if frame.comments else ""


class Bedrock(WireFormat):
    """Bedrock Converse: binary event stream messages, text in ``contentBlockDelta``."""

    name = "bedrock"
    framing = "eventstream"
    media_type = "application/vnd.amazon.eventstream"

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        return _PATH.search(path) is not None

    def wants_stream(self, request: RequestView) -> bool:
        """The operation says it: ``converse-stream`` streams, ``converse`` does not."""
        return request.path.split("?", 1)[0].endswith("/converse-stream")

    def equivalent(self, path: str, query: str, body: Any) -> tuple[str, str, Any]:
        """``converse-stream`` and ``converse`` take the same body: only the path differs."""
        if path.endswith("/converse-stream"):
            path = path[: -len("-stream")]
        return path, query, body

    def text(self, frame: Event) -> str | None:
        if frame.event != "contentBlockDelta" or _kind(frame) != "event":
            return None
        obj = json_or_none(frame.data)
        delta = obj.get("delta") if isinstance(obj, dict) else None
        text = delta.get("text") if isinstance(delta, dict) else None
        return text if isinstance(text, str) else None

    def is_terminal(self, frame: Event) -> bool:
        return frame.event == "messageStop" and _kind(frame) == "event"

    def is_error(self, frame: Event) -> bool:
        # "invalid": a message failing its CRC or lengths, on which botocore raises.
        return _kind(frame) in ("exception", "error", "invalid")

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        name, message = STREAM_ERRORS[kind]
        return exception_message(name, message)

    def terminal_frame(self) -> bytes:
        return event_message("messageStop", {"stopReason": "end_turn"})

    def stop_frame(
        self, kind: StopKind, last: Event | None = None, *, text: str = "", tokens: int = 0
    ) -> bytes | None:
        # ConverseStream's StopReason (bedrock-runtime API, MessageStopEvent): max_tokens,
        # content_filtered, end_turn...; a model refuses in plain text. The open text
        # block is closed first, as the service does before messageStop.
        reason = {"stop": "end_turn", "length": "max_tokens", "content_filter": "content_filtered"}
        if kind not in (*reason, "refusal"):
            return None
        out = b""
        if kind == "refusal":
            out += event_message(
                "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": REFUSAL}}
            )
        out += event_message("contentBlockStop", {"contentBlockIndex": 0})
        return out + event_message("messageStop", {"stopReason": reason.get(kind, "end_turn")})

    def error_body(self, status: int, message: str | None = None) -> bytes:
        return dumps(bedrock_error(status, message)[1]).encode("utf-8")

    def body_text(self, body: str) -> str:
        """A ``converse`` answer: the text blocks of ``output.message.content``."""
        obj = json_or_none(body)
        output = obj.get("output") if isinstance(obj, dict) else None
        message = output.get("message") if isinstance(output, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return ""
        return "".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
