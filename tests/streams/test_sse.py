"""Tests for chaosstream.streams.sse: framing, parsing and writing of Server-Sent Events.

The spec examples come from the WHATWG HTML Living Standard, 9.2.6
"Interpreting an event stream" (html.spec.whatwg.org/multipage/server-sent-events.html).
"""

from __future__ import annotations

import itertools
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosstream.streams.sse import (
    SSE_FRAMER,
    Event,
    EventDecoder,
    EventSplitter,
    format_event,
    parse_event,
)


def reference_split(data: bytes) -> tuple[list[bytes], bytes]:
    """Obviously-correct byte-at-a-time framing over the whole input, to compare against."""
    blocks: list[bytes] = []
    start = i = 0
    line_empty = True
    n = len(data)
    while i < n:
        if data[i] not in (0x0A, 0x0D):
            line_empty = False
            i += 1
            continue
        if data[i] == 0x0A:
            end = i + 1
        elif i + 1 == n:
            break  # a CR at the end: CR or CRLF is not known yet
        else:
            end = i + 2 if data[i + 1] == 0x0A else i + 1
        if line_empty:
            blocks.append(data[start:end])
            start = end
        i = end
        line_empty = True
    return blocks, data[start:]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets."""
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run_splitter(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    """Feed chunks one by one; return all blocks and the flushed tail."""
    splitter = EventSplitter()
    blocks: list[bytes] = []
    for chunk in chunks:
        blocks.extend(splitter.feed(chunk))
    return blocks, splitter.flush()


def decode_all(data: bytes) -> tuple[list[Event], EventDecoder]:
    """Decode a whole stream in one go."""
    decoder = EventDecoder()
    return decoder.feed(data), decoder


SAMPLE = (
    b"\xef\xbb\xbf: hello\r\n\r\n"
    b"event: add\ndata: 73857293\nid: 1\n\n"
    b"data: caf\xc3\xa9 \xe2\x9c\x93\rdata: second\r\r"
    b"\n"
    b"retry: 1500\r\ndata: x\r\n\r\n"
    b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
    b"data: [DONE]\n\n"
    b"data: unterminated"
)


# --- the spec's own examples ------------------------------------------------


def test_spec_stock_example_joins_data_lines() -> None:
    """The spec's YHOO example: three data lines become one event with newlines between."""
    events, _ = decode_all(b"data: YHOO\ndata: +2\ndata: 10\n\n")
    assert [e.data for e in events] == ["YHOO\n+2\n10"]
    assert events[0].event == "message"


def test_spec_four_blocks_example_sets_and_resets_last_event_id() -> None:
    """The spec's comment/first/second/third example: ids set then reset, one space kept."""
    stream = (
        b": test stream\n\n"
        b"data: first event\nid: 1\n\n"
        b"data:second event\nid\n\n"
        b"data:  third event\n\n"
    )
    decoder = EventDecoder()
    seen = []
    for block in split_at(stream, list(range(1, len(stream)))):
        for ev in decoder.feed(block):
            seen.append((ev.data, ev.id, decoder.last_event_id))
    assert seen == [
        ("first event", "1", "1"),
        ("second event", "", ""),
        (" third event", None, ""),
    ]


def test_spec_data_example_fires_two_events_and_drops_the_unterminated_one() -> None:
    """The spec's "data / data data / data:" example: "" and "\\n" fire, the last block does not."""
    events, decoder = decode_all(b"data\n\ndata\ndata\n\ndata:")
    assert [e.data for e in events] == ["", "\n"]
    assert decoder.flush() == b"data:"


def test_spec_two_identical_events_example() -> None:
    """The spec's "data:test" example: the one space after the colon is optional."""
    events, _ = decode_all(b"data:test\n\ndata: test\n\n")
    assert [e.data for e in events] == ["test", "test"]


def test_spec_event_types_example() -> None:
    """The spec's add/remove example: the event field names the event type."""
    stream = (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
    )
    events, _ = decode_all(stream)
    assert [(e.event, e.data) for e in events] == [
        ("add", "73857293"),
        ("remove", "2153"),
        ("add", "113411"),
    ]


# --- line endings -----------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_each_line_ending_frames_the_same_events(eol: bytes) -> None:
    """LF, CRLF and CR all end lines, and a blank line ends an event."""
    stream = eol.join([b"event: a", b"data: 1", b"data: 2", b"", b"data: 3", b"", b": next"])
    blocks, tail = run_splitter([stream])
    assert tail == b": next"
    assert [parse_event(b).data for b in blocks] == ["1\n2", "3"]
    assert b"".join(blocks) + tail == stream


