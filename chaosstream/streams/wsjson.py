"""JSON messages over a WebSocket as a framing: one message a frame.

On the wire a WebSocket message is already whole (the relay hands faults one
message per chunk), so the framer's ``parse`` reads a message's bytes as they
are. A recorded WebSocket exchange keeps its messages as JSON lines
(:func:`record_line`): a raw line feed can sit only in the whitespace between
JSON tokens (RFC 8259 section 7: a string escapes control characters), so
turning it into a space keeps the message's meaning and the line its frame.
"""

from __future__ import annotations

from chaosstream.streams.ndjson import NdjsonFramer

__all__ = ["MEDIA_TYPE", "WSJSON_FRAMER", "WsJsonFramer", "record_line"]

MEDIA_TYPE = "application/x-chaosstream-ws-messages"
"""The content type a recorded WebSocket exchange gets: its messages as JSON lines."""


class WsJsonFramer(NdjsonFramer):
    """One JSON WebSocket message a frame; recorded bodies are one message a line."""

    name = "ws-json"
    media_types = frozenset({MEDIA_TYPE})


def record_line(message: bytes) -> bytes:
    """A text message as one line of a recorded body."""
    return message.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n"


WSJSON_FRAMER = WsJsonFramer()
"""The one WebSocket JSON framer (stateless)."""
