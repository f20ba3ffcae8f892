"""The wire-format interface: what the proxy, faults, recorder and verifier ask of a stream.

A *wire format* (OpenAI Chat Completions, Anthropic Messages, Gemini, ...) is
one module in :mod:`chaosstream.streams` holding one :class:`WireFormat`
subclass; :mod:`chaosstream.streams.registry` lists them explicitly. A format
names its *framing* (``"sse"``, ``"ndjson"``, ...): a :class:`Framer` cuts the
byte stream into raw frames byte-exactly and parses one frame into an
:class:`~chaosstream.streams.sse.Event`, so every format reads frames the same
way whatever the framing (an NDJSON line parses to an event whose ``data`` is
the line).

Who asks what:

- the proxy (``proxy/exchange.py``, ``proxy/server.py``): :meth:`WireFormat.recognises`,
  :meth:`WireFormat.wants_stream`, the framer for ``frame_events``,
  :meth:`WireFormat.error_body` for its own 504;
- the faults (``faults/_events.py``, ``stream_error``, ``corrupt``,
  ``http_error``, ``concurrency_limit``): :meth:`Framer.dispatches`,
  :meth:`Framer.payload`, :meth:`WireFormat.tokens`, :meth:`WireFormat.is_terminal`,
  :meth:`WireFormat.error_frame`, :meth:`WireFormat.error_body`; ``content`` builds
  answers with :meth:`WireFormat.stop_frame`, :meth:`WireFormat.tool_call_frames` and
  :meth:`WireFormat.reasoning_frames` (None where the format has no such thing);
- the recorder (``proxy/record.py``): :func:`summarise`, :meth:`WireFormat.body_text`,
  :meth:`WireFormat.equivalent` (the fingerprint of "equivalent requests");
- the verifier reads those records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from chaosstream.streams.sse import Event

__all__ = [
    "REASONING",
    "REFUSAL",
    "ErrorKind",
    "FrameDecoder",
    "Framer",
    "RequestView",
    "Splitter",
    "StopKind",
    "StreamSummary",
    "ToolCall",
    "WireFormat",
    "dumps",
    "json_or_none",
    "media_type",
    "summarise",
    "words",
]

ErrorKind = Literal["overloaded", "server_error", "rate_limit"]
"""The in-stream error kinds of the ``stream_error`` fault."""

ERROR_KINDS: tuple[ErrorKind, ...] = ("overloaded", "server_error", "rate_limit")

StopKind = Literal["stop", "length", "content_filter", "refusal", "tool_calls"]
"""How an answer ends, in neutral words; each format says it its own way (OpenAI's
``finish_reason``, Anthropic's ``stop_reason``, Gemini's ``finishReason``...)."""

REFUSAL = "I'm sorry, but I can't help with that."
"""The refusal a ``refusal`` stop carries (OpenAI's ``delta.refusal``, or plain text)."""

REASONING = "The user wants a short answer. Let me think about what to say first."
"""The hidden reasoning a reasoning-only answer carries, one word a frame."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call to stream: the format prefixes ``id`` its way (``call_``, ``toolu_``)."""

    id: str
    name: str
    arguments: tuple[str, ...]
    """The arguments' JSON text in the pieces it streams in (need not be valid JSON)."""


# Body fields that say *how* to deliver, not *what* to answer: a streaming
# request and its non-streaming fallback differ only in these (DESIGN.md,
# "equivalent request").
DELIVERY_FIELDS = ("stream", "stream_options")


class Splitter(Protocol):
    """Incremental, byte-exact: ``b"".join(feed outputs) + flush() == b"".join(inputs)``."""

    @property
    def pending(self) -> int:
        """Bytes held: the start of a frame whose end has not arrived (the size cap's gauge)."""
        ...

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete raw frames they finish, in order."""
        ...

    def flush(self) -> bytes:
        """End of stream: the unfinished tail, returned unparsed."""
        ...


class Framer(Protocol):
    """One framing: how bytes become frames. ``sse.SSE_FRAMER`` is one; NDJSON is another."""

    name: str
    media_types: frozenset[str]
    """Response media types (lower case, no parameters) that are streams in this framing."""

    def splitter(self) -> Splitter:
        """A fresh splitter for one response body."""
        ...

    def parse(self, raw: bytes, first: bool) -> Event:
        """One raw frame as an event; ``first`` for the body's first frame (a BOM). Never raises."""
        ...

    def dispatches(self, raw: bytes) -> bool:
        """Does this raw frame count as an event (SSE: has data; not a keep-alive)?"""
        ...

    def payload(self, raw: bytes) -> tuple[int, int]:
        """Start and end of the frame's payload (the JSON a ``malformed_json`` cuts)."""
        ...


class RequestView(Protocol):
    """What a format may read of a request (``faults.RequestInfo`` is one)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names."""
        ...

    @property
    def json(self) -> Any:
        """The parsed JSON body, or None."""
        ...


def json_or_none(data: str | bytes) -> Any:
    """Parse JSON, or None when it is not JSON: a stream may carry anything."""
    try:
        return json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return None
    except RecursionError:
        return None


def dumps(obj: Any) -> str:
    """Compact JSON, as the providers send it."""
    return json.dumps(obj, separators=(",", ":"))


def words(text: str) -> list[str]:
    """``"a b c"`` -> ``["a ", "b ", "c"]``: the pieces a model streams text in."""
    out: list[str] = []
    for word in text.split(" "):
        out.append(word + " ")
    out[-1] = out[-1][:-1]
    return [w for w in out if w]


def media_type(content_type: str | None) -> str:
    """``text/event-stream; charset=utf-8`` -> ``text/event-stream``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class WireFormat:
    """One wire format. Subclasses set :attr:`name` and override what differs.

    The defaults describe an SSE stream of JSON events whose request asks to
    stream with a JSON ``stream: true`` (or ``Accept: text/event-stream``).
    Every method is pure and never raises on odd input: streams carry anything.
    """

    name: ClassVar[str]
    """The format's name in records and reports (``openai``, ``anthropic``, ``gemini``...)."""
    framing: ClassVar[str] = "sse"
    """The framer's name in ``registry.FRAMERS``: ``sse`` or ``ndjson``."""
    media_type: ClassVar[str] = "text/event-stream"
    """Content type of this format's streaming responses (what the mock sends)."""

    # -- recognising an exchange ---------------------------------------------

    def recognises(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        """Is a request to ``path`` (query stripped, any prefix) in this format?"""
        raise NotImplementedError

    def recognises_response(self, content_type: str, headers: Mapping[str, str]) -> bool:
        """Does a response (media type, lower-cased headers) show this format?

        Asked once upstream answered, for formats a path cannot name (an app's
        own chat route speaking the AI SDK UI stream). Default: no.
        """
        return False

    def wants_stream(self, request: RequestView) -> bool:
        """Does the request ask for a stream? Default: JSON ``stream`` or an SSE Accept."""
        if "text/event-stream" in request.headers.get("accept", ""):
            return True
        body = request.json
        return isinstance(body, dict) and body.get("stream") is True

    def equivalent(self, path: str, query: str, body: Any) -> tuple[str, str, Any]:
        """The request with streaming set aside: (path, query, JSON body) to fingerprint.

        ``body`` is a parsed JSON object the method may change. Default: drop
        ``stream`` and ``stream_options``.
        """
        if isinstance(body, dict):
            for name in DELIVERY_FIELDS:
                body.pop(name, None)
        return path, query, body

    # -- frames ---------------------------------------------------------------

    def text(self, frame: Event) -> str | None:
        """The answer text a frame carries, or None (no text, not JSON, terminal...)."""
        raise NotImplementedError

    def tokens(self, frame: Event) -> int:
        """Content pieces the frame carries (what ``after_tokens``/``tokens_per_s`` count)."""
        return 1 if self.text(frame) is not None else 0

    def is_terminal(self, frame: Event) -> bool:
        """True for the frame a complete stream ends with."""
        raise NotImplementedError

    def is_error(self, frame: Event) -> bool:
        """True for an in-stream error the format's clients treat as a failure."""
        raise NotImplementedError

    # -- making frames and bodies --------------------------------------------

    def error_frame(self, kind: ErrorKind, last: Event | None = None) -> bytes:
        """An in-stream error of ``kind`` in the format's own shape, framed, ready to write.

        ``last`` is the frame delivered just before, when there was one: formats
        that number their events (OpenAI Responses' ``sequence_number``) continue
        from it.
        """
        raise NotImplementedError

    def terminal_frame(self) -> bytes:
        """The frame a complete stream ends with, framed (for tests and the mock)."""
        raise NotImplementedError

    def stop_frame(
        self, kind: StopKind, last: Event | None = None, *, text: str = "", tokens: int = 0
    ) -> bytes | None:
        """The frames that end an answer with a ``kind`` stop, terminal frame included.

        ``last`` is the last frame delivered (ids, models, open blocks and sequence
        numbers continue from it), ``text`` the answer text delivered and ``tokens``
        its pieces (formats whose last frame repeats them). None: the format has no
        such stop (the default), and the ``content`` fault leaves the stream alone.
        """
        return None

    def tool_call_frames(
        self, calls: Sequence[ToolCall], last: Event | None = None
    ) -> bytes | None:
        """Frames streaming ``calls`` after ``last`` (no stop); None when not supported."""
        return None

    def reasoning_frames(self, text: str, last: Event | None = None) -> bytes | None:
        """Frames carrying hidden reasoning ``text``, a word a frame, after ``last`` (no
        stop); None when the format has no reasoning stream (the default)."""
        return None

    def error_body(self, status: int, message: str | None = None) -> bytes:
        """The JSON body the format's server sends with HTTP error ``status``."""
        raise NotImplementedError

    def body_text(self, body: str) -> str:
        """The answer text of a non-streaming response body (decoded); "" if none."""
        return ""


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What a recorded stream body amounts to."""

    events: int  #: frames that dispatch an event (have data)
    tokens: int  #: events that carry answer text
    text: str  #: the answer text, all pieces joined
    terminated: bool  #: the format's terminal frame was seen
    errored: bool  #: an in-stream error frame was seen
    last_event_id: str  #: the spec's last event ID string ("" if none)


class FrameDecoder:
    """Bytes in, dispatched events out, through any framer; tracks the last event id."""

    __slots__ = ("_first", "_framer", "_splitter", "last_event_id")

    def __init__(self, framer: Framer) -> None:
        self._framer = framer
        self._splitter = framer.splitter()
        self._first = True
        #: The SSE spec's "last event ID string" ("" until an ``id`` field sets it).
        self.last_event_id = ""

    def feed(self, data: bytes) -> list[Event]:
        """Add bytes; return the events they complete (frames that dispatch)."""
        out: list[Event] = []
        parse = self._framer.parse
        for raw in self._splitter.feed(data):
            ev = parse(raw, self._first)
            self._first = False
            # SSE spec: the last event ID persists across events until an id resets it.
            if ev.id is not None:
                self.last_event_id = ev.id
            if ev.has_data:
                out.append(ev)
        return out

    def flush(self) -> bytes:
        """End of stream: the unterminated tail, which clients discard."""
        return self._splitter.flush()


_SUMMARY_SLICE = 64 * 1024


def summarise(body: bytes, fmt: WireFormat, framer: Framer) -> StreamSummary:
    """Summarise a stream body; an unterminated last frame is discarded, as clients do."""
    decoder = FrameDecoder(framer)
    pieces: list[str] = []
    terminated = errored = False
    count = 0
    text_of = fmt.text
    # Fed in slices so only one slice's events exist at a time: a body of a
    # million tiny events must not become a million objects at once.
    view = memoryview(body)
    for at in range(0, len(body), _SUMMARY_SLICE):
        for ev in decoder.feed(bytes(view[at : at + _SUMMARY_SLICE])):
            count += 1
            text = text_of(ev)
            if text is not None:
                pieces.append(text)
            terminated = terminated or fmt.is_terminal(ev)
            errored = errored or fmt.is_error(ev)
    decoder.flush()
    return StreamSummary(
        events=count,
        tokens=len(pieces),
        text="".join(pieces),
        terminated=terminated,
        errored=errored,
        last_event_id=decoder.last_event_id,
    )