def test_mixed_line_endings_in_one_stream() -> None:
    """CR, LF and CRLF may be mixed freely within one stream and one event."""
    blocks, tail = run_splitter([b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r\n"])
    assert blocks == [b"data: a\rdata: b\r\ndata: c\n\r\n", b"data: d\r\r\n"]
    assert [parse_event(b).data for b in blocks] == ["a\nb\nc", "d"]
    assert tail == b""


def test_crlf_split_across_reads_is_one_line_ending() -> None:
    """A CR ending one read and an LF starting the next are one CRLF, not a blank line."""
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\r") == []
    assert splitter.feed(b"\n") == []
    assert splitter.feed(b"data: b\r") == []
    assert splitter.feed(b"\n\r") == []
    assert splitter.feed(b"\ndata: c\n\n") == [b"data: a\r\ndata: b\r\n\r\n", b"data: c\n\n"]
    assert splitter.pending == 0


def test_blank_line_ending_in_cr_waits_for_the_next_byte() -> None:
    """A block ending in a bare CR is held until the next byte shows CR versus CRLF."""
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\r\r") == []
    assert splitter.pending == 9
    assert splitter.feed(b"\n") == [b"data: a\r\r\n"]
    assert splitter.feed(b"data: b\n\r") == []
    assert splitter.feed(b"data: c\n\n") == [b"data: b\n\r", b"data: c\n\n"]
    assert splitter.feed(b"data: d\r\r") == []
    assert splitter.flush() == b"data: d\r\r"


def test_keepalive_blank_lines_are_blocks_of_their_own() -> None:
    """Blank lines between events are their own empty blocks and dispatch nothing."""
    blocks, _ = run_splitter([b"\n\r\n\rdata: x\n\n\n"])
    assert blocks == [b"\n", b"\r\n", b"\r", b"data: x\n\n", b"\n"]
    assert [parse_event(b).has_data for b in blocks] == [False, False, False, True, False]


# --- field parsing ----------------------------------------------------------


def test_comments_are_collected_and_dispatch_nothing() -> None:
    """Lines starting with a colon are comments: kept on the Event, never data."""
    ev = parse_event(b": keep-alive\n:raw\ndata: x\n\n")
    assert ev.comments == ("keep-alive", "raw")
    assert ev.data == "x"
    assert not parse_event(b": ping\n\n").has_data


def test_field_rules_from_the_spec() -> None:
    """Unknown fields ignored, a NUL id ignored, retry only when all ASCII digits."""
    ev = parse_event(b"foo: bar\nid: a\x00b\nretry: 12x\ndata\nevent:\n\n")
    assert (ev.event, ev.data, ev.id, ev.retry, ev.has_data) == ("message", "", None, None, True)
    assert parse_event(b"retry: \xd9\xa1\xd9\xa2\n\n").retry is None  # Arabic-Indic digits
    assert parse_event(b"retry:3000\nid:7\n\n").retry == 3000
    assert parse_event(b"id: 1\nid: 2\n\n").id == "2"
    assert parse_event(b"data :x\n\n").has_data is False  # field name is "data ", unknown


def test_invalid_utf8_is_replaced_not_raised() -> None:
    """Bytes that are not UTF-8 decode to U+FFFD instead of raising."""
    assert parse_event(b"data: \xff\xfe\n\n").data == "\ufffd\ufffd"


def test_bom_is_part_of_the_first_block_and_ignored_by_the_parser() -> None:
    """A leading UTF-8 BOM stays in the first raw block; parsing skips it."""
    blocks, _ = run_splitter([b"\xef\xbb", b"\xbfdata: x\n\ndata: y\n\n"])
    assert blocks[0] == b"\xef\xbb\xbfdata: x\n\n"
    events, _ = decode_all(b"".join(blocks))
    assert [e.data for e in events] == ["x", "y"]


def test_split_inside_a_utf8_character() -> None:
    """Cutting a multi-byte character across reads changes neither blocks nor text."""
    stream = "data: naïve → 日本語 🎉\n\n".encode()
    for cut in range(1, len(stream)):
        blocks, tail = run_splitter([stream[:cut], stream[cut:]])
        assert blocks == [stream] and tail == b""
        assert parse_event(blocks[0]).data == "naïve → 日本語 🎉"


# --- chunking invariance ----------------------------------------------------


def test_every_two_way_split_gives_identical_blocks() -> None:
    """Splitting the sample stream at any single offset yields the same blocks and tail."""
    expected = reference_split(SAMPLE)
    assert len(expected[0]) == 6
    for cut in range(len(SAMPLE) + 1):
        assert run_splitter([SAMPLE[:cut], SAMPLE[cut:]]) == expected, cut


def test_random_n_way_splits_give_identical_blocks() -> None:
    """Hundreds of seeded random chunkings of the sample stream all frame it the same way."""
    rng = random.Random(1234)
    expected = reference_split(SAMPLE)
    for _ in range(500):
        cuts = rng.sample(range(1, len(SAMPLE)), rng.randint(1, 40))
        assert run_splitter(split_at(SAMPLE, cuts)) == expected, cuts


line_end_bytes = st.sampled_from([b"\n", b"\r", b"\r\n", b"x", b"data: ", b":", b"\xc3\xa9"])


@settings(max_examples=400, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=300), st.lists(line_end_bytes, max_size=80).map(b"".join)),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=30),
)
def test_any_bytes_any_chunking_is_byte_exact(data: bytes, cuts: list[int]) -> None:
    """For arbitrary bytes and chunking, output is byte-exact and matches the reference."""
    cuts = [c for c in cuts if c <= len(data)]
    blocks, tail = run_splitter(split_at(data, cuts))
    assert b"".join(blocks) + tail == data
    assert (blocks, tail) == reference_split(data)


