"""Tests for chaosstream.streams.sse_plain: the provider-neutral SSE format, the fallback."""

from __future__ import annotations

import json

from chaosstream.streams.sse import parse_event
from chaosstream.streams.sse_plain import PlainSse

FMT = PlainSse()


def test_every_data_event_counts_and_message_data_is_text() -> None:
    """A message's data is text; any data event is a token; done or [DONE] ends."""
    assert FMT.recognises("GET", "/anything", {})
    assert FMT.text(parse_event(b"data: hi\n\n")) == "hi"
    named = parse_event(b"event: progress\ndata: 50\n\n")
    assert FMT.text(named) is None and FMT.tokens(named) == 1
    assert FMT.is_terminal(parse_event(b"data: [DONE]\n\n"))
    assert FMT.is_terminal(parse_event(FMT.terminal_frame()))
    assert FMT.is_error(parse_event(FMT.error_frame("server_error")))
    assert json.loads(FMT.error_body(503))["error"]["status"] == 503
    assert FMT.body_text("plain") == "plain"
