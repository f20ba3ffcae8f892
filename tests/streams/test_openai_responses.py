"""Tests for chaosstream.streams.openai_responses: recognition, frames, errors, equivalence."""

from __future__ import annotations

import json

from chaosstream.streams.openai_responses import OpenAIResponses, response_output_text
from chaosstream.streams.registry import format_for
from chaosstream.streams.sse import format_event, parse_event
from chaosstream.testing import make_request

FMT = OpenAIResponses()


def event(kind: str, seq: int, **fields: object) -> bytes:
    """One Responses stream event as the API frames it."""
    return format_event(json.dumps({"type": kind, "sequence_number": seq, **fields}), event=kind)


def test_recognises_responses_paths_only() -> None:
    """POST /v1/responses and GET /v1/responses/{id} (any prefix) are Responses; others are not."""
    for path in ("/v1/responses", "/openai/v1/responses/", "/v1/responses/resp_1"):
        assert format_for("POST", path).name == "openai-responses", path
    for path in ("/v1/chat/completions", "/v1/responses/resp_1/input_items", "/responsesx"):
        assert format_for("POST", path).name != "openai-responses", path


def test_wants_stream_from_body_or_resume_query() -> None:
    """A POST streams on stream:true; a GET resume streams on ?stream=true."""
    assert FMT.wants_stream(make_request("/v1/responses", body={"stream": True}))
    assert not FMT.wants_stream(make_request("/v1/responses", body={"input": "x"}))
    get = make_request("/v1/responses/resp_1", method="GET", stream=False)
    get.query = "stream=true&starting_after=3"
    assert FMT.wants_stream(get)
    get.query = "include=x"
    assert not FMT.wants_stream(get)


def test_equivalent_sets_stream_and_resume_position_aside() -> None:
    """stream/stream_options and the resume query are delivery, not content."""
    assert FMT.equivalent("/v1/responses", "", {"input": "x", "stream": True}) == (
        "/v1/responses",
        "",
        {"input": "x"},
    )
    assert FMT.equivalent("/v1/responses/r", "stream=true&starting_after=4&x=1", None)[1] == "x=1"


def test_text_terminal_and_error_frames() -> None:
    """Only deltas carry text; completed/incomplete/failed end; error and failed are errors."""
    delta = parse_event(event("response.output_text.delta", 5, delta="Hi", item_id="m"))
    assert FMT.text(delta) == "Hi" and not FMT.is_terminal(delta) and not FMT.is_error(delta)
    done = parse_event(event("response.output_text.done", 6, text="Hi"))
    assert FMT.text(done) is None
    for kind in ("response.completed", "response.incomplete"):
        ev = parse_event(event(kind, 9, response={}))
        assert FMT.is_terminal(ev) and not FMT.is_error(ev)
    failed = parse_event(event("response.failed", 9, response={}))
    assert FMT.is_terminal(failed) and FMT.is_error(failed)
    # Without event: lines the data's type decides.
    bare = parse_event(b'data: {"type":"response.completed","sequence_number":1}\n\n')
    assert FMT.is_terminal(bare)
    assert FMT.is_terminal(parse_event(FMT.terminal_frame()))


def test_error_frame_continues_the_sequence_and_has_both_shapes() -> None:
    """The error event numbers on from the last event and carries top-level and nested fields."""
    last = parse_event(event("response.output_text.delta", 7, delta="x"))
    for kind in ("overloaded", "server_error", "rate_limit"):
        ev = parse_event(FMT.error_frame(kind, last))
        body = json.loads(ev.data)
        assert ev.event == "error" and body["type"] == "error" and body["sequence_number"] == 8
        assert body["message"] == body["error"]["message"] and body["code"]
        assert FMT.is_error(ev) and FMT.text(ev) is None and not FMT.is_terminal(ev)
    assert json.loads(parse_event(FMT.error_frame("overloaded")).data)["sequence_number"] == 0


def test_body_text_and_error_body() -> None:
    """A Response object's output_text parts join; HTTP errors use OpenAI's error shape."""
    obj = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"content": [{"type": "output_text", "text": "Hi "}, {"type": "refusal"}]},
            {"content": [{"type": "output_text", "text": "there"}]},
        ]
    }
    assert response_output_text(obj) == "Hi there"
    assert FMT.body_text(json.dumps(obj)) == "Hi there"
    assert FMT.body_text("not json") == ""
    assert json.loads(FMT.error_body(429))["error"]["code"] == "rate_limit_exceeded"