event_fields = st.fixed_dictionaries(
    {
        "data": st.text(max_size=40),
        "event": st.one_of(st.none(), st.sampled_from(["add", "content_block_delta", "é"])),
        "id": st.one_of(st.none(), st.text(alphabet="abc123", max_size=5)),
        "retry": st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    }
)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.lists(event_fields, max_size=12),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_well_formed_streams_round_trip(
    fields: list[dict[str, object]], eol: str, chunk: int
) -> None:
    """format_event output, with any line ending and chunk size, decodes back to its fields."""
    written = [format_event(**f) for f in fields]  # type: ignore[arg-type]
    stream = b"".join(written).replace(b"\n", eol.encode())
    decoder = EventDecoder()
    events: list[Event] = []
    for i in range(0, len(stream), chunk):
        events.extend(decoder.feed(stream[i : i + chunk]))
    tail = decoder.flush()
    if eol == "\r" and stream:
        # The final CR can't be told from half a CRLF until the stream ends.
        assert tail.endswith(b"\r")
        events.append(parse_event(tail))
    else:
        assert tail == b""
    assert len(events) == len(fields)
    for ev, f in zip(events, fields, strict=True):
        data = str(f["data"]).replace("\r\n", "\n").replace("\r", "\n")
        assert ev.data == data
        assert ev.event == (f["event"] or "message")
        assert (ev.id, ev.retry) == (f["id"], f["retry"])


# --- writer and decoder -----------------------------------------------------


def test_format_event_writes_multiline_data_as_several_lines() -> None:
    """Each line of data becomes its own data field, and the block ends in a blank line."""
    assert format_event("a\nb\r\nc", event="x", id="7", retry=10) == (
        b"event: x\nid: 7\nretry: 10\ndata: a\ndata: b\ndata: c\n\n"
    )
    assert format_event("") == b"data: \n\n"


@pytest.mark.parametrize(
    "kwargs",
    [{"event": "a\nb"}, {"id": "1\r"}, {"id": "a\x00"}, {"retry": -1}],
    ids=["event-newline", "id-cr", "id-nul", "retry-negative"],
)
def test_format_event_rejects_fields_that_break_framing(kwargs: dict[str, object]) -> None:
    """A field that would inject a line break or be ignored by clients is refused."""
    with pytest.raises(ValueError, match="SSE"):
        format_event("x", **kwargs)  # type: ignore[arg-type]


def test_decoder_keeps_last_event_id_and_retry_across_events() -> None:
    """Per spec the last event id is not reset; data-less blocks still update id and retry."""
    events, decoder = decode_all(b"id: 5\ndata: a\n\ndata: b\n\nid: 9\nretry: 250\n\n")
    assert [(e.data, e.id) for e in events] == [("a", "5"), ("b", None)]
    assert (decoder.last_event_id, decoder.retry) == ("9", 250)


def test_bom_in_a_later_block_is_not_stripped_by_the_decoder() -> None:
    """Only the stream's first BOM is dropped: later blocks parse strictly."""
    events, _ = decode_all(b"data: a\n\n\xef\xbb\xbfdata: b\n\n")
    assert [e.data for e in events] == ["a"]


# --- speed shape ------------------------------------------------------------


