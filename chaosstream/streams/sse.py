"""Incremental Server-Sent Events framing, parsing and writing.

The proxy sits on the byte stream, so framing is byte-level and byte-exact:
:class:`EventSplitter` cuts a stream into raw event blocks without decoding
anything, and only the blocks a fault looks at are parsed (:func:`parse_event`).

Spec: WHATWG HTML Living Standard, "9.2 Server-sent events",
https://html.spec.whatwg.org/multipage/server-sent-events.html
("9.2.5 Parsing an event stream" for lines, "9.2.6 Interpreting an event
stream" for fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SSE_FRAMER",
    "Event",
    "EventDecoder",
    "EventSplitter",
    "SseFramer",
    "format_event",
    "parse_event",
]

_LF = 0x0A
_CR = 0x0D
_BOM = "\ufeff"

# 9.2.5: "end-of-line = ( cr lf / cr / lf )" and an event is dispatched at an
# empty line. So a block ends at a line terminator that directly follows
# another one. `\r(?!\n)` keeps the two halves of one CRLF from being read as
# two terminators (an empty line) when the regex backtracks.
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_LINE_END = re.compile(r"\r\n|\r|\n")


class EventSplitter:
    """Incremental: bytes in, complete raw event blocks out, byte-exact.

    Every block returned by :meth:`feed` includes its terminating blank line,
    and ``b"".join(all feed outputs) + flush() == b"".join(inputs)`` for any
    input and any chunking. A blank line at the start of a block (a keep-alive
    newline) is a block of its own: the spec reads it as an empty event that
    dispatches nothing, and keeping it separate keeps the other blocks clean.

    A block whose blank line ends in a bare CR at the very end of the data is
    held until the next byte shows whether that CR is half of a CRLF; only
    CR-only streams (no AI provider sends them) pay that wait.
    """

    __slots__ = ("_buf", "_cr", "_scan")

    def __init__(self) -> None:
        self._buf = bytearray()
        # Where the next boundary search starts, relative to the buffer: never
        # rescan bytes already searched, so a large event fed in small pieces
        # costs linear time.
        self._scan = 0
        # Sticky: once a CR shows up the stream may use CR or CRLF endings and
        # needs the general search; LF-only streams keep the fast path.
        self._cr = False

    @property
    def pending(self) -> int:
        """Bytes held: the start of an event whose blank line has not arrived."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete raw blocks they finish, in order."""
        if not data:
            return []
        if not self._cr and b"\r" in data:
            self._cr = True
        held = bool(self._buf)
        if held:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            # Common case on the hot path: nothing held, so search the caller's
            # bytes directly and copy only the unfinished tail.
            buf = data
        if self._cr:
            start, scan, blocks = _split_general(buf, self._scan)
        else:
            start, scan, blocks = _split_lf(buf, self._scan)
        if held:
            del self._buf[:start]  # bytearray drops a prefix without a full copy
        elif start < len(data):
            self._buf += memoryview(data)[start:]
        self._scan = scan - start
        return blocks

    def flush(self) -> bytes:
        """Return the unterminated leftover at end of stream (b"" if none) and reset."""
        rest = bytes(self._buf)
        self._buf = bytearray()
        self._scan = 0
        self._cr = False
        return rest


def _split_lf(buf: bytes | bytearray, scan: int) -> tuple[int, int, list[bytes]]:
    """Split an LF-only buffer: one `find` per block, one copy per block."""
    blocks: list[bytes] = []
    start = 0
    n = len(buf)
    with memoryview(buf) as view:
        while True:
            if scan == start and start < n and buf[start] == _LF:
                end = start + 1  # a blank line at the start of a block
            else:
                found = buf.find(b"\n\n", scan)
                if found < 0:
                    # "\n\n" may straddle the next read: resume one byte back.
                    return start, max(start, n - 1), blocks
                end = found + 2
            blocks.append(bytes(view[start:end]))
            start = scan = end


