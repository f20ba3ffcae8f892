"""Tests for chaosstream.streams.eventstream: the AWS event stream framer, checked against
botocore's own decoder (the reference client's parser)."""

from __future__ import annotations

import struct
from binascii import crc32

from botocore.eventstream import EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from chaosstream.faults.base import Chunk
from chaosstream.proxy.server import Framing, frame_events
from chaosstream.streams.eventstream import (
    EVENTSTREAM_FRAMER,
    MIN_MESSAGE,
    MessageSplitter,
    checks_out,
    encode_message,
    parse_headers,
)

MSG = encode_message({":event-type": "contentBlockDelta", ":message-type": "event"}, b'{"a":1}')


def reference(raw: bytes) -> list[tuple[dict[str, object], bytes]]:
    """What botocore decodes from these bytes."""
    buf = EventStreamBuffer()
    buf.add_data(raw)
    return [(m.headers, m.payload) for m in buf]


def test_encoded_messages_decode_in_botocore() -> None:
    """Our encoder's headers, payload and CRCs are what botocore reads and checks."""
    ((headers, payload),) = reference(MSG)
    assert headers == {":event-type": "contentBlockDelta", ":message-type": "event"}
    assert payload == b'{"a":1}'
    assert checks_out(MSG)


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=97),
)
def test_splitter_is_byte_exact_in_any_chunking(payloads: list[bytes], size: int) -> None:
    """Whole messages come out however the bytes arrive; the unfinished tail stays for flush."""
    body = b"".join(encode_message({":event-type": "e"}, p) for p in payloads)
    cut = body[:-3]
    splitter = MessageSplitter()
    out: list[bytes] = []
    for at in range(0, len(cut), size):
        out += splitter.feed(cut[at : at + size])
    assert b"".join(out) + splitter.flush() == cut
    assert len(out) == len(payloads) - 1
    assert [p for _, p in reference(b"".join(out))] == payloads[:-1]


def test_a_prelude_that_is_no_message_stops_the_framing_not_the_bytes() -> None:
    """A total length under 16 bytes: the rest passes through as it came, nothing lost."""
    junk = struct.pack(">I", 5) + b"garbage!"
    splitter = MessageSplitter()
    out = splitter.feed(MSG + junk) + splitter.feed(MSG)
    assert out == [MSG, junk, MSG] and splitter.flush() == b""
    frame = EVENTSTREAM_FRAMER.parse(junk, False)
    assert frame.comments == ("invalid",) and frame.event == ""


def test_parse_reads_event_exception_and_error_messages() -> None:
    """event: :event-type; exception: :exception-type; error: :error-code and :error-message."""
    ev = EVENTSTREAM_FRAMER.parse(MSG, True)
    assert (ev.event, ev.data, ev.comments, ev.has_data) == (
        "contentBlockDelta",
        '{"a":1}',
        ("event",),
        True,
    )
    exc = encode_message(
        {":message-type": "exception", ":exception-type": "throttlingException"}, b"{}"
    )
    assert EVENTSTREAM_FRAMER.parse(exc, False).event == "throttlingException"
    err = encode_message(
        {":message-type": "error", ":error-code": "Boom", ":error-message": "it broke"}, b""
    )
    parsed = EVENTSTREAM_FRAMER.parse(err, False)
    assert (parsed.event, parsed.data, parsed.comments) == ("Boom", "it broke", ("error",))


def test_every_header_type_parses_and_bad_headers_do_not_raise() -> None:
    """Types 0..9 (botocore's table) read back; a truncated or unknown type gives None."""
    raw = (
        b"\x01a\x00"  # true
        + b"\x01b\x01"  # false
        + b"\x01c\x02\xff"  # byte (signed? botocore: int8)
        + b"\x01d\x03\x00\x02"  # short
        + b"\x01e\x04\x00\x00\x00\x03"  # int
        + b"\x01f\x05"
        + (4).to_bytes(8, "big")  # long
        + b"\x01g\x06\x00\x02hi"  # bytes
        + b"\x01h\x07\x00\x02ok"  # string
        + b"\x01i\x08"
        + (5).to_bytes(8, "big")  # timestamp
        + b"\x01j\x09"
        + bytes(16)  # uuid
    )
    headers = parse_headers(raw, 0, len(raw))
    assert headers is not None
    assert (headers["a"], headers["b"], headers["d"], headers["e"]) == (True, False, 2, 3)
    assert (headers["g"], headers["h"], headers["i"]) == (b"hi", "ok", 5)
    assert parse_headers(b"\x01a\x0c", 0, 3) is None  # unknown type
    assert parse_headers(b"\x01h\x07\x00\x09ok", 0, 7) is None  # value runs past the end
    assert parse_headers(b"\x05ab", 0, 3) is None


def test_a_bad_crc_is_an_invalid_frame() -> None:
    """A flipped payload bit or prelude byte fails the checks, as botocore's do."""
    start, end = EVENTSTREAM_FRAMER.payload(MSG)
    assert MSG[start:end] == b'{"a":1}'
    flipped = MSG[:start] + bytes([MSG[start] ^ 1]) + MSG[start + 1 :]
    assert not checks_out(flipped)
    assert EVENTSTREAM_FRAMER.parse(flipped, False).comments == ("invalid",)
    bad_prelude = MSG[:8] + struct.pack(">I", crc32(MSG[:8]) ^ 1) + MSG[12:]
    assert not checks_out(bad_prelude)
    assert EVENTSTREAM_FRAMER.dispatches(MSG) and not EVENTSTREAM_FRAMER.dispatches(MSG[:10])
    assert EVENTSTREAM_FRAMER.payload(MSG[:-1]) == (0, len(MSG) - 1)
    assert len(encode_message({}, b"")) == MIN_MESSAGE


async def test_frame_events_caps_a_message_that_never_ends() -> None:
    """A prelude claiming 20 MB: framing stops at the proxy's cap, the bytes pass on."""
    huge = struct.pack(">II", 20_000_000, 0)
    huge += struct.pack(">I", crc32(huge)) + b"x" * 5000

    async def chunks():  # type: ignore[no-untyped-def]
        yield Chunk(MSG, 0.0)
        yield Chunk(huge, 0.0)

    state = Framing()
    got = [c.data async for c in frame_events(chunks(), 4096, state, EVENTSTREAM_FRAMER)]
    assert got == [MSG] and state.overflow == huge
