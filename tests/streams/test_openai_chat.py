"""Tests for chaosstream.streams.openai_chat: the Chat Completions format behind the interface."""

from __future__ import annotations

import json

from chaosstream.streams.openai_chat import OpenAIChat, first_choice, openai_error
from chaosstream.streams.sse import parse_event

FMT = OpenAIChat()


def test_recognises_chat_completions_under_any_prefix() -> None:
    """Gateways and Azure mount Chat Completions under their own prefixes."""
    assert FMT.recognises("POST", "/openai/deployments/x/chat/completions", {})
    assert not FMT.recognises("POST", "/v1/completions/chat", {})


def test_frames_and_bodies() -> None:
    """delta.content is text; [DONE] ends; a truthy error fails; message.content is the body."""
    ev = parse_event(b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n')
    assert FMT.text(ev) == "Hi" and not FMT.is_error(ev)
    assert FMT.is_terminal(parse_event(FMT.terminal_frame()))
    assert FMT.is_error(parse_event(FMT.error_frame("rate_limit")))
    assert first_choice({"choices": []}) is None
    body = json.dumps({"choices": [{"message": {"content": "Whole"}}]})
    assert FMT.body_text(body) == "Whole"
    assert openai_error(404, None)["error"]["code"] == "model_not_found"
