"""Incremental, byte-exact AWS event stream framing (``application/vnd.amazon.eventstream``).

Bedrock's ConverseStream (and every other AWS streaming API) sends binary
messages, each self-delimiting::

    total length (uint32 BE) | headers length (uint32 BE) | prelude CRC32 (of the 8 bytes before)
    headers: name length (uint8), name (UTF-8), value type (uint8), value
    payload (total - headers - 16 bytes)
    message CRC32 (of everything before it)

Spec: "Event stream encoding" in the AWS Transfer Family / S3 Select docs
(https://docs.aws.amazon.com/AmazonS3/latest/API/RESTSelectObjectAppendix.html)
and the reference decoder botocore/eventstream.py (``EventStreamBuffer``,
``EventStreamHeaderParser``: the header value types 0..9 below, and its caps of
128 KiB of headers and 24 MiB of payload).

The splitter only reads the 4-byte total length, so it never decodes what it
does not need: a message is complete once ``total`` bytes are held. A frame
parses to an :class:`~chaosstream.streams.sse.Event` so every format reads
frames alike: ``event`` is the ``:event-type`` (``:exception-type`` for an
exception message, ``:error-code`` for an error message), ``data`` the payload
as text, and ``comments`` holds the one ``:message-type`` (``event``,
``exception`` or ``error``; ``invalid`` for a message that fails its checks).
"""

from __future__ import annotations

import struct
from binascii import crc32

from chaosstream.streams.sse import Event

__all__ = [
    "EVENTSTREAM_FRAMER",
    "EventStreamFramer",
    "MessageSplitter",
    "checks_out",
    "encode_message",
    "parse_headers",
]

PRELUDE = 12  #: total length + headers length + prelude CRC
MIN_MESSAGE = PRELUDE + 4  #: a message with no headers and no payload
# botocore's caps (_MAX_HEADERS_LENGTH, _MAX_PAYLOAD_LENGTH): a prelude past them
# is one the reference client refuses, so the framer stops trusting the stream.
MAX_HEADERS = 128 * 1024
MAX_MESSAGE = MIN_MESSAGE + MAX_HEADERS + 24 * 1024 * 1024

_U32 = struct.Struct(">I")
_PRELUDE = struct.Struct(">II")
# Header value type -> fixed size of its value; None: 2-byte length then bytes.
# (botocore EventStreamHeaderParser._HEADER_TYPE_MAP)
_FIXED: dict[int, int | None] = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 6: None, 7: None, 8: 8, 9: 16}


class MessageSplitter:
    """Incremental: bytes in, complete binary messages out, byte-exact.

    ``b"".join(all feed outputs) + flush() == b"".join(inputs)`` for any input
    and any chunking. A prelude whose total length cannot be a message (under
    16 bytes or past the reference client's caps) means the stream is no event
    stream any more: from there on the splitter passes each piece fed on as a
    frame of its own (it parses to nothing), since no boundary can be trusted.
    """

    __slots__ = ("_broken", "_buf", "_need")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0  # total length of the message being held, 0 until its prelude arrives
        self._broken = False

    @property
    def pending(self) -> int:
        """Bytes held: the start of a message whose end has not arrived."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete messages they finish, in order."""
        if not data:
            return []
        if self._broken:
            return [data]
        buf = self._buf
        out: list[bytes] = []
        if not buf:
            # Fast path: whole messages straight from the read, without copying into the buffer.
            at, n = 0, len(data)
            while n - at >= 4:
                total = _U32.unpack_from(data, at)[0]
                if not MIN_MESSAGE <= total <= MAX_MESSAGE:
                    return self._give_up(out, data[at:])
                if n - at < total:
                    break
                out.append(data[at : at + total])
                at += total
            if at < n:
                buf += data[at:]
                self._need = _U32.unpack_from(buf)[0] if len(buf) >= 4 else 0
            return out
        buf += data
        while True:
            if not self._need:
                if len(buf) < 4:
                    return out
                total = _U32.unpack_from(buf)[0]
                if not MIN_MESSAGE <= total <= MAX_MESSAGE:
                    rest = bytes(buf)
                    buf.clear()
                    return self._give_up(out, rest)
                self._need = total
            if len(buf) < self._need:
                return out
            out.append(bytes(buf[: self._need]))
            del buf[: self._need]
            self._need = 0
            if not buf:
                return out

    def _give_up(self, out: list[bytes], rest: bytes) -> list[bytes]:
        self._broken = True
        self._need = 0
        out.append(rest)
        return out

    def flush(self) -> bytes:
        """Return the unfinished message at end of stream (b"" if none) and reset."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._need = 0
        return rest


def parse_headers(raw: bytes, start: int, end: int) -> dict[str, object] | None:
    """The headers in ``raw[start:end]``, or None when they do not parse. Never raises."""
    headers: dict[str, object] = {}
    at = start
    try:
        while at < end:
            size = raw[at]
            name = raw[at + 1 : at + 1 + size].decode("utf-8")
            at += 1 + size
            kind = raw[at]
            at += 1
            if kind not in _FIXED:
                return None
            fixed = _FIXED[kind]
            value: object
            if fixed is None:
                length = int.from_bytes(raw[at : at + 2], "big")
                chunk = raw[at + 2 : at + 2 + length]
                at += 2 + length
                value = chunk.decode("utf-8") if kind == 7 else chunk
            elif kind in (0, 1):
                value = kind == 0
            elif kind == 9:
                value = raw[at : at + 16]
                at += 16
            else:
                value = int.from_bytes(raw[at : at + fixed], "big", signed=kind != 2)
                at += fixed
            if at > end:
                return None
            headers[name] = value
    except (IndexError, UnicodeDecodeError):
        return None
    return headers


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event stream message with string headers (type 7) and valid CRCs."""
    parts: list[bytes] = []
    for name, value in headers.items():
        key, val = name.encode("utf-8"), value.encode("utf-8")
        parts.append(bytes([len(key)]) + key + b"\x07" + len(val).to_bytes(2, "big") + val)
    head = b"".join(parts)
    prelude = _PRELUDE.pack(MIN_MESSAGE + len(head) + len(payload), len(head))
    prelude += _U32.pack(crc32(prelude))
    body = prelude + head + payload
    return body + _U32.pack(crc32(body))


