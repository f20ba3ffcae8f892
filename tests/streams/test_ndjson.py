"""Tests for chaosstream.streams.ndjson: byte-exact line framing of NDJSON streams."""

from __future__ import annotations

import itertools
import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from chaosstream.streams.ndjson import NDJSON_FRAMER, LineSplitter, format_line, parse_line

# What Ollama's /api/chat streams (docs/api.md), with a CRLF line, a blank line,
# non-ASCII text and an unterminated tail.
SAMPLE = (
    b'{"model":"llama3.2","message":{"role":"assistant","content":"Caf\xc3\xa9"},"done":false}\n'
    b'{"model":"llama3.2","message":{"role":"assistant","content":" \xe2\x9c\x93"},'
    b'"done":false}\r\n'
    b"\n"
    b'{"model":"llama3.2","message":{"role":"assistant","content":""},'
    b'"done":true,"done_reason":"stop"}\n'
    b'{"error":"unterminated'
)


def reference_split(data: bytes) -> tuple[list[bytes], bytes]:
    """Obviously-correct framing over the whole input: every LF ends a line."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]], parts[-1]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets."""
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run_splitter(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    """Feed chunks one by one; return all lines and the flushed tail."""
    splitter = LineSplitter()
    lines: list[bytes] = []
    for chunk in chunks:
        lines.extend(splitter.feed(chunk))
    return lines, splitter.flush()


def test_sample_splits_into_lines_with_their_newlines() -> None:
    """Each frame is one line including its LF; a CR stays inside, a blank line is a frame."""
    lines, rest = run_splitter([SAMPLE])
    assert len(lines) == 4
    assert lines[1].endswith(b"\r\n")
    assert lines[2] == b"\n"
    assert rest == b'{"error":"unterminated'
    assert b"".join(lines) + rest == SAMPLE


def test_byte_at_a_time_gives_the_same_lines() -> None:
    """Feeding one byte at a time frames exactly as feeding everything at once."""
    assert run_splitter([SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == run_splitter([SAMPLE])


def test_pending_counts_the_unfinished_line() -> None:
    """pending is the size of the line still waiting for its newline; flush resets it."""
    splitter = LineSplitter()
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}\n']
    assert splitter.pending == 4
    assert splitter.feed(b":2") == []
    assert splitter.pending == 6
    assert splitter.flush() == b'{"b":2'
    assert splitter.pending == 0
    assert splitter.flush() == b""


def test_empty_feed_returns_nothing() -> None:
    """Feeding b"" neither emits nor holds anything."""
    splitter = LineSplitter()
    assert splitter.feed(b"") == []
    assert splitter.pending == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"\n", b"\r\n", b"\r", b"{}", b'{"done":true}', b"\xe2\x9c"]),
        ),
        max_size=30,
    ).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_any_chunking_is_byte_exact(data: bytes, raw_cuts: list[int]) -> None:
    """For any bytes cut anywhere, the frames are the reference's and join back to the input."""
    cuts = [c % (len(data) + 1) for c in raw_cuts]
    lines, rest = run_splitter(split_at(data, cuts))
    assert b"".join(lines) + rest == data
    assert (lines, rest) == reference_split(data)
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)


def test_a_long_line_fed_in_small_pieces_costs_linear_time() -> None:
    """A 4 MiB line fed in 64-byte pieces frames in well under a second (no rescans)."""
    line = b'{"response":"' + b"x" * (4 * 1024 * 1024) + b'"}\n'
    splitter = LineSplitter()
    started = time.perf_counter()
    out: list[bytes] = []
    for at in range(0, len(line), 64):
        out.extend(splitter.feed(line[at : at + 64]))
    elapsed = time.perf_counter() - started
    assert out == [line]
    assert elapsed < 5.0, f"{elapsed:.2f} s"


def test_parse_line_reads_json_and_never_raises() -> None:
    """A line gives its JSON value; blank, broken, non-UTF-8 and absurdly deep lines give None."""
    assert parse_line(b'{"done":true,"done_reason":"stop"}\r\n') == {
        "done": True,
        "done_reason": "stop",
    }
    assert parse_line(b"\n") is None
    assert parse_line(b'{"done":tru\n') is None
    assert parse_line(b"\xff\xfe\n") is None
    assert parse_line(b"[" * 100_000 + b"]" * 100_000) is None


def test_format_line_is_one_line_that_parses_back() -> None:
    """format_line writes compact UTF-8 JSON and one LF; newlines in strings stay escaped."""
    value = {"message": {"content": "a\nb café"}, "done": False}
    raw = format_line(value)
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")
    assert "café".encode() in raw
    assert parse_line(raw) == value
    assert json.loads(raw) == value


def test_framer_parses_lines_as_events_for_the_formats() -> None:
    """NDJSON_FRAMER: a line is an event whose data is the line; blank lines dispatch nothing."""
    raw = b'\xef\xbb\xbf{"done":true}\r\n'
    event = NDJSON_FRAMER.parse(raw, True)
    assert event.has_data and event.data == '{"done":true}' and event.raw == raw
    assert not NDJSON_FRAMER.parse(b"  \r\n", False).has_data
    assert NDJSON_FRAMER.dispatches(b"{}\n") and not NDJSON_FRAMER.dispatches(b" \r\n")
    assert isinstance(NDJSON_FRAMER.splitter(), LineSplitter)
    assert "application/x-ndjson" in NDJSON_FRAMER.media_types


def test_framer_payload_is_the_value_without_padding() -> None:
    """payload() spans the JSON value, so malformed_json cuts inside it, never the newline."""
    raw = b'  {"response":"hi"}\r\n'
    start, end = NDJSON_FRAMER.payload(raw)
    assert raw[start:end] == b'{"response":"hi"}'
    start, end = NDJSON_FRAMER.payload(b"\n")
    assert start == end  # a blank line has no value to cut
