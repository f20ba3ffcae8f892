"""Incremental, byte-exact NDJSON framing: one frame is one line with its newline.

Ollama streams ``application/x-ndjson``: one JSON value per line. The proxy
sits on the byte stream, so the splitter cuts lines without decoding anything
and only the lines a fault looks at are parsed (:func:`parse_line`).

Spec: NDJSON 1.0 (https://github.com/ndjson/ndjson-spec), "3.2 Parsing":
"each JSON text MUST be followed by a newline character ``\\n``"; a ``\\r``
before it is JSON whitespace and stays in the frame. JSON Lines agrees
(https://jsonlines.org: "the line separator is '\\n'").
"""

from __future__ import annotations

import json
from typing import Any

from chaosstream.streams.sse import Event

__all__ = ["NDJSON_FRAMER", "LineSplitter", "NdjsonFramer", "format_line", "parse_line"]

_LF = b"\n"
# JSON's own whitespace (RFC 8259 section 2): what may pad a line around its value.
_WS = b" \t\r\n"
_BOM = "\ufeff"


class LineSplitter:
    """Incremental: bytes in, complete lines (each with its ``\\n``) out, byte-exact.

    ``b"".join(all feed outputs) + flush() == b"".join(inputs)`` for any input
    and any chunking. An empty line (``b"\\n"``) is a frame of its own, as the
    spec's parser sees it ("MAY silently ignore empty lines"); the faults leave
    it alone because it carries no value.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        # Only the unfinished last line is ever held, and it holds no LF, so a
        # search never needs to rescan it: only the new bytes are searched.
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held: the start of a line whose newline has not arrived."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete lines they finish, in order."""
        first = data.find(_LF)
        if first < 0:
            self._buf += data
            return []
        lines: list[bytes] = []
        if self._buf:
            self._buf += data[: first + 1]
            lines.append(bytes(self._buf))
            self._buf.clear()
        else:
            lines.append(data[: first + 1])
        start = first + 1
        n = len(data)
        while start < n:
            end = data.find(_LF, start)
            if end < 0:
                self._buf += data[start:]
                break
            lines.append(data[start : end + 1])
            start = end + 1
        return lines

    def flush(self) -> bytes:
        """Return the unterminated leftover at end of stream (b"" if none) and reset."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def parse_line(raw: bytes) -> Any:
    """The JSON value one line holds, or None (blank, not JSON, not UTF-8, too deep).

    Never raises: a stream may carry anything, and a fault must not crash on it.
    """
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def format_line(value: Any) -> bytes:
    """One compact JSON line ending in ``\\n``, as Ollama writes them (UTF-8, not escaped).

    ``json.dumps`` escapes control characters, so a value can never break the framing.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + _LF


class NdjsonFramer:
    """The NDJSON framing as a :class:`chaosstream.streams.format.Framer`: one line a frame.

    A line parses to an :class:`Event` whose ``data`` is the line's text without
    its line ending, so every format reads SSE and NDJSON frames alike; a blank
    line dispatches nothing (``has_data`` is False), as the spec lets parsers
    ignore it.
    """

    name = "ndjson"
    # x-ndjson is what Ollama sends; the others name the same framing.
    media_types = frozenset(
        {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines"}
    )

    def splitter(self) -> LineSplitter:
        return LineSplitter()

    def parse(self, raw: bytes, first: bool) -> Event:
        text = raw.decode("utf-8", errors="replace")
        if first and text.startswith(_BOM):
            text = text[1:]
        data = text.rstrip("\r\n")
        if not data.strip():
            return Event(raw=raw)
        return Event(raw=raw, data=data, data_lines=1)

    def dispatches(self, raw: bytes) -> bool:
        return bool(raw.strip(_WS))

    def payload(self, raw: bytes) -> tuple[int, int]:
        """The JSON value's span: the line less the whitespace around it."""
        start, end = 0, len(raw)
        while start < end and raw[start] in _WS:
            start += 1
        while end > start and raw[end - 1] in _WS:
            end -= 1
        return start, end


NDJSON_FRAMER = NdjsonFramer()
"""The one NDJSON framer (stateless; each body gets its own splitter)."""
