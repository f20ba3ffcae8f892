"""Tests for chaosstream.streams.format: the interface's defaults and the summary it builds."""

from __future__ import annotations

from chaosstream.streams.format import (
    FrameDecoder,
    WireFormat,
    dumps,
    json_or_none,
    media_type,
    summarise,
)
from chaosstream.streams.registry import get
from chaosstream.streams.sse import SSE_FRAMER, format_event
from chaosstream.testing import make_request


def test_default_stream_flag_and_equivalence() -> None:
    """Default: stream:true or an SSE Accept asks to stream; stream fields are set aside."""
    fmt = get("openai")
    assert fmt.wants_stream(make_request(body={"stream": True}))
    assert not fmt.wants_stream(make_request(body={"stream": "yes"}))
    assert fmt.wants_stream(make_request(body={}, headers={"Accept": "text/event-stream"}))
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    assert WireFormat.equivalent(fmt, "/p", "q=1", body) == ("/p", "q=1", {"model": "m"})
    assert WireFormat.equivalent(fmt, "/p", "", None) == ("/p", "", None)


def test_decoder_keeps_the_last_event_id_and_drops_keep_alives() -> None:
    """The decoder yields data events only and remembers the spec's last event id."""
    decoder = FrameDecoder(SSE_FRAMER)
    events = decoder.feed(b": ping\n\nid: 7\ndata: a\n\nid: 8\n\ndata: b")
    assert [e.data for e in events] == ["a"] and decoder.last_event_id == "8"
    assert decoder.flush() == b"data: b"


def test_summarise_counts_text_terminal_and_errors() -> None:
    """A summary joins the format's text, sees its terminal frame, and an error after it."""
    fmt = get("anthropic")
    text = '{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}'
    body = format_event(text, event="content_block_delta") * 2 + fmt.terminal_frame()
    summary = summarise(body + fmt.error_frame("overloaded"), fmt, SSE_FRAMER)
    assert (summary.text, summary.tokens, summary.events) == ("HiHi", 2, 4)
    assert summary.terminated and summary.errored
    cut = summarise(body[:-3], fmt, SSE_FRAMER)
    assert not cut.terminated and cut.events == 2


def test_helpers_never_raise() -> None:
    """json_or_none tolerates anything; media_type drops parameters and case."""
    assert json_or_none("{") is None and json_or_none(b"\xff") is None
    assert json_or_none("[" * 100_000) is None
    assert json_or_none('{"a":1}') == {"a": 1} and dumps({"a": 1}) == '{"a":1}'
    assert media_type("Text/Event-Stream; charset=utf-8") == "text/event-stream"
    assert media_type(None) == ""


def test_stop_frames_end_with_the_formats_terminal_or_say_unsupported() -> None:
    """stop_frame ends with a frame the format calls terminal; None where it has no such stop."""
    from chaosstream.streams.format import words
    from chaosstream.streams.registry import framer_for

    supported = {
        "openai": {"stop", "length", "content_filter", "refusal", "tool_calls"},
        "anthropic": {"stop", "length", "content_filter", "refusal", "tool_calls"},
        "openai-responses": {"stop", "length", "content_filter", "refusal"},
        "gemini": {"stop", "length", "content_filter", "refusal"},
        "ollama": {"stop", "length", "refusal"},
        "sse": set(),
    }
    for name, kinds in supported.items():
        fmt = get(name)
        for kind in ("stop", "length", "content_filter", "refusal", "tool_calls"):
            data = fmt.stop_frame(kind, text="a b", tokens=2)  # type: ignore[arg-type]
            assert (data is not None) == (kind in kinds), (name, kind)
            if data is not None:
                framer = framer_for(fmt)
                events = [framer.parse(r, False) for r in framer.splitter().feed(data)]
                assert fmt.is_terminal(events[-1]) and not any(map(fmt.is_error, events))
    assert words("a b  c") == ["a ", "b ", " ", "c"] and words("") == []