def checks_out(raw: bytes) -> bool:
    """Are both CRCs right and the lengths consistent (what botocore checks before use)?"""
    if len(raw) < MIN_MESSAGE:
        return False
    total, head = _PRELUDE.unpack_from(raw)
    if total != len(raw) or head > total - MIN_MESSAGE:
        return False
    if crc32(raw[:8]) != _U32.unpack_from(raw, 8)[0]:
        return False
    return bool(crc32(raw[:-4]) == _U32.unpack_from(raw, total - 4)[0])


class EventStreamFramer:
    """The AWS event stream framing as a :class:`chaosstream.streams.format.Framer`.

    A message whose lengths, CRCs or headers are wrong parses to an event of
    message type ``invalid`` with no text: botocore raises on it
    (``ChecksumMismatch``, ``InvalidHeadersLength``...), so a format reads it as
    an in-stream error, never as part of the answer.
    """

    name = "eventstream"
    media_types = frozenset({"application/vnd.amazon.eventstream"})

    def splitter(self) -> MessageSplitter:
        return MessageSplitter()

    def parse(self, raw: bytes, first: bool) -> Event:
        if not checks_out(raw):
            return Event(raw=raw, event="", comments=("invalid",), data_lines=1)
        head = _PRELUDE.unpack_from(raw)[1]
        headers = parse_headers(raw, PRELUDE, PRELUDE + head)
        if headers is None:
            return Event(raw=raw, event="", comments=("invalid",), data_lines=1)
        kind = headers.get(":message-type")
        kind = kind if isinstance(kind, str) else "event"
        name_header = {"exception": ":exception-type", "error": ":error-code"}.get(
            kind, ":event-type"
        )
        name = headers.get(name_header)
        data = raw[PRELUDE + head : -4].decode("utf-8", errors="replace")
        if kind == "error" and not data:
            # An error message carries its text in :error-message, not the payload.
            message = headers.get(":error-message")
            data = message if isinstance(message, str) else ""
        return Event(
            raw=raw,
            event=name if isinstance(name, str) else "",
            data=data,
            comments=(kind,),
            data_lines=1,
        )

    def dispatches(self, raw: bytes) -> bool:
        # Every whole message is an event (there are no keep-alives in this framing).
        return len(raw) >= MIN_MESSAGE

    def payload(self, raw: bytes) -> tuple[int, int]:
        """The payload's span; the whole frame when the prelude does not add up."""
        if len(raw) < MIN_MESSAGE:
            return 0, len(raw)
        total, head = _PRELUDE.unpack_from(raw)
        start, end = PRELUDE + head, total - 4
        if total != len(raw) or start > end:
            return 0, len(raw)
        return start, end


EVENTSTREAM_FRAMER = EventStreamFramer()
"""The one event stream framer (stateless; each body gets its own splitter)."""
