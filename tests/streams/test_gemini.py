"""Tests for chaosstream.streams.gemini: recognition, frames, errors, equivalence."""

from __future__ import annotations

import json

from chaosstream.streams.gemini import Gemini, gemini_error, gemini_text
from chaosstream.streams.registry import format_for
from chaosstream.streams.sse import format_event, parse_event
from chaosstream.testing import make_request

FMT = Gemini()
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
UNARY = "/v1beta/models/gemini-2.5-flash:generateContent"


def chunk(text: str, finish: str | None = None) -> bytes:
    """One streamed GenerateContentResponse."""
    candidate: dict[str, object] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    return format_event(json.dumps({"candidates": [candidate]}))


def test_recognises_both_methods_and_streams_by_path() -> None:
    """Both methods are Gemini; only :streamGenerateContent asks to stream (no body flag)."""
    assert format_for("POST", STREAM + "?alt=sse").name == format_for("POST", UNARY).name
    assert format_for("POST", UNARY).name == "gemini"
    assert format_for("POST", "/v1/models").name != "gemini"
    assert FMT.wants_stream(make_request(STREAM, body={"contents": []}))
    assert not FMT.wants_stream(make_request(UNARY, body={"contents": [], "stream": True}))


def test_equivalent_maps_the_stream_call_onto_the_unary_one() -> None:
    """:streamGenerateContent?alt=sse and :generateContent are the same request."""
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    assert FMT.equivalent(STREAM, "alt=sse", dict(body)) == (UNARY, "", body)
    assert FMT.equivalent(STREAM, "alt=sse&key=k", None)[1] == "key=k"


def test_text_terminal_and_error_frames() -> None:
    """Text from parts (thoughts left out); finishReason ends; a leading "error" key fails."""
    assert FMT.text(parse_event(chunk("Hello"))) == "Hello"
    assert not FMT.is_terminal(parse_event(chunk("Hello")))
    last = parse_event(chunk(" world", "STOP"))
    assert FMT.text(last) == " world" and FMT.is_terminal(last)
    thought = {"candidates": [{"content": {"parts": [{"text": "hmm", "thought": True}]}}]}
    assert gemini_text(thought) == ""
    for kind in ("overloaded", "server_error", "rate_limit"):
        ev = parse_event(FMT.error_frame(kind))
        assert FMT.is_error(ev) and FMT.text(ev) is None and not FMT.is_terminal(ev)
    # google-genai only raises when "error" is the first key.
    assert not FMT.is_error(parse_event(b'data: {"candidates": [], "error": {}}\n\n'))
    assert FMT.is_terminal(parse_event(FMT.terminal_frame()))


def test_error_shapes_name_the_rpc_status() -> None:
    """Errors are google.rpc.Status objects: code, message, status name."""
    assert gemini_error(503)["error"]["status"] == "UNAVAILABLE"
    assert gemini_error(429)["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert json.loads(FMT.error_body(418, "teapot")) == {
        "error": {"code": 418, "message": "teapot", "status": "FAILED_PRECONDITION"}
    }
    assert json.loads(parse_event(FMT.error_frame("overloaded")).data)["error"]["code"] == 503
    assert FMT.body_text(json.dumps(json.loads(parse_event(chunk("x")).data))) == "x"
