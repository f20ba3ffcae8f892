"""The former one-module view of the stream shapes, kept as thin wrappers by format name.

New code asks :mod:`chaosstream.streams.registry` for a
:class:`~chaosstream.streams.format.WireFormat` and calls it; these functions
take the format's name (``"openai"``, ``"anthropic"``, ``"sse"``, ...) and do
the same, so callers written against the old module keep working.
"""

from __future__ import annotations

from chaosstream.streams.format import ErrorKind, StreamSummary
from chaosstream.streams.registry import format_for, get, response_text, stream_summary
from chaosstream.streams.sse import Event

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

Provider = str
"""A wire format's name (``WireFormat.name``); "sse" is any other event stream."""


def provider_for(path: str) -> Provider:
    """Name the format whose API serves ``path`` (any prefix, query ignored)."""
    return format_for("POST", path).name


def token_text(ev: Event, provider: Provider) -> str | None:
    """The answer text an event carries, or None (no text, not JSON, terminal...)."""
    return get(provider).text(ev)


def is_terminal(ev: Event, provider: Provider) -> bool:
    """True for the event a complete stream ends with."""
    return get(provider).is_terminal(ev)


def is_error(ev: Event, provider: Provider) -> bool:
    """True for an in-stream error event the provider's client treats as a failure."""
    return get(provider).is_error(ev)


def error_event(provider: Provider, kind: ErrorKind) -> bytes:
    """An in-stream error event in the provider's own shape, ready to write."""
    return get(provider).error_frame(kind)


def error_body(provider: Provider, status: int, message: str | None = None) -> bytes:
    """The JSON body the provider sends with an HTTP error ``status``."""
    return get(provider).error_body(status, message)


def terminal_event(provider: Provider) -> bytes:
    """The event a complete stream of this provider ends with."""
    return get(provider).terminal_frame()
