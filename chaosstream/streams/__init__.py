"""Wire formats: byte-exact framing and what each frame of a stream means."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosstream.streams.providers import Provider, provider_for, stream_summary, token_text
    from chaosstream.streams.sse import Event, EventDecoder, EventSplitter

__all__ = [
    "Event",
    "EventDecoder",
    "EventSplitter",
    "Provider",
    "provider_for",
    "stream_summary",
    "token_text",
]

_HOME = {
    "Event": "chaosstream.streams.sse",
    "EventDecoder": "chaosstream.streams.sse",
    "EventSplitter": "chaosstream.streams.sse",
    "Provider": "chaosstream.streams.providers",
    "provider_for": "chaosstream.streams.providers",
    "stream_summary": "chaosstream.streams.providers",
    "token_text": "chaosstream.streams.providers",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the face loads a module on first use, so `chaosstream --help`
    # and the lower layers do not pay for what they never touch.
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
