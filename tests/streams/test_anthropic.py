"""Tests for chaosstream.streams.anthropic: the Messages format behind the interface."""

from __future__ import annotations

import json

from chaosstream.streams.anthropic import Anthropic, status_error
from chaosstream.streams.sse import format_event, parse_event

FMT = Anthropic()


def test_frames_and_bodies() -> None:
    """text_delta carries text; message_stop ends; event: error fails; content[] is the body."""
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}
    ev = parse_event(format_event(json.dumps(delta), event="content_block_delta"))
    assert FMT.text(ev) == "Hi" and not FMT.is_terminal(ev)
    assert FMT.is_terminal(parse_event(FMT.terminal_frame()))
    err = parse_event(FMT.error_frame("overloaded"))
    assert FMT.is_error(err) and json.loads(err.data)["error"]["type"] == "overloaded_error"
    body = json.dumps({"content": [{"type": "text", "text": "A"}, {"type": "tool_use"}]})
    assert FMT.body_text(body) == "A"
    assert status_error(529) == ("overloaded_error", "Overloaded")
    assert status_error(599)[0] == "api_error" and status_error(418)[0] == "invalid_request_error"
