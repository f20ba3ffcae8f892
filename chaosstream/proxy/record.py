"""The recorder: one record per exchange, with timings and the faults that fired.

The proxy's hot path only appends the bytes it read (and, when faults act on
the stream, the bytes it sent) to one capped :class:`Body` per direction, which
packs them in zlib blocks as they come; the client's body holds nothing while
it repeats upstream's bytes (a fault that only times the stream). Everything
derived from them -- the full answer text, events delivered, the last event id,
tokens/s -- is computed lazily, once, when someone asks after the exchange
ended: the seed article's "streaming collector", without a parse per chunk.

Memory is bounded as a whole, not only by a count of exchanges:

- each body keeps at most ``body_limit`` bytes (:data:`BODY_LIMIT`, 8 MiB);
  past it the exchange is marked ``truncated``;
- the recorder keeps what finished exchanges hold within ``budget_bytes``
  (:data:`RECORD_BUDGET`, 64 MiB). Older exchanges are *compacted* first:
  their bodies are zlib-packed (level 1: about 10 ms per 8 MiB, SSE shrinks
  ~100x; nothing is lost, a later question unpacks them) and a request body
  over :data:`COMPACT_REQUEST_LIMIT` is cut once its fingerprint is taken
  (``truncated``). Packing, not parsing: summarising 8 MiB of tiny events
  takes seconds, which must not happen on the event loop for every exchange.
  If compacted records still exceed the budget, the oldest are forgotten.
  The newest exchange always stays whole.

Delivery times are kept only when asked (``Recorder(stamps=True)``, as the
scenario runner does for the HTML report's timelines): each body append then
also stores ``(time, bytes kept so far)`` in one ``array('d')``, at most
:data:`STAMP_LIMIT` pairs (16 bytes each, counted in the budget). A reader maps
an event's end offset to the first stamp covering it. The ``proxy`` command
records none: its hot path pays one ``is None`` test per chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import queue
import threading
import time
import zlib
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import structlog

from chaosstream.faults.base import FaultEvent
from chaosstream.proxy.encoding import decode_body
from chaosstream.streams.providers import Provider, StreamSummary, response_text, stream_summary
from chaosstream.streams.registry import get as get_format
from chaosstream.streams.registry import is_stream_body

__all__ = [
    "BODY_LIMIT",
    "COMPACT_REQUEST_LIMIT",
    "PACK_BLOCK",
    "RECORD_BUDGET",
    "STAMP_LIMIT",
    "Body",
    "Exchange",
    "JsonlSink",
    "Outcome",
    "Recorder",
    "fingerprint",
]

#: Bytes kept of one body (upstream's, or what the client was sent).
BODY_LIMIT = 8 * 1024 * 1024
#: Bytes of bodies and texts the recorder retains across all finished exchanges.
RECORD_BUDGET = 64 * 1024 * 1024
#: Bytes of its request body a compacted exchange keeps (the fingerprint is taken first).
COMPACT_REQUEST_LIMIT = 64 * 1024
#: (time, bytes) pairs a stamped body keeps: one per append, the rest go unstamped.
STAMP_LIMIT = 20_000
#: Raw bytes a body holds before it packs them into one zlib block. 4 KiB packs chat SSE
#: about 17x at 0.4 us an event (16 KiB: 40x at 0.3 us), and is what keeps an open
#: stream within the minimal aiohttp proxy's memory: with 16 KiB a paced 200-event
#: stream cost 40.8 KiB of proxy RSS, with 4 KiB 27.2 (the minimal proxy: 27.1; the
#: growing raw tails fragment the heap as much as they weigh), issue 17.
PACK_BLOCK = 4 * 1024

log = structlog.get_logger("chaosstream.proxy.record")

Outcome = Literal["pending", "complete", "fault", "client_gone", "upstream_error", "refused"]


def fingerprint(method: str, path: str, query: str, body: bytes, provider: str = "sse") -> str:
    """The identity of a request once the stream flag is set aside.

    Two requests with the same fingerprint are "equivalent": same method,
    endpoint and query, and the same JSON body apart from what the wire format
    ``provider`` says only chooses delivery (``stream`` and ``stream_options``;
    Gemini's ``:streamGenerateContent`` and ``alt=sse``), key order and
    spacing ignored. A non-JSON body counts byte for byte.
    """
    material: Any = None
    parsed: Any = None
    if body[:1] == b"{":
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: a body nested too deep
            parsed = None
    path, query, parsed = get_format(provider).equivalent(path, query, parsed)
    if isinstance(parsed, dict):
        material = json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    if material is None:
        material = body.decode("utf-8", errors="replace")
    digest = hashlib.sha256(f"{method} {path}?{query}\n{material}".encode()).hexdigest()
    return digest[:16]


class Body:
    """Bytes appended up to a cap: a raw tail, packed in zlib blocks as it grows.

    A body of a long stream would otherwise be most of what an open stream costs
    (38 KB of a 200-event chat stream against aiohttp's ~27 KiB for the two
    connections, issue 17). Every :data:`PACK_BLOCK` raw bytes are compressed at
    level 1 into one block (SSE shrinks about 17x), so a body
    holds its blocks plus at most one block's worth of raw tail. Blocks are
    independent zlib streams of any length: packing never needs to unpack, and
    an append after :meth:`pack` just starts a new tail.

    A body made ``like`` another (:meth:`Recorder.body`: the client's copy of a
    faulted stream) holds no bytes while what is appended to it equals the other
    body's bytes at the same offset -- a fault that only times the stream
    (latency, throttle) changes none -- and becomes a body of its own, starting
    with that shared prefix, at the first byte that differs.
    """

    __slots__ = (
        "_blocks",
        "_buf",
        "_hold",
        "_like",
        "_packed",
        "_same",
        "_size",
        "limit",
        "stamps",
        "truncated",
    )

    def __init__(self, limit: int = BODY_LIMIT, stamps: bool = False) -> None:
        self._buf = bytearray()
        # zlib streams, oldest first; together with _buf, all the bytes kept.
        self._blocks: list[bytes] = []
        self._packed = 0  # bytes held by _blocks
        self._size = 0  # raw bytes kept, packed or not
        # A body like another: the other, and how many of its bytes this one repeats.
        self._like: Body | None = None
        self._same = 0
        # While a body made like this one follows it: the offset from which it has not
        # compared this one's bytes yet; they stay raw. An int, not the body: no cycle.
        self._hold: int | None = None
        self.limit = limit
        #: True once bytes past ``limit`` were left out.
        self.truncated = False
        #: With ``stamps``: ``time.monotonic()`` (the proxy's SystemClock) and the bytes
        #: kept after it, flat, per append; at most :data:`STAMP_LIMIT` pairs.
        self.stamps: array[float] | None = array("d") if stamps else None

    def append(self, data: bytes) -> None:
        """Keep ``data``, or as much of it as the cap leaves room for."""
        if self._like is None or not self._follow(data):
            self._keep(data)
        stamps = self.stamps
        if stamps is not None and len(stamps) < 2 * STAMP_LIMIT:
            stamps.append(time.monotonic())
            stamps.append(self._size if self._like is None else self._same)

    def _keep(self, data: bytes) -> None:
        room = self.limit - self._size
        if len(data) > room:
            self.truncated = True
            if room <= 0:
                return
            data = data[:room]
        self._buf += data
        self._size += len(data)
        if len(self._buf) >= PACK_BLOCK:
            self._pack_tail()

    def _pack_tail(self) -> None:
        buf = self._buf
        n = len(buf)
        if self._hold is not None:
            # Bytes the follower has not compared yet stay raw, so its check is a memcmp.
            n = min(n, self._hold - (self._size - len(buf)))
            if n < PACK_BLOCK:
                return
        with memoryview(buf) as raw:
            block = zlib.compress(raw[:n], 1)
        self._blocks.append(block)
        self._packed += len(block)
        self._buf = buf[n:] if n < len(buf) else bytearray()

    def _follow(self, data: bytes) -> bool:
        """True when ``data`` repeats the bytes of the body this one is like; else this
        body takes its own copy of the prefix they shared and stops following."""
        like = self._like
        assert like is not None
        start = self._same
        end = start + len(data)
        base = like._size - len(like._buf)  # where the other's raw tail starts
        fits = end <= self.limit and base <= start and end <= like._size
        if fits and like._buf.startswith(data, start - base):
            self._same = like._hold = end
            if len(like._buf) >= PACK_BLOCK:
                like._pack_tail()  # what it held raw for this check
            return True
        self._part()
        return False

    def _part(self) -> None:
        like = self._like
        assert like is not None
        self._like = like._hold = None
        same, self._same = self._same, 0
        if same:
            self._keep(bytes(like)[:same])

    def pack(self) -> None:
        """Pack the raw tail too (the recorder's budget: see :meth:`Exchange.compact`)."""
        # A follower reads packed bytes all the same (it is done: the exchange ended);
        # one appending again would compare, fail and take its own copy: correct, slower.
        self._hold = None
        if self._buf:
            self._pack_tail()

    def copy(self, like: Body | None = None) -> Body:
        """A body with the same bytes, stamps and flags that shares no buffer with this one.

        A body that repeats another's bytes repeats ``like`` (the other's copy) in the
        copy; without it, the copy holds its own bytes.
        """
        other = Body(self.limit)
        if self._like is not None and like is not None:
            other._like, other._same = like, self._same
        elif self._like is not None:
            other._buf = bytearray(bytes(self))
            other._size = self._same
        else:
            other._buf = bytearray(self._buf)
            other._blocks = list(self._blocks)  # bytes: immutable, shared safely
            other._packed, other._size = self._packed, self._size
        other.truncated = self.truncated
        other.stamps = None if self.stamps is None else array("d", self.stamps)
        return other

    @property
    def held(self) -> int:
        """Bytes of memory this body holds (its packed blocks, raw tail and stamps)."""
        stamped = 8 * len(self.stamps) if self.stamps is not None else 0
        return stamped + self._packed + len(self._buf)

    def times(self) -> list[tuple[float, int]]:
        """``(monotonic time, bytes kept by then)`` per stamped append; [] when not stamped."""
        s = self.stamps
        return [] if s is None else [(s[i], int(s[i + 1])) for i in range(0, len(s) - 1, 2)]

    def tail(self, n: int) -> bytes:
        """The last ``n`` bytes kept (all, when fewer), unpacking only the blocks they span."""
        if n <= 0:
            return b""
        if self._like is not None:
            return bytes(self)[-n:]
        parts: list[bytes | bytearray] = [self._buf]
        got = len(self._buf)
        for block in reversed(self._blocks):
            if got >= n:
                break
            parts.append(zlib.decompress(block))
            got += len(parts[-1])
        return b"".join(reversed(parts))[-n:]

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes kept (all, when fewer), unpacking only the blocks they span."""
        if self._like is not None:
            return bytes(self)[: max(0, n)]
        parts: list[bytes | bytearray] = []
        got = 0
        for block in self._blocks:
            if got >= n:
                break
            parts.append(zlib.decompress(block))
            got += len(parts[-1])
        if got < n:
            parts.append(self._buf)
        return b"".join(parts)[: max(0, n)]

    def __len__(self) -> int:
        return self.held

    def __bytes__(self) -> bytes:
        if self._like is not None:
            whole = bytes(self._like)
            return whole if len(whole) == self._same else whole[: self._same]
        if not self._blocks:
            return bytes(self._buf)
        return b"".join([*map(zlib.decompress, self._blocks), self._buf])


@dataclass(slots=True)
class Exchange:
    """What happened on one request through the proxy.

    Times are seconds on the proxy's monotonic clock; ``wall`` is the epoch time
    the request arrived.
    """

    id: int
    method: str
    path: str
    provider: Provider
    stream: bool
    started: float
    wall: float = field(default_factory=time.time)
    query: str = ""
    request_body: bytes = b""
    last_event_id: str | None = None
    traceparent: str | None = None
    """The client's W3C ``traceparent`` header, as sent (forwarded upstream unchanged);
    OpenTelemetry makes the exchange's span its child."""
    tracestate: str | None = None
    """The client's W3C ``tracestate`` header, as sent."""
    scope: str | None = None
    """The scope the request named (``/~/<scope>/`` or X-Chaosstream-Scope); None when unscoped."""
    status: int | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    """The body's Content-Encoding as recorded (decoded when its text is read); None when
    recorded as identity."""
    retry_after: str | None = None
    """The Retry-After header the client was sent, as sent."""
    retry_after_ms: str | None = None
    """The ``retry-after-ms`` header the client was sent (Stainless SDKs read it first)."""
    should_retry: str | None = None
    """The ``x-should-retry`` header the client was sent."""
    first_byte: float | None = None
    ended: float | None = None
    bytes_out: int = 0
    outcome: Outcome = "pending"
    error: str = ""
    faults: list[FaultEvent] = field(default_factory=list)
    upstream_chunks: Body = field(default_factory=Body, repr=False)
    """What upstream sent, as read (for reconstructing the full answer), capped."""
    client_chunks: Body | None = field(default=None, repr=False)
    """What the client was sent when faults changed the stream; None means the same as upstream."""
    compacted: bool = False
    """The bodies were packed for the recorder's budget (see :meth:`compact`)."""
    request_cut: bool = False
    """A compacted request body was cut to :data:`COMPACT_REQUEST_LIMIT` bytes."""
    upstream_closed_early: bool = False
    """The proxy closed its upstream request before upstream's end (the client left, or a
    fault cut the stream): the evidence ``cancels_upstream`` judges on."""
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def truncated(self) -> bool:
        """Some of this exchange's recorded bytes or text were left out (caps, budget)."""
        client = self.client_chunks
        return (
            self.upstream_chunks.truncated
            or (client is not None and client.truncated)
            or self.request_cut
        )

    def retained_bytes(self) -> int:
        """About how many bytes this record holds (bodies, request, cached texts)."""
        client = self.client_chunks
        texts = sum(len(v) for v in self._cache.values() if isinstance(v, str))
        return (
            len(self.upstream_chunks)
            + (len(client) if client is not None else 0)
            + len(self.request_body)
            + texts
        )

    def compact(self, request_limit: int = COMPACT_REQUEST_LIMIT) -> None:
        """Pack the bodies; cut a request body over ``request_limit`` after fingerprinting it.

        Every derived fact keeps its value (bodies are unpacked when asked),
        except that a cut request body reads short (:attr:`truncated` says so).
        """
        if self.compacted:
            return
        if len(self.request_body) > request_limit:
            _ = self.fingerprint
            self.request_body = self.request_body[:request_limit]
            self.request_cut = True
        self.upstream_chunks.pack()
        if self.client_chunks is not None:
            self.client_chunks.pack()
        # Texts and summaries come back from the packed bodies when asked.
        fp = self._cache.get("fp")
        self._cache.clear()
        if fp is not None:
            self._cache["fp"] = fp
        self.compacted = True

    def snapshot(self) -> Exchange:
        """A copy owning its bodies, fault list and cache, for another thread to read.

        A finished exchange still changes on the event loop (the recorder compacts
        it, a reader caches its texts); a worker (the ``--record`` writer, the
        cassette writer) reads the copy instead, so neither side sees the other's
        half-done change. Copying is a memcpy of the kept bytes; parsing them is
        the worker's job.
        """
        client = self.client_chunks
        upstream = self.upstream_chunks.copy()
        return dataclasses.replace(
            self,
            upstream_chunks=upstream,
            client_chunks=None if client is None else client.copy(like=upstream),
            faults=list(self.faults),
            _cache=dict(self._cache),
        )

    @property
    def ttft_ms(self) -> float | None:
        """Milliseconds from the request to the first body byte sent to the client."""
        if self.first_byte is None:
            return None
        return (self.first_byte - self.started) * 1000.0

    @property
    def duration_ms(self) -> float | None:
        """Milliseconds from the request to the end of the response (TTLT)."""
        if self.ended is None:
            return None
        return (self.ended - self.started) * 1000.0

    @property
    def fingerprint(self) -> str:
        """See :func:`fingerprint`; equal for equivalent requests."""
        if "fp" not in self._cache:
            self._cache["fp"] = fingerprint(
                self.method, self.path, self.query, self.request_body, self.provider
            )
        return str(self._cache["fp"])

    @property
    def is_event_stream(self) -> bool:
        """True when the response is a stream in the format's framing (SSE, NDJSON)."""
        return is_stream_body(self.provider, self.content_type)

    def _body(self, client: bool) -> bytes:
        chunks = self.client_chunks if client and self.client_chunks is not None else None
        body = bytes(chunks if chunks is not None else self.upstream_chunks)
        if self.content_encoding is not None:  # a clean exchange keeps upstream's bytes as sent
            return decode_body(body, self.content_encoding)
        return body

    def _summary(self, client: bool) -> StreamSummary | None:
        """Counts and flags; its ``text`` is "" on a compacted exchange (ask :meth:`_text`)."""
        if not self.is_event_stream:
            return None
        key = "client_summary" if client else "upstream_summary"
        if key not in self._cache:
            summary = stream_summary(self._body(client), self.provider)
            # A compacted record keeps its counts cached, never its text again:
            # the budget accounted for the packed bodies only.
            self._cache[key] = dataclasses.replace(summary, text="") if self.compacted else summary
        cached: StreamSummary = self._cache[key]
        return cached

    def _text(self, client: bool) -> str:
        key = "client_text" if client else "upstream_text"
        if key in self._cache:
            return str(self._cache[key])
        if self.is_event_stream:
            summary = (
                stream_summary(self._body(client), self.provider)
                if self.compacted
                else self._summary(client)
            )
            text = summary.text if summary is not None else ""
        else:
            text = response_text(self._body(client), self.content_type, self.provider)
        if not self.compacted:
            self._cache[key] = text
        return text

    @property
    def response_text(self) -> str:
        """The answer text upstream produced on this exchange (all of what the proxy read)."""
        return self._text(client=False)

    @property
    def client_text(self) -> str:
        """The answer text the client was actually sent (after faults)."""
        return self._text(client=True)

    @property
    def events(self) -> int:
        """Data events delivered to the client (0 for a non-streaming body)."""
        summary = self._summary(client=True)
        return summary.events if summary is not None else 0

    @property
    def tokens(self) -> int:
        """Events carrying answer text that were delivered to the client."""
        summary = self._summary(client=True)
        return summary.tokens if summary is not None else 0

    @property
    def delivered_event_id(self) -> str:
        """The last event id the client was sent ("" if none): what a resume must carry."""
        summary = self._summary(client=True)
        return summary.last_event_id if summary is not None else ""

    @property
    def upstream_complete(self) -> bool:
        """Upstream produced a whole answer: a terminal event, or a full 2xx JSON body."""
        # 101: a WebSocket (OpenAI Realtime) whose messages were recorded as its stream.
        ok = self.status is not None and (200 <= self.status < 300 or self.status == 101)
        if not ok or self.outcome == "refused":
            return False
        summary = self._summary(client=False)
        if summary is not None:
            return summary.terminated and not summary.errored
        return self.outcome == "complete" and bool(self.response_text)

    @property
    def client_complete(self) -> bool:
        """The client was sent a whole answer (terminal event, no error, not cut)."""
        if self.outcome != "complete" or not self.upstream_complete:
            return False
        summary = self._summary(client=True)
        if summary is not None:
            return summary.terminated and not summary.errored
        return True

    @property
    def failed(self) -> bool:
        """The client did not get a whole answer on this exchange."""
        return not self.client_complete

    @property
    def tokens_per_s(self) -> float | None:
        """Pace of the delivered tokens after the first byte, or None."""
        if self.first_byte is None or self.ended is None or self.tokens < 2:
            return None
        span = self.ended - self.first_byte
        return (self.tokens - 1) / span if span > 0 else None

    def summary(self) -> dict[str, Any]:
        """The fields of the per-exchange log line (cheap: nothing is parsed)."""
        ttft, dur = self.ttft_ms, self.duration_ms
        return {
            "exchange": self.id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "outcome": self.outcome,
            "ttft_ms": _ms(ttft),
            "duration_ms": _ms(dur),
            "bytes": self.bytes_out,
            "faults": [f"{f.type}:{f.action}" for f in self.faults],
        }

    def record(self) -> dict[str, Any]:
        """The full record: one line of ``--record`` JSONL."""
        tps = self.tokens_per_s
        return {
            "id": self.id,
            "scope": self.scope,
            "start": round(self.wall, 6),
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "provider": self.provider,
            "fingerprint": self.fingerprint,
            "stream": self.stream,
            "last_event_id": self.last_event_id,
            "status": self.status,
            "retry_after": self.retry_after,
            "retry_after_ms": self.retry_after_ms,
            "should_retry": self.should_retry,
            "ttft_ms": _ms(self.ttft_ms),
            "ttlt_ms": _ms(self.duration_ms),
            "tokens_per_s": None if tps is None else round(tps, 1),
            "events": self.events,
            "tokens": self.tokens,
            "bytes": self.bytes_out,
            "outcome": self.outcome,
            "error": self.error,
            "faults": [f.as_dict() for f in self.faults],
            "last_delivered_event_id": self.delivered_event_id,
            "upstream_complete": self.upstream_complete,
            "upstream_closed_early": self.upstream_closed_early,
            "response_text": self.response_text,
            "client_text": self.client_text,
            "truncated": self.truncated,
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Recorder:
    """Keeps the most recent exchanges within a count and a byte budget; tells listeners.

    ``keep`` caps how many finished exchanges are kept; ``budget_bytes``
    (:data:`RECORD_BUDGET`) caps the bytes they hold together, by compacting
    the oldest, then forgetting them (see the module docstring);
    ``body_limit`` (:data:`BODY_LIMIT`) caps each body as it is recorded;
    ``stamps`` keeps each body's delivery times (off by default: only reports need them).
    ``scope`` is stamped on every exchange it begins (a scope's own recorder), so
    records from many scopes in one ``--record`` file can be told apart.
    """

    def __init__(
        self,
        keep: int = 1000,
        budget_bytes: int = RECORD_BUDGET,
        body_limit: int = BODY_LIMIT,
        stamps: bool = False,
        scope: str | None = None,
    ) -> None:
        self.scope = scope
        self.exchanges: deque[Exchange] = deque(maxlen=keep)
        self.listeners: list[Callable[[Exchange], None]] = []
        #: The exchanges not yet finished, by ``id(exchange)``: an exchange's ``id`` is its
        #: number since the last profile switch or reset, so an exchange from before one
        #: may be open beside a new one with the same ``id``; the object is unique.
        self.open: dict[int, Exchange] = {}
        # Keys in ``open`` of exchanges begun before the last clear(): not this run's.
        self._stale: set[int] = set()
        self.budget_bytes = budget_bytes
        self.body_limit = body_limit
        #: Stamp each body append with its time (see the module docstring).
        self.stamps = stamps
        #: Bytes the finished exchanges hold (bodies, requests, cached texts).
        self.retained_bytes = 0
        # Kept exchanges whose bodies are still whole, oldest first.
        self._whole: deque[Exchange] = deque()
        self._sizes: dict[int, int] = {}  # id(exchange) -> its share of retained_bytes

    def body(self, like: Body | None = None) -> Body:
        """An empty body buffer with this recorder's cap, for the proxy to fill.

        With ``like`` (the exchange's upstream body), the client's copy of a faulted
        stream: it holds nothing while it repeats ``like``'s bytes (see :class:`Body`).
        """
        body = Body(self.body_limit, self.stamps)
        if like is not None:
            body._like = like
            like._hold = 0
        return body

    def begin(self, exchange: Exchange) -> None:
        """An exchange started; faults that fire on it are attached while open."""
        exchange.upstream_chunks.limit = self.body_limit
        if self.scope is not None:
            exchange.scope = self.scope
        if self.stamps and exchange.upstream_chunks.stamps is None:
            exchange.upstream_chunks.stamps = array("d")
        self.open[id(exchange)] = exchange

    def finish(self, exchange: Exchange) -> None:
        """An exchange ended: keep it within the budget and tell the listeners.

        One begun before the last :meth:`clear` is told to the listeners (the record
        file, metrics: it happened) but not kept: it belongs to no later scenario.
        """
        key = id(exchange)
        self.open.pop(key, None)
        if key in self._stale:
            self._stale.discard(key)
            self._tell(exchange)
            return
        if len(self.exchanges) == self.exchanges.maxlen:
            self._forget_oldest()
        self.exchanges.append(exchange)
        self._whole.append(exchange)
        self._account(exchange)
        self._fit()
        self._tell(exchange)

    def _tell(self, exchange: Exchange) -> None:
        # Each listener on its own: one that raises (a metrics hook, a sink) must not
        # keep the others from hearing, nor undo the record kept above.
        for listener in self.listeners:
            try:
                listener(exchange)
            except Exception:
                log.exception("recorder_listener_failed", exchange=exchange.id)

    def _account(self, exchange: Exchange) -> None:
        size = exchange.retained_bytes()
        self.retained_bytes += size - self._sizes.get(id(exchange), 0)
        self._sizes[id(exchange)] = size

    def _forget_oldest(self) -> None:
        old = self.exchanges.popleft()
        self.retained_bytes -= self._sizes.pop(id(old), 0)
        if self._whole and self._whole[0] is old:
            self._whole.popleft()

    def _fit(self) -> None:
        # Compact oldest first, never the newest; then forget the oldest records.
        while self.retained_bytes > self.budget_bytes and len(self._whole) > 1:
            old = self._whole.popleft()
            old.compact()
            self._account(old)
        while self.retained_bytes > self.budget_bytes and len(self.exchanges) > 1:
            self._forget_oldest()

    def current(self) -> list[Exchange]:
        """The exchanges since the last :meth:`clear`: the finished ones, then those open."""
        return [*self.exchanges, *self.pending()]

    def pending(self) -> list[Exchange]:
        """The open exchanges begun since the last :meth:`clear`."""
        stale = self._stale
        return [ex for key, ex in self.open.items() if key not in stale]

    def clear(self) -> None:
        """Forget the finished exchanges and let go of the open ones.

        An exchange still open (a stalled stream whose client lingers) stays in
        :attr:`open` until it ends, as it is still on the wire; but it is left out of
        :meth:`current` and, when it ends, of :attr:`exchanges`, so the next scenario
        is never judged on it.
        """
        self._stale.update(self.open)
        self.exchanges.clear()
        self._whole.clear()
        self._sizes.clear()
        self.retained_bytes = 0


class JsonlSink:
    """A recorder listener writing one JSON line per finished exchange.

    The listener runs on the proxy's event loop, so it only queues a snapshot
    (:meth:`Exchange.snapshot`); one writer thread builds the records (which
    parses the bodies), serialises them and writes them in order, flushing
    whenever the queue runs dry, so ``tail -f`` sees a line soon after its
    exchange ends and a slow disk or a full pipe never stalls a stream.
    :meth:`close` waits until every queued line is written: none is lost at
    shutdown. A line that cannot be written (a full disk) is logged and counted
    in :attr:`lost`; the next ones are still tried.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] = self.path.open("a", encoding="utf-8")
        self._queue: queue.SimpleQueue[Exchange | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        #: Records that could not be written (or came after :meth:`close`).
        self.lost = 0
        # A daemon, so a process that never calls close() can still exit.
        self._thread = threading.Thread(target=self._write, name="chaosstream-record", daemon=True)
        self._thread.start()

    def __call__(self, exchange: Exchange) -> None:
        with self._lock:
            if self._closed:
                self.lost += 1
                log.warning("record_after_close", path=str(self.path), exchange=exchange.id)
                return
            self._queue.put(exchange.snapshot())

    def _write(self) -> None:
        done = False
        while not done:
            batch = [self._queue.get()]
            while True:  # everything queued meanwhile goes in one write and one flush
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines: list[str] = []
            for ex in batch:
                if ex is None:  # close(): put last, so everything before it is here
                    done = True
                    continue
                try:
                    lines.append(json.dumps(ex.record(), ensure_ascii=False) + "\n")
                except Exception as e:  # never let one record end the writer
                    self.lost += 1
                    log.error("record_failed", path=str(self.path), exchange=ex.id, error=repr(e))
            if lines:
                try:
                    self._file.write("".join(lines))
                    self._file.flush()
                except (OSError, ValueError) as e:  # a full disk, a closed pipe
                    self.lost += len(lines)
                    log.error("record_write_failed", path=str(self.path), error=str(e))

    def close(self) -> None:
        """Write every queued line, then close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        try:
            self._file.close()
        except OSError as e:  # the last flush failed (a full disk)
            log.error("record_write_failed", path=str(self.path), error=str(e))