def _split_general(buf: bytes | bytearray, scan: int) -> tuple[int, int, list[bytes]]:
    """Split a buffer that may use CR, LF or CRLF endings, mixed."""
    blocks: list[bytes] = []
    start = 0
    n = len(buf)
    with memoryview(buf) as view:
        while True:
            if scan == start and start < n and buf[start] in (_LF, _CR):
                # A blank line at the start of a block.
                if buf[start] == _LF:
                    end = start + 1
                elif start + 1 == n:
                    return start, start, blocks  # lone CR: CRLF or CR? wait and see
                else:
                    end = start + 2 if buf[start + 1] == _LF else start + 1
            else:
                match = _BLANK_LINE.search(buf, scan)
                if match is None:
                    # The longest boundary is 4 bytes (CRLF CRLF), so 3 bytes
                    # back is enough, but never resume between a CR and its LF.
                    resume = max(start, n - 3)
                    if resume > start and buf[resume] == _LF and buf[resume - 1] == _CR:
                        resume -= 1
                    return start, resume, blocks
                end = match.end()
                if end == n and buf[end - 1] == _CR:
                    return start, match.start(), blocks  # CR at the edge: wait for the next byte
            blocks.append(bytes(view[start:end]))
            start = scan = end


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed event block (9.2.6), keeping the exact bytes it came from."""

    raw: bytes
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: tuple[str, ...] = ()
    data_lines: int = 0

    @property
    def has_data(self) -> bool:
        """True when the block dispatches an event: it had at least one data field.

        Spec 9.2.6: "If the data buffer is an empty string, ... return" - so a
        block of only comments, ``id`` or ``retry`` fires nothing, while a bare
        ``data:`` line fires an event with empty data.
        """
        return self.data_lines > 0 or self.data != ""


def parse_event(raw: bytes, *, strip_bom: bool = True) -> Event:
    """Parse one raw block into an :class:`Event` per spec 9.2.6.

    Decodes UTF-8 with replacement (9.2.5: "UTF-8 decode"). One leading BOM is
    dropped when ``strip_bom`` (the splitter leaves a stream's BOM in the first
    block; pass ``strip_bom=False`` for later blocks to be strictly spec-exact).
    Never raises.
    """
    text = raw.decode("utf-8", errors="replace")
    if strip_bom and text.startswith(_BOM):
        text = text[1:]
    lines = _LINE_END.split(text) if "\r" in text else text.split("\n")
    event = ""
    data: list[str] = []
    last_id: str | None = None
    retry: int | None = None
    comments: list[str] = []
    for line in lines:
        if not line:
            continue
        if line[0] == ":":
            comments.append(line[2:] if line[1:2] == " " else line[1:])
            continue
        name, colon, value = line.partition(":")
        # "If value starts with a U+0020 SPACE character, remove it."
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            # "If the field value does not contain U+0000 NULL, then set the
            # last event ID buffer to the field value. Otherwise, ignore the field."
            if "\0" not in value:
                last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            # "If the field value consists of only ASCII digits ..." else ignored.
            retry = int(value)
        # Any other field name: "The field is ignored."
    return Event(
        raw=raw,
        event=event or "message",
        data="\n".join(data),
        id=last_id,
        retry=retry,
        comments=tuple(comments),
        data_lines=len(data),
    )


def format_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Write one event block ending in ``\\n\\n``; multi-line data becomes several data lines.

    Raises ValueError for an ``event`` or ``id`` that would break framing
    (a line break) or be ignored by clients (an ``id`` with NUL).
    """
    parts: list[str] = []
    if event is not None:
        _check_single_line("event", event)
        parts.append(f"event: {event}\n")
    if id is not None:
        _check_single_line("id", id)
        if "\0" in id:
            raise ValueError("SSE id must not contain NUL: clients ignore such an id")
        parts.append(f"id: {id}\n")
    if retry is not None:
        if retry < 0:
            raise ValueError(f"SSE retry must be >= 0, got {retry}")
        parts.append(f"retry: {retry}\n")
    for line in _LINE_END.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def _check_single_line(field: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {field} must be a single line, got {value!r}")


class EventDecoder:
    """Bytes in, dispatched :class:`Event` objects out, with the spec's stream state.

    Returns only blocks that dispatch an event (``has_data``), as a browser's
    EventSource would; blocks without data still update :attr:`last_event_id`
    and :attr:`retry`, as the spec processes their fields all the same.
    """

    __slots__ = ("_first", "_splitter", "last_event_id", "retry")

    def __init__(self) -> None:
        self._splitter = EventSplitter()
        self._first = True
        #: The spec's "last event ID string": "" until an id field sets it; an
        #: empty ``id`` field resets it to "" (then no Last-Event-ID is sent).
        self.last_event_id = ""
        #: The reconnection time from the last valid ``retry`` field, in ms.
        self.retry: int | None = None

    def feed(self, data: bytes) -> list[Event]:
        """Add bytes; return the events they complete."""
        out: list[Event] = []
        for raw in self._splitter.feed(data):
            ev = parse_event(raw, strip_bom=self._first)
            self._first = False
            # NOTE: as per the SSE spec, do not reset last_event_id between events.
            if ev.id is not None:
                self.last_event_id = ev.id
            if ev.retry is not None:
                self.retry = ev.retry
            if ev.has_data:
                out.append(ev)
        return out

    def flush(self) -> bytes:
        """End of stream: return the unterminated tail, which the spec discards unparsed."""
        return self._splitter.flush()


class SseFramer:
    """The SSE framing as a :class:`chaosstream.streams.format.Framer`: one event block a frame."""

    name = "sse"
    media_types = frozenset({"text/event-stream"})

    def splitter(self) -> EventSplitter:
        return EventSplitter()

    def parse(self, raw: bytes, first: bool) -> Event:
        return parse_event(raw, strip_bom=first)

    def dispatches(self, raw: bytes) -> bool:
        if raw.startswith(b"data:"):
            return True  # the usual shape needs no parse: a data field dispatches
        return parse_event(raw).has_data

    def whole(self, data: bytes) -> int | None:
        """How many events ``data`` is when it is whole LF-framed events that each start
        with a data field (what a splitter holding nothing would return, all of them
        dispatching); None when it takes a splitter to tell. A scan or two in C instead
        of a split: the proxy passes most reads of a stream this way while a fault is far
        from its trigger (a stream's last read often carries two: the last chunk and
        ``[DONE]``)."""
        # A CR would be a line end of its own (CR CR is a blank line too), so none may be
        # in. Ints, not bytes, where one byte is looked for: memchr, 15-50 ns a scan where
        # a 2-byte find costs 190 (the usual event is one line, its first LF the last but one).
        if not data.startswith(b"data:") or 13 in data:
            return None
        end = len(data) - 2
        lf = data.find(10)
        if lf == end and data[-1] == 10:
            return 1
        if not (end > lf >= 0) or not data.endswith(b"\n\n") or b"\n\n\n" in data:
            return None
        # Blocks end at each blank line (no LF runs longer than two: no empty block, no
        # blank line starting one); each must start with a data field.
        blocks = data.count(b"\n\n")
        if blocks > 1 and data.count(b"\n\ndata:") != blocks - 1:
            return None
        return blocks

    def payload(self, raw: bytes) -> tuple[int, int]:
        """Start and end of the first ``data:`` value (the whole block if none)."""
        at = raw.find(b"data:")
        if at < 0 or (at > 0 and raw[at - 1] not in b"\r\n"):
            return 0, len(raw)
        start = at + 5 + (raw[at + 5 : at + 6] == b" ")
        end = start
        while end < len(raw) and raw[end] not in b"\r\n":
            end += 1
        return start, end


SSE_FRAMER = SseFramer()
"""The one SSE framer (stateless; each body gets its own splitter)."""
