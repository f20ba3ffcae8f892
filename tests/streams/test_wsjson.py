"""The WebSocket JSON message framing: a message is a frame; recorded bodies are JSON lines."""

from __future__ import annotations

import json

from chaosstream.streams.wsjson import MEDIA_TYPE, WSJSON_FRAMER, record_line


def test_a_message_parses_whole_and_dispatches() -> None:
    """A live message (no line feed) is one event whose data is the message."""
    ev = WSJSON_FRAMER.parse(b'{"type":"x"}', True)
    assert ev.has_data and json.loads(ev.data) == {"type": "x"}
    assert WSJSON_FRAMER.dispatches(b'{"type":"x"}')
    assert WSJSON_FRAMER.payload(b' {"a":1} ') == (1, 8)


def test_a_pretty_printed_message_records_as_one_line_with_its_meaning() -> None:
    """Line feeds between JSON tokens become spaces: one line, the same JSON value."""
    message = json.dumps({"type": "x", "text": "a\nb"}, indent=2).encode()
    line = record_line(message)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    frames = WSJSON_FRAMER.splitter().feed(line + record_line(b"{}"))
    assert len(frames) == 2
    assert json.loads(WSJSON_FRAMER.parse(frames[0], True).data) == {"type": "x", "text": "a\nb"}


def test_its_media_type_names_it() -> None:
    """Recorded WebSocket exchanges carry the framing's own media type."""
    assert WSJSON_FRAMER.name == "ws-json" and MEDIA_TYPE in WSJSON_FRAMER.media_types
