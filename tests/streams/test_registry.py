"""Tests for chaosstream.streams.registry: the format list, look-ups, and byte-exact framing."""

from __future__ import annotations

import asyncio
import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from chaosstream.faults import Corrupt, Latency, Noop, Throttle
from chaosstream.streams.format import ERROR_KINDS, Framer
from chaosstream.streams.registry import (
    FORMATS,
    FRAMERS,
    PLAIN,
    format_for,
    format_for_response,
    framer_for,
    get,
    is_stream_body,
    response_text,
    stream_summary,
)
from chaosstream.streams.sse import format_event
from chaosstream.testing import make_request

GEMINI = "/v1beta/models/m:streamGenerateContent"
# Request paths of the text framings whose sample bodies sample_body() can write; a
# binary framing (Bedrock's event stream) has its own property test with its module.
PATHS = {"sse": ["/v1/responses", GEMINI, "/v1/chat/completions"], "ndjson": ["/api/chat"]}


def test_every_format_has_a_unique_name_a_framer_and_plain_sse_last() -> None:
    """Names are unique, every framing is registered, and the catch-all is asked last."""
    names = [f.name for f in FORMATS]
    assert len(names) == len(set(names))
    assert all(f.framing in FRAMERS for f in FORMATS)
    assert FORMATS[-1] is PLAIN and get("no-such-format") is PLAIN
    assert set(PATHS) <= set(FRAMERS)


def _frames(framer: Framer, data: bytes) -> list[bytes]:
    """The frames of ``data`` as a stream that ends there (a WebSocket message has no
    separator: it is whole, and the splitter hands it over at the end)."""
    splitter = framer.splitter()
    frames = splitter.feed(data)
    rest = splitter.flush()
    return [*frames, rest] if rest else frames


def test_every_format_recognises_its_own_frames() -> None:
    """Each format's terminal frame is terminal; each error frame is an error, no text, no end."""
    for fmt in FORMATS:
        framer = framer_for(fmt)
        (raw,) = _frames(framer, fmt.terminal_frame())
        assert fmt.is_terminal(framer.parse(raw, True)), fmt.name
        for kind in ERROR_KINDS:
            # The error comes first; a format may end the stream right after it.
            raw = _frames(framer, fmt.error_frame(kind))[0]
            frame = framer.parse(raw, False)
            assert fmt.is_error(frame) and fmt.text(frame) is None, (fmt.name, kind)
            assert not fmt.is_terminal(frame), (fmt.name, kind)
        body = json.loads(fmt.error_body(503))
        assert isinstance(body, dict) and body, fmt.name


def test_format_for_reads_paths_and_response_headers() -> None:
    """The path names the format; a plain-SSE exchange may be re-recognised by its response."""
    assert format_for("POST", "/v1/responses?x=1").name == "openai-responses"
    assert format_for("POST", GEMINI).name == "gemini"
    assert format_for("GET", "/sse").name == "sse"
    chat = get("openai")
    assert format_for_response(chat, "application/x-ndjson", {}) is chat
    assert format_for_response(PLAIN, "text/event-stream", {}) is PLAIN


def test_summary_and_response_text_by_name() -> None:
    """stream_summary and response_text take a format or its name alike."""
    body = format_event(json.dumps({"type": "response.output_text.delta", "delta": "Hi"}))
    body += get("openai-responses").terminal_frame()
    summary = stream_summary(body, "openai-responses")
    assert (summary.text, summary.tokens, summary.terminated) == ("Hi", 1, True)
    assert response_text(body, "text/event-stream", get("openai-responses")) == "Hi"
    assert is_stream_body("gemini", "text/event-stream; charset=utf-8")
    assert not is_stream_body("gemini", "application/json")


def sample_body(framing: str, n: int) -> bytes:
    """A stream of n JSON frames in the framing (keep-alives included), ending with blank lines."""
    values = [{"i": i, "text": "é" * (i % 3)} for i in range(n)]
    if framing == "ndjson":
        return b"".join(json.dumps(v).encode() + b"\n" for v in values) + b"\n"
    return b": keep-alive\n\n" + b"".join(format_event(json.dumps(v)) for v in values)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 12),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
    which=st.integers(0, 3),
)
def test_any_chunking_passes_byte_exact_per_framing(n: int, cuts: list[int], which: int) -> None:
    """For every framing: any chunking through pass-through or non-dropping faults is byte-exact."""
    from chaosstream.testing import run_fault

    faults = [
        Noop(type="noop"),
        Latency(type="latency", per_event_ms=1),
        Throttle(type="throttle", tokens_per_s=1000),
        Corrupt(type="corrupt", action="split", rate=1.0, split_gap_ms=0),
    ]
    for framing, paths in PATHS.items():
        body = sample_body(framing, n)
        points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
        chunks = [body[a:b] for a, b in itertools.pairwise(points) if b > a]
        for path in paths:
            request = make_request(path)
            assert framer_for(request.provider).name == framing, path
            # Whole frames back out of the splitter, byte for byte.
            splitter = framer_for(request.provider).splitter()
            frames = [f for c in chunks for f in splitter.feed(c)]
            assert b"".join(frames) + splitter.flush() == body
            result = asyncio.run(run_fault(faults[which], chunks, request=request))
            assert result.data == body, (framing, path, faults[which].type)