class CountingBytes(bytes):
    """bytes that record every find() call, to prove the splitter scans once."""

    calls: list[int]

    def find(self, sub: object, start: int | None = None, *args: int) -> int:  # type: ignore[override]
        self.calls.append(start or 0)
        return super().find(sub, start, *args)  # type: ignore[arg-type]


def test_64k_chunk_with_500_events_is_split_in_a_single_pass() -> None:
    """A 64 KiB read of 500 events costs one find per event, each resuming at the last end."""
    event = b'data: {"choices":[{"delta":{"content":"' + b"x" * 83 + b'"}}]}\n\n'
    payload = event * 500
    assert 60_000 < len(payload) <= 65_536
    chunk = CountingBytes(payload)
    chunk.calls = []
    blocks = EventSplitter().feed(chunk)
    assert len(blocks) == 500 and all(b == event for b in blocks)
    assert len(chunk.calls) == 501
    assert chunk.calls == sorted(chunk.calls)
    assert chunk.calls[1:] == [len(event) * i for i in range(1, 501)]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_huge_event_in_small_reads_takes_linear_time(eol: bytes) -> None:
    """An 8 MiB event fed 1 KiB at a time is neither rescanned nor recopied per read."""
    line = b"data: " + b"y" * 1000 + eol
    payload = line * 8192 + eol
    splitter = EventSplitter()
    began = time.perf_counter()
    out: list[bytes] = []
    for i in range(0, len(payload), 1024):
        out.extend(splitter.feed(payload[i : i + 1024]))
    elapsed = time.perf_counter() - began
    assert out == [payload]
    # Linear work is ~0.1 s; a quadratic rescan or recopy would take many seconds.
    assert elapsed < 3.0, elapsed


@settings(max_examples=400, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=120), st.lists(line_end_bytes, max_size=40).map(b"".join)),
    prefix=st.sampled_from([b"", b"data: ", b"data:"]),
    end=st.sampled_from([b"", b"\n", b"\n\n", b"\n\n\n", b"\r\n\r\n"]),
)
def test_whole_agrees_with_the_splitter(data: bytes, prefix: bytes, end: bytes) -> None:
    """SseFramer.whole answers only for what a fresh splitter returns whole, and counts right."""
    assert_whole_agrees(prefix + data + end)


def assert_whole_agrees(raw: bytes) -> None:
    """When SseFramer.whole counts ``raw``, a fresh splitter returns it as that many
    blocks, all of it, each dispatching."""
    got = SSE_FRAMER.whole(raw)
    if got is None:
        return
    splitter = EventSplitter()
    blocks = splitter.feed(raw)
    assert b"".join(blocks) == raw and splitter.pending == 0
    assert got == len(blocks) and all(SSE_FRAMER.dispatches(b) for b in blocks)


def test_whole_takes_the_usual_events_and_leaves_the_rest() -> None:
    """Data events are whole, one or several (a stream's last read: the last chunk and
    [DONE]); a comment, a block without data first, an empty block, CRLF or a cut event
    need the splitter."""
    assert SSE_FRAMER.whole(b'data: {"x": 1}\n\n') == 1
    assert SSE_FRAMER.whole(b"data: a\ndata: b\n\n") == 1
    assert SSE_FRAMER.whole(b'data: {"x": 1}\n\ndata: [DONE]\n\n') == 2
    assert SSE_FRAMER.whole(b"data: a\n\ndata: b\nid: 2\n\ndata: c\n\n") == 3
    for raw in (
        b": ping\n\n",
        b"data: a\n\n: ping\n\n",
        b"data: a\n\nevent: x\ndata: b\n\n",
        b"data: a\n\n\ndata: b\n\n",
        b"data: a\r\n\r\n",
        b"data: a\n",
        b"data: a\n\ndata: b\n",
    ):
        assert SSE_FRAMER.whole(raw) is None, raw


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from([b"data:", b"data: ", b"event: x\ndata:", b": c\n", b""]),
            st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"")),
        ),
        min_size=1,
        max_size=5,
    ),
    tail=st.sampled_from([b"", b"\n", b"da", b"\n\n"]),
)
def test_whole_agrees_with_the_splitter_on_runs_of_events(
    events: list[tuple[bytes, bytes]], tail: bytes
) -> None:
    """Several events in one read, some not data-first, some cut: whole counts exactly
    what a fresh splitter returns whole (all dispatching), or leaves it to the splitter."""
    assert_whole_agrees(b"".join(field + value + b"\n\n" for field, value in events) + tail)
