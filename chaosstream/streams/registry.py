"""The explicit list of wire formats and framings, and the questions asked by format name.

To add a wire format: write one module in ``chaosstream/streams/`` with one
:class:`~chaosstream.streams.format.WireFormat` subclass, then put an instance
in ``FORMATS`` below, before the formats whose ``recognises`` would also claim
its paths (``PlainSse`` claims everything, so it stays last). A new framing is
one :class:`~chaosstream.streams.format.Framer` in ``FRAMERS``, named by the
formats' ``framing`` attribute.
"""

from __future__ import annotations

from collections.abc import Mapping

from chaosstream.streams.anthropic import Anthropic
from chaosstream.streams.bedrock import Bedrock
from chaosstream.streams.eventstream import EVENTSTREAM_FRAMER
from chaosstream.streams.format import Framer, StreamSummary, WireFormat, media_type, summarise
from chaosstream.streams.gemini import Gemini
from chaosstream.streams.mcp import Mcp
from chaosstream.streams.ndjson import NDJSON_FRAMER
from chaosstream.streams.ollama import Ollama
from chaosstream.streams.openai_chat import OpenAIChat
from chaosstream.streams.openai_realtime import OpenAIRealtime
from chaosstream.streams.openai_responses import OpenAIResponses
from chaosstream.streams.sse import SSE_FRAMER
from chaosstream.streams.sse_plain import PlainSse
from chaosstream.streams.ui_message_stream import UiMessageStream
from chaosstream.streams.wsjson import WSJSON_FRAMER

__all__ = [
    "FORMATS",
    "FRAMERS",
    "PLAIN",
    "format_for",
    "format_for_response",
    "framer_for",
    "get",
    "is_stream_body",
    "response_text",
    "stream_summary",
]

FRAMERS: dict[str, Framer] = {
    SSE_FRAMER.name: SSE_FRAMER,
    NDJSON_FRAMER.name: NDJSON_FRAMER,
    EVENTSTREAM_FRAMER.name: EVENTSTREAM_FRAMER,
    WSJSON_FRAMER.name: WSJSON_FRAMER,
}
"""Every framing by name: how a byte stream becomes frames."""

PLAIN = PlainSse()
"""The fallback: any other event stream."""

FORMATS: tuple[WireFormat, ...] = (
    OpenAIChat(),
    OpenAIResponses(),
    Anthropic(),
    Gemini(),
    UiMessageStream(),
    Ollama(),
    Bedrock(),
    Mcp(),
    OpenAIRealtime(),
    PLAIN,
)
"""Every wire format, in the order ``format_for`` asks them (most specific first)."""

_BY_NAME: dict[str, WireFormat] = {f.name: f for f in FORMATS}


def get(name: str) -> WireFormat:
    """The format named ``name``; plain SSE for a name no format has."""
    return _BY_NAME.get(name, PLAIN)


def framer_for(fmt: WireFormat | str) -> Framer:
    """The framer a format's streams use."""
    if isinstance(fmt, str):
        fmt = get(fmt)
    return FRAMERS[fmt.framing]


def format_for(method: str, path: str, headers: Mapping[str, str] | None = None) -> WireFormat:
    """The first format that recognises a request (path query ignored, headers lower-cased)."""
    path = path.split("?", 1)[0]
    seen = headers if headers is not None else {}
    for fmt in FORMATS:
        if fmt.recognises(method, path, seen):
            return fmt
    return PLAIN


def format_for_response(
    current: WireFormat, content_type: str | None, headers: Mapping[str, str]
) -> WireFormat:
    """The format once upstream answered: a format its response shows, else ``current``.

    Only a request the path left unnamed (plain SSE) is re-recognised, or one
    whose response is no stream in the path's framing: Ollama's ``/api/chat``
    is also useChat's default route, and an app's route answering there with
    an SSE UI message stream says so in its header. Otherwise a path's format
    is never overruled by a header.
    """
    media = media_type(content_type)
    if current is not PLAIN and (
        media in FRAMERS[current.framing].media_types or current.framing == "sse"
    ):
        return current
    for fmt in FORMATS:
        if fmt.recognises_response(media, headers):
            return fmt
    return current


def is_stream_body(fmt: WireFormat | str, content_type: str | None) -> bool:
    """Is a response with this content type a stream in the format's framing?"""
    return media_type(content_type) in framer_for(fmt).media_types


def stream_summary(body: bytes, fmt: WireFormat | str) -> StreamSummary:
    """Summarise a recorded stream body (see :func:`chaosstream.streams.format.summarise`)."""
    if isinstance(fmt, str):
        fmt = get(fmt)
    return summarise(body, fmt, FRAMERS[fmt.framing])


def response_text(body: bytes, content_type: str | None, fmt: WireFormat | str) -> str:
    """The full answer text of a recorded response body, streamed or not; "" if none.

    A stream body joins every frame's text; any other body asks the format's
    ``body_text``. Without a content type the body is sniffed (a body that does
    not start with ``{`` is read as a stream). Never raises.
    """
    if isinstance(fmt, str):
        fmt = get(fmt)
    media = media_type(content_type)
    if is_stream_body(fmt, content_type) or (not media and not body.lstrip().startswith(b"{")):
        return stream_summary(body, fmt).text
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return fmt.body_text(text)
