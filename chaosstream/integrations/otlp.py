"""A lean OTLP/HTTP exporter: span records and metric points straight to protobuf bytes.

``chaosstream proxy --otel`` exports through this module, not the SDK's span
pipeline. Measured per span on a 2-core machine: the SDK's ``start_span`` +
``add_event`` + ``end`` cost about 22 us on the event loop and its OTLP encoder
(``encode_spans(...).SerializeToString()``, a protobuf object per attribute)
about 63 us on the exporter thread; short streams could not amortise that
(issue 22). Here a :class:`SpanRecord` (plain values, built once per exchange
by :mod:`chaosstream.integrations.otel`) is appended to a bounded queue on the
loop and encoded on a background thread with precomputed field tags and
cached key/value fields, then POSTed in batches.

The protobuf wire format needs nothing more than varints, fixed64s and
length-delimited fields (https://protobuf.dev/programming-guides/encoding/).
Field numbers are opentelemetry-proto's (v1.x):
``opentelemetry/proto/trace/v1/trace.proto`` (TracesData, ResourceSpans,
ScopeSpans, Span, Span.Event, Status), ``common/v1/common.proto`` (AnyValue,
KeyValue, InstrumentationScope), ``resource/v1/resource.proto`` and
``metrics/v1/metrics.proto`` (Metric, Sum, Histogram, NumberDataPoint,
HistogramDataPoint). ``tests/integrations/test_otlp.py`` decodes the bytes
with opentelemetry-proto.

Batching follows the SDK's BatchSpanProcessor (``OTEL_BSP_SCHEDULE_DELAY``
5000 ms, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` 512, ``OTEL_BSP_MAX_QUEUE_SIZE``
2048, ``OTEL_BSP_EXPORT_TIMEOUT`` 30000 ms); a full queue drops the span and
counts it, the loop never waits. Transport follows the OTLP exporter spec
(https://opentelemetry.io/docs/specs/otel/protocol/exporter/): per-signal
endpoint, headers, timeout, gzip/deflate compression, CA certificate and client
certificate/key; 429/502/503/504 and connection errors are retried with
exponential backoff (Retry-After honoured) within the timeout.

No OpenTelemetry package is imported here.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import math
import os
import random
import re
import ssl
import struct
import threading
import time
import zlib
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import structlog

__all__ = [
    "KIND_SERVER",
    "STATUS_ERROR",
    "STATUS_UNSET",
    "AttrValue",
    "BatchSettings",
    "Endpoint",
    "EventRecord",
    "Histogram",
    "MetricData",
    "OtlpExporter",
    "Parent",
    "SpanRecord",
    "batch_from_env",
    "encode_metrics",
    "encode_spans",
    "endpoint_from_env",
    "metric_interval_from_env",
    "parse_headers",
    "parse_traceparent",
]

log = structlog.get_logger("chaosstream.integrations.otlp")

AttrValue = str | bool | int | float
#: A W3C parent, library-free: (trace id 16 bytes, span id 8 bytes, trace flags,
#: tracestate as its canonical header value or None).
Parent = tuple[bytes, bytes, int, str | None]
#: An attribute set as a hashable key: its items in order.
AttrKey = tuple[tuple[str, AttrValue], ...]

KIND_SERVER = 2  # trace.proto Span.SpanKind SPAN_KIND_SERVER
STATUS_UNSET = 0  # trace.proto Status.StatusCode
STATUS_ERROR = 2
# trace.proto SpanFlags: bit 8 says whether the parent is remote is known, bit 9 that it
# is. Set as the SDK's encoder does (opentelemetry-exporter-otlp-proto-common,
# trace_encoder._span_flags): trace flags are left out of the low byte there too.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
# flags 16 is a fixed32: tag (16 << 3) | 5 = 133, two bytes as a varint.
_ROOT_FLAGS = b"\x85\x01" + struct.pack("<I", _HAS_IS_REMOTE)
_CHILD_FLAGS = b"\x85\x01" + struct.pack("<I", _HAS_IS_REMOTE | _IS_REMOTE)

_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_BYTE = [bytes((i,)) for i in range(128)]
_U64 = (1 << 64) - 1


def _varint(n: int) -> bytes:
    """Base-128 varint; a negative int64 as its two's complement (10 bytes), as protobuf."""
    if 0 <= n < 0x80:
        return _BYTE[n]
    n &= _U64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_BYTE[n] if n < 0x80 else _varint(n)) + payload


def _any(value: AttrValue) -> bytes:
    # common.proto AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4.
    # A oneof member is written even when it holds its default (False, 0, "").
    if value is True:
        return b"\x10\x01"
    if value is False:
        return b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    return _ld(b"\x0a", str(value).encode("utf-8", "surrogatepass"))


def _kv(tag: bytes, key: str, value: AttrValue) -> bytes:
    """One KeyValue (common.proto: key 1, value 2) as field ``tag`` of its message."""
    return _ld(tag, _ld(b"\x0a", key.encode()) + _ld(b"\x12", _any(value)))


class _Fields:
    """Encoded KeyValue fields; a block of low-cardinality attributes is made once.

    The attributes that repeat from span to span (profile, outcome, model, status
    code, fault type...) are encoded as one block, cached by its items: one tuple,
    one hash and one dict lookup per span instead of three length-prefixed fields
    per attribute (measured: 0.5 us per attribute, 16 per span). Values of one key
    keep one type (``True == 1`` in a dict key). The cache is cleared when it grows
    past ``limit`` blocks, so varied paths cannot grow it without bound.
    """

    __slots__ = ("blocks", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self.blocks: dict[tuple[bytes, Hashable], bytes] = {}
        self.limit = limit

    def block(
        self, tag: bytes, attrs: Mapping[str, AttrValue], key: Hashable | None = None
    ) -> bytes:
        """``attrs`` as KeyValue fields ``tag``, from the cache when seen before (under
        ``key`` when it names them, else under their items)."""
        if key is None:
            return self.items(tag, tuple(attrs.items()))
        k = (tag, key)
        hit = self.blocks.get(k)
        if hit is None:
            if len(self.blocks) >= self.limit:
                self.blocks.clear()
            hit = self.blocks[k] = b"".join([_kv(tag, n, v) for n, v in attrs.items()])
        return hit

    def items(self, tag: bytes, items: AttrKey) -> bytes:
        """:meth:`block` for an attribute set already a tuple of items."""
        key = (tag, items)
        hit = self.blocks.get(key)
        if hit is None:
            if len(self.blocks) >= self.limit:
                self.blocks.clear()
            hit = self.blocks[key] = b"".join([_kv(tag, k, v) for k, v in items])
        return hit


_KEYS: dict[str, bytes] = {}


def _measured(tag: bytes, attrs: Mapping[str, AttrValue]) -> bytes:
    """Per-span numbers (ids, byte counts, times) as KeyValue fields ``tag``.

    Only the keys' bytes are cached; a number's AnyValue is at most 11 bytes, so
    the value's and (with a key under 100 bytes) the pair's lengths are one byte.
    """
    out = []
    for key, value in attrs.items():
        kb = _KEYS.get(key)
        if kb is None:
            kb = _ld(b"\x0a", key.encode())
            if len(_KEYS) < 1024:
                _KEYS[key] = kb
        kind = type(value)
        if kind is int:
            any_ = b"\x18" + _varint(value)  # type: ignore[arg-type]
        elif kind is float:
            any_ = b"\x21" + _DOUBLE(value)
        else:
            any_ = _any(value)
        if len(any_) < 0x80:
            pair = kb + b"\x12" + _BYTE[len(any_)] + any_
        else:
            pair = kb + _ld(b"\x12", any_)
        out.append(_ld(tag, pair))
    return b"".join(out)


# -- span records ---------------------------------------------------------------------


class EventRecord:
    """One span event: name, time (ns since the epoch), attributes.

    ``attributes`` are the ones that repeat (encoded once, cached); ``measured``
    the per-event numbers. The event's attributes are both, in that order.
    """

    __slots__ = ("attributes", "key", "measured", "name", "time_ns")

    def __init__(
        self,
        name: str,
        time_ns: int,
        attributes: dict[str, AttrValue],
        measured: dict[str, AttrValue] | None = None,
        key: Hashable | None = None,
    ) -> None:
        self.name = name
        self.time_ns = time_ns
        self.attributes = attributes
        self.measured = measured or {}
        self.key = key

    def all_attributes(self) -> dict[str, AttrValue]:
        """Every attribute of the event."""
        return {**self.attributes, **self.measured}


class SpanRecord:
    """One finished span in plain values: what both sinks (the SDK's API, this exporter) take.

    ``parent`` is the client's W3C context (None: a root span in a new trace);
    ``status_code`` is trace.proto's (0 unset, 2 error). ``attributes`` are the
    low-cardinality ones (the exporter encodes each distinct set once),
    ``measured`` the per-span numbers; the span's attributes are both, in order.
    ``key``, when given, is a hashable value that names ``attributes`` (the same key,
    the same attributes): the exporter's cache uses it instead of their items.
    """

    __slots__ = (
        "attributes",
        "end_ns",
        "events",
        "key",
        "kind",
        "measured",
        "name",
        "parent",
        "start_ns",
        "status_code",
        "status_message",
    )

    def __init__(
        self,
        name: str,
        parent: Parent | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, AttrValue],
        events: list[EventRecord],
        status_code: int = STATUS_UNSET,
        status_message: str = "",
        kind: int = KIND_SERVER,
        measured: dict[str, AttrValue] | None = None,
        key: Hashable | None = None,
    ) -> None:
        self.name = name
        self.parent = parent
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attributes = attributes
        self.events = events
        self.status_code = status_code
        self.status_message = status_message
        self.kind = kind
        self.measured = measured or {}
        self.key = key

    def all_attributes(self) -> dict[str, AttrValue]:
        """Every attribute of the span."""
        return {**self.attributes, **self.measured}


def parse_traceparent(value: str) -> Parent | None:
    """The W3C ``traceparent`` header as (trace id, span id, flags, None); None when invalid.

    Trace Context Level 1 (https://www.w3.org/TR/trace-context/#traceparent-header),
    with the SDK propagator's leniency (opentelemetry-api's
    TraceContextTextMapPropagator): surrounding blanks are allowed, version ``ff``
    and all-zero ids are invalid, version 00 takes nothing after the flags, a
    later version may append fields. Header values over 512 characters are refused.
    """
    if len(value) == 55 and value[2] == value[35] == value[52] == "-" and value == value.lower():
        # The common exact form, without the regex (py-spy on a busy proxy: the match
        # was most of the middleware's time). fromhex rejects any other character and
        # skips blanks, so a length other than 26 bytes is invalid too.
        try:
            raw = bytes.fromhex(value.replace("-", ""))
        except ValueError:
            return None
        if len(raw) != 26 or raw[0] == 0xFF or raw[1:17] == _ZERO16 or raw[17:25] == _ZERO8:
            return None
        return raw[1:17], raw[17:25], raw[25], None
    if len(value) > 512:
        return None
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace, span, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace == _ZERO_TRACE or span == _ZERO_SPAN:
        return None
    return bytes.fromhex(trace), bytes.fromhex(span), int(flags, 16), None


# The SDK propagator's own pattern (TraceContextTextMapPropagator._TRACEPARENT_HEADER_FORMAT).
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_ZERO16, _ZERO8 = bytes(16), bytes(8)


class _SpanEncoder:
    """SpanRecords to ExportTraceServiceRequest bytes (one resource, one scope)."""

    def __init__(self, resource: Mapping[str, AttrValue], scope: tuple[str, str]) -> None:
        self.fields = _Fields()
        # ResourceSpans.resource (1) and ScopeSpans.scope (1): the same bytes every batch.
        self.resource = _ld(b"\x0a", b"".join(_kv(b"\x0a", k, v) for k, v in resource.items()))
        name, version = scope
        self.scope = _ld(b"\x0a", _ld(b"\x0a", name.encode()) + _ld(b"\x12", version.encode()))
        self.names: dict[str, bytes] = {}
        self.rng = random.Random()  # ids only; never the seeded fault randomness

    def span(self, rec: SpanRecord) -> bytes | None:
        """One Span message's bytes (trace.proto field numbers), or None if not sampled."""
        parent = rec.parent
        bits = self.rng.getrandbits
        if parent is None:
            trace_id = (bits(128) or 1).to_bytes(16, "big")
            flags = _ROOT_FLAGS
        else:
            if not parent[2] & 1:
                # The SDK's default sampler, parentbased_always_on: an unsampled parent
                # makes a non-recording span, which is never exported.
                return None
            trace_id = parent[0]
            flags = _CHILD_FLAGS
        # trace_id 1, span_id 2 (16 and 8 bytes: one-byte lengths)
        parts = [b"\x0a\x10", trace_id, b"\x12\x08", (bits(64) or 1).to_bytes(8, "big")]
        if parent is not None:
            if parent[3]:
                parts.append(_ld(b"\x1a", parent[3].encode()))  # trace_state 3
            parts += (b"\x22\x08", parent[1])  # parent_span_id 4
        name = self.names.get(rec.name)
        if name is None:  # name 5 and kind 6, made once per distinct name
            if len(self.names) >= 1024:
                self.names.clear()
            raw = rec.name.encode("utf-8", "surrogatepass")
            name = self.names[rec.name] = _ld(b"\x2a", raw) + b"\x30" + _BYTE[rec.kind]
        parts += (
            name,
            b"\x39",  # start_time_unix_nano 7, end_time_unix_nano 8: fixed64
            _FIXED64(rec.start_ns),
            b"\x41",
            _FIXED64(rec.end_ns),
            self.fields.block(b"\x4a", rec.attributes, rec.key),  # attributes 9
        )
        if rec.measured:
            parts.append(_measured(b"\x4a", rec.measured))
        for ev in rec.events:  # events 11: Event{time_unix_nano 1, name 2, attributes 3}
            body = b"\x09" + _FIXED64(ev.time_ns) + _ld(b"\x12", ev.name.encode())
            body += self.fields.block(b"\x1a", ev.attributes, ev.key)
            if ev.measured:
                body += _measured(b"\x1a", ev.measured)
            parts.append(_ld(b"\x5a", body))
        if rec.status_code or rec.status_message:  # status 15: Status{message 2, code 3}
            status = _ld(b"\x12", rec.status_message.encode("utf-8", "surrogatepass"))
            parts.append(_ld(b"\x7a", status + b"\x18" + _BYTE[rec.status_code]))
        else:
            parts.append(b"\x7a\x00")  # the SDK's encoder always writes one
        parts.append(flags)
        return _ld(b"\x12", b"".join(parts))  # as ScopeSpans.spans (2)

    def request(self, spans: Iterable[bytes]) -> bytes:
        """ExportTraceServiceRequest{resource_spans 1: ResourceSpans{resource 1, scope_spans 2}}."""
        scope_spans = _ld(b"\x12", self.scope + b"".join(spans))
        return _ld(b"\x0a", self.resource + scope_spans)


def encode_spans(
    records: Sequence[SpanRecord],
    resource: Mapping[str, AttrValue],
    scope: tuple[str, str] = ("chaosstream", ""),
) -> bytes:
    """An OTLP ExportTraceServiceRequest for ``records`` (sampled ones), as the exporter sends."""
    enc = _SpanEncoder(resource, scope)
    return enc.request(s for s in map(enc.span, records) if s is not None)


# -- metrics ----------------------------------------------------------------------------


class Histogram:
    """Explicit-bucket histogram points per attribute set, tallied on the loop.

    One list per attribute set, ``[sum, min, max, bucket counts...]``, updated in
    place: ``record`` is a dict lookup, a ``bisect`` and four list writes (the
    SDK's ``Histogram.record`` was about 4 us). Buckets follow the SDK's
    explicit-bucket aggregation: bucket i holds ``bounds[i-1] < v <= bounds[i]``.
    """

    __slots__ = ("bounds", "description", "name", "points", "unit")

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = tuple(bounds)
        self.points: dict[AttrKey, list[float]] = {}

    def record(self, value: float, key: AttrKey) -> None:
        """Add one value to the point of attribute set ``key``."""
        self.point(key)(value)

    def point(self, key: AttrKey) -> Callable[[float], None]:
        """The adder of attribute set ``key``'s point: keep it to skip the lookup."""
        state = self.points.get(key)
        if state is None:
            state = self.points[key] = [0.0, math.inf, -math.inf] + [0] * (len(self.bounds) + 1)
        return partial(_add, self.bounds, state)


def _add(bounds: tuple[float, ...], state: list[float], value: float) -> None:
    state[0] += value
    if value < state[1]:
        state[1] = value
    if value > state[2]:
        state[2] = value
    state[3 + bisect_left(bounds, value)] += 1


@dataclass
class MetricData:
    """One metric at a collection: a sum (monotonic or not) or a histogram."""

    name: str
    unit: str
    description: str
    kind: Literal["counter", "updown", "histogram"]
    points: list[tuple[AttrKey, int]] = field(default_factory=list)
    histogram: Histogram | None = None


def _histogram_points(h: Histogram, start: bytes, now: bytes, fields: _Fields) -> list[bytes]:
    bounds = _ld(b"\x3a", b"".join(_DOUBLE(b) for b in h.bounds))  # explicit_bounds 7
    out = []
    # list() and the slice are single steps under the GIL: each state is a consistent
    # copy; the count is the sum of its buckets, so the two always agree.
    for key, live in list(h.points.items()):
        state = live[:]
        counts = state[3:]
        if not any(counts):  # a point made ahead of its first value: the SDK has none yet
            continue
        parts = [b"\x11", start, b"\x19", now]  # start_time_unix_nano 2, time_unix_nano 3
        parts += (b"\x21", _FIXED64(int(sum(counts))), b"\x29", _DOUBLE(state[0]))  # 4, 5
        parts.append(_ld(b"\x32", b"".join(_FIXED64(int(c)) for c in counts)))  # 6
        parts.append(bounds)
        parts.append(fields.items(b"\x4a", key))  # attributes 9
        parts += (b"\x59", _DOUBLE(state[1]), b"\x61", _DOUBLE(state[2]))  # min 11, max 12
        out.append(_ld(b"\x0a", b"".join(parts)))  # Histogram.data_points 1
    return out


def encode_metrics(
    metrics: Iterable[MetricData],
    resource: Mapping[str, AttrValue],
    scope: tuple[str, str],
    start_ns: int,
    now_ns: int,
    fields: _Fields | None = None,
) -> bytes:
    """An OTLP ExportMetricsServiceRequest, cumulative temporality (the OTLP exporter default)."""
    fields = fields or _Fields()
    start, now = _FIXED64(start_ns), _FIXED64(now_ns)
    encoded = []
    for m in metrics:
        head = _ld(b"\x0a", m.name.encode()) + _ld(b"\x12", m.description.encode())
        head += _ld(b"\x1a", m.unit.encode())  # Metric: name 1, description 2, unit 3
        if m.histogram is not None:
            points = _histogram_points(m.histogram, start, now, fields)
            if points:  # Metric.histogram 9: Histogram{data_points 1, temporality 2}
                encoded.append(head + _ld(b"\x4a", b"".join(points) + b"\x10\x02"))
            continue
        dps = []
        for key, value in m.points:  # NumberDataPoint: 2, 3, as_int 6 (sfixed64), attrs 7
            parts = [b"\x11", start, b"\x19", now, b"\x31", _FIXED64(value & _U64)]
            parts.append(fields.items(b"\x3a", key))
            dps.append(_ld(b"\x0a", b"".join(parts)))
        monotonic = b"\x01" if m.kind == "counter" else b"\x00"
        # Metric.sum 7: Sum{data_points 1, aggregation_temporality 2 (2: cumulative),
        # is_monotonic 3}.
        encoded.append(head + _ld(b"\x3a", b"".join(dps) + b"\x10\x02\x18" + monotonic))
    res = _ld(b"\x0a", b"".join(_kv(b"\x0a", k, v) for k, v in resource.items()))
    name, version = scope
    scope_b = _ld(b"\x0a", _ld(b"\x0a", name.encode()) + _ld(b"\x12", version.encode()))
    scope_metrics = _ld(b"\x12", scope_b + b"".join(_ld(b"\x12", m) for m in encoded))
    return _ld(b"\x0a", res + scope_metrics)


# -- transport --------------------------------------------------------------------------


@dataclass
class Endpoint:
    """Where and how one signal is POSTed (the OTLP exporter's settings, resolved)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    compression: Literal["none", "gzip", "deflate"] = "none"
    certificate: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None


@dataclass
class BatchSettings:
    """The BatchSpanProcessor's settings (``OTEL_BSP_*``), in seconds and spans."""

    delay_s: float = 5.0
    batch_size: int = 512
    queue_size: int = 2048
    export_timeout_s: float = 30.0


# Deferred work is done when this many items wait, or at least this often.
_WORK_BATCH = 256
_WORK_DELAY_S = 1.0
# Exchanges waiting for the work thread; it does no I/O, so only a stalled process
# fills this (a second of 16k exchanges is far past what one proxy process serves).
_WORK_LIMIT = 16384
# The OTLP exporter spec's retryable statuses (as the SDK's http exporter).
_RETRYABLE = frozenset({429, 502, 503, 504})
_RETRIES = 6


class _Poster:
    """POSTs one signal's payloads on a kept-alive connection, retrying as the spec says."""

    def __init__(self, endpoint: Endpoint, stop: threading.Event) -> None:
        self.endpoint = endpoint
        url = urlsplit(endpoint.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{endpoint.url!r}: an OTLP/HTTP endpoint is an http(s) URL")
        self.https = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if self.https else 80)
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.context: ssl.SSLContext | None = None
        if self.https:
            self.context = ssl.create_default_context(cafile=endpoint.certificate)
            if endpoint.client_certificate:
                self.context.load_cert_chain(endpoint.client_certificate, endpoint.client_key)
        self.headers = {"Content-Type": "application/x-protobuf", **endpoint.headers}
        if endpoint.compression != "none":
            self.headers["Content-Encoding"] = endpoint.compression
        self.conn: http.client.HTTPConnection | None = None
        self.stop = stop

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _once(self, body: bytes, timeout: float) -> tuple[int, str | None]:
        if self.conn is None:
            if self.https:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=timeout, context=self.context
                )
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        else:
            self.conn.timeout = timeout
            if self.conn.sock is not None:
                self.conn.sock.settimeout(timeout)
        self.conn.request("POST", self.path, body, self.headers)
        resp = self.conn.getresponse()
        resp.read()  # the connection is reused for the next batch
        if resp.will_close:
            self.close()
        return resp.status, resp.getheader("Retry-After")

    def post(self, data: bytes, deadline: float) -> str | None:
        """Send ``data``; None when it was accepted, else why not. Never past ``deadline``."""
        compression = self.endpoint.compression
        if compression == "gzip":
            data = gzip.compress(data, 6, mtime=0)
        elif compression == "deflate":
            data = zlib.compress(data)
        why = "timed out"
        for attempt in range(_RETRIES):
            left = min(deadline, time.monotonic() + self.endpoint.timeout_s) - time.monotonic()
            if left <= 0:
                return why
            try:
                status, retry_after = self._once(data, left)
            except (OSError, http.client.HTTPException) as e:
                self.close()
                why = f"{type(e).__name__}: {e}"
                wait = 0.0 if attempt == 0 else 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
            else:
                if 200 <= status < 300:
                    return None
                why = f"HTTP {status}"
                if status not in _RETRYABLE:
                    return why
                wait = 2**attempt * random.uniform(0.8, 1.2)
                with contextlib.suppress(ValueError):  # an HTTP date: keep the backoff
                    wait = max(0.0, float(retry_after)) if retry_after else wait
            if not math.isfinite(wait) or time.monotonic() + wait >= deadline:
                return why
            if self.stop.wait(wait):
                return f"{why} (shutting down)"
        return why


class OtlpExporter:
    """Spans and metrics to an OTLP/HTTP receiver from one background thread.

    The loop calls :meth:`add_span` (a deque append, or a counted drop when the
    queue is full); the thread encodes and POSTs a batch when ``batch_size`` spans
    wait or ``delay_s`` passed, and collects metrics (``collect``, set by the
    telemetry) every ``metric_interval_s``. :meth:`shutdown` exports what is left
    within its timeout.
    """

    def __init__(
        self,
        traces: Endpoint | None,
        metrics: Endpoint | None,
        resource: Mapping[str, AttrValue],
        scope: tuple[str, str],
        batch: BatchSettings | None = None,
        metric_interval_s: float = 60.0,
        metric_timeout_s: float = 30.0,
    ) -> None:
        self.traces = traces
        self.metrics = metrics
        self.batch = batch or BatchSettings()
        self.metric_interval_s = metric_interval_s
        self.metric_timeout_s = metric_timeout_s
        self.resource = dict(resource)
        self.scope = scope
        #: Reads the metrics at collection time (on the exporter's thread).
        self.collect: Callable[[], Iterable[MetricData]] | None = None
        #: Spans left out because the queue was full (the collector slow or down).
        self.dropped = 0
        #: Spans (and metric exports) the receiver accepted, and those it did not.
        self.exported = 0
        self.failed = 0
        self.metric_exports = 0
        # Encoded spans: bytes are not tracked by the garbage collector, records are
        # (five objects a span, promoted to the old generations while they wait).
        self._queue: deque[bytes] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._encoder = _SpanEncoder(resource, scope)
        self._metric_fields = _Fields()
        self._start_ns = time.time_ns()
        self._spans = _Poster(traces, self._stop) if traces is not None else None
        self._metrics = _Poster(metrics, self._stop) if metrics is not None else None
        self._failing: set[str] = set()
        #: Runs one deferred item on the work thread (set by the telemetry).
        self.process: Callable[[Any], None] | None = None
        #: Deferred items dropped because the work queue was full.
        self.dropped_work = 0
        self._work: deque[Any] = deque()
        self._work_wake = threading.Event()
        self._work_stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaosstream-otlp", daemon=True)
        self._worker = threading.Thread(
            target=self._work_loop, name="chaosstream-otlp-work", daemon=True
        )
        self._thread.start()
        self._worker.start()

    def defer(self, item: Any) -> None:
        """Queue ``item`` for :attr:`process` on the work thread (on the loop: an append).

        Per-exchange work done there in batches runs with warm caches: measured on a
        busy proxy, the same work at each exchange's end cost about 3 % more CPU per
        event (50-event streams). The work thread never does I/O, so a slow collector
        delays spans (and drops them past the span queue), never the metric points.
        """
        work = self._work
        n = len(work)
        if n >= _WORK_LIMIT or self._work_stop.is_set():
            self.dropped_work += 1
            if self.dropped_work == 1:
                log.warning("otel: work queue full, dropping exchanges")
            return
        work.append(item)
        if n + 1 == _WORK_BATCH:
            self._work_wake.set()

    def _work_loop(self) -> None:
        while not self._work_stop.is_set():
            self._work_wake.wait(_WORK_DELAY_S)
            self._work_wake.clear()
            self._drain_work()
        self._drain_work()

    def _drain_work(self) -> None:
        work, process = self._work, self.process
        while work:
            item = work.popleft()
            if process is None:
                continue
            try:
                process(item)
            except Exception as e:  # one bad exchange must not stop the others
                log.warning("otel: an exchange could not be traced", error=f"{e!r}"[:200])

    def add_span(self, record: SpanRecord) -> None:
        """Encode and queue a finished span (never blocks; drops when the queue is full).

        Called from one thread at a time: the work thread, or the loop when an SDK
        provider keeps the work there.
        """
        queue = self._queue
        n = len(queue)
        if n >= self.batch.queue_size or self._stop.is_set():
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "otel: span queue full, dropping spans (collector slow or down)",
                    queue_size=self.batch.queue_size,
                )
            return
        data = self._encoder.span(record)
        if data is None:  # not sampled
            return
        queue.append(data)
        if n + 1 == self.batch.batch_size:
            self._wake.set()

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Export what is queued and the metrics once more; False if that took too long."""
        if self._stop.is_set():
            return not self._thread.is_alive()
        began = time.monotonic()
        # The work first: what it makes (spans, metric points) is exported below.
        self._work_stop.set()
        self._work_wake.set()
        self._worker.join(timeout_s)
        self._deadline = began + timeout_s
        self._stop.set()
        self._wake.set()
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + 0.5)
        if self._thread.is_alive():
            log.warning("otel: export did not finish at exit", spans_left=len(self._queue))
            return False
        if self.dropped:
            log.warning("otel: spans dropped (queue full)", dropped=self.dropped)
        return True

    # -- the exporter's thread -----------------------------------------------------

    _deadline = math.inf

    def _run(self) -> None:
        now = time.monotonic()
        next_spans = now + self.batch.delay_s
        next_metrics = now + self.metric_interval_s
        try:
            while not self._stop.is_set():
                due = min(next_spans, next_metrics) if self._metrics else next_spans
                self._wake.wait(max(0.0, due - time.monotonic()))
                self._wake.clear()
                now = time.monotonic()
                if len(self._queue) >= self.batch.batch_size or now >= next_spans:
                    self._export_spans(None)
                    next_spans = time.monotonic() + self.batch.delay_s
                if self._metrics is not None and now >= next_metrics:
                    self._export_metrics(now + self.metric_timeout_s)
                    next_metrics = time.monotonic() + self.metric_interval_s
            self._export_spans(self._deadline)
            self._export_metrics(self._deadline)
        finally:
            for poster in (self._spans, self._metrics):
                if poster is not None:
                    poster.close()

    def _export_spans(self, deadline: float | None) -> None:
        try:
            self._send_spans(deadline)
        except Exception as e:  # a bug in encoding must not stop the thread (nor leak)
            self.failed += len(self._queue)
            self._queue.clear()
            log.warning("otel: span export failed", error=f"{type(e).__name__}: {e}")

    def _send_spans(self, deadline: float | None) -> None:
        """Send every queued span, a batch at a time; each batch within the export timeout,
        all of them within ``deadline`` at shutdown (what is left then counts as failed)."""
        queue, size = self._queue, self.batch.batch_size
        while queue:
            spans = [queue.popleft() for _ in range(min(size, len(queue)))]
            if self._spans is None:
                continue
            if spans:
                until = time.monotonic() + self.batch.export_timeout_s
                why = self._spans.post(self._encoder.request(spans), min(until, deadline or until))
                self._tell("spans", why, len(spans))
            if deadline is not None and time.monotonic() >= deadline:
                self.failed += len(queue)
                queue.clear()

    def _export_metrics(self, deadline: float) -> None:
        if self._metrics is None or self.collect is None:
            return
        try:
            data = encode_metrics(
                self.collect(),
                self.resource,
                self.scope,
                self._start_ns,
                time.time_ns(),
                self._metric_fields,
            )
        except Exception as e:  # a bug here must not stop span export
            log.warning("otel: metrics collection failed", error=f"{type(e).__name__}: {e}")
            return
        why = self._metrics.post(data, deadline)
        self.metric_exports += why is None
        self._tell("metrics", why, 0)

    def _tell(self, signal: str, why: str | None, spans: int) -> None:
        """Count the export; log when a signal starts failing and when it recovers."""
        if why is None:
            self.exported += spans
            if signal in self._failing:
                self._failing.discard(signal)
                log.info(f"otel: {signal} export recovered")
            return
        self.failed += spans
        if signal not in self._failing:
            self._failing.add(signal)
            endpoint = self.traces if signal == "spans" else self.metrics
            log.warning(
                f"otel: {signal} export failed",
                endpoint=endpoint.url if endpoint else None,
                error=why,
            )


# -- the standard environment -------------------------------------------------------


def _number(env: Mapping[str, str], name: str, default: float, low: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw[:40]!r}: not a number") from None
    if not math.isfinite(value) or value < low:
        raise ValueError(f"{name}={raw[:40]!r}: must be a number >= {low:g}")
    return value


def parse_headers(value: str, name: str) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS``: ``key=value`` pairs, comma-separated, URL-encoded.

    The spec's format (https://opentelemetry.io/docs/specs/otel/protocol/exporter/
    #specifying-headers-via-environment-variables); keys are lower-cased as the SDK's
    ``parse_env_headers`` does. A pair without ``=`` is bad input naming ``name``.
    """
    headers = {}
    for pair in value.split(","):
        if not pair.strip():
            continue
        key, eq, val = pair.partition("=")
        key = unquote(key).strip().lower()
        if not eq or not key or any(c in key for c in " \t\r\n:"):
            raise ValueError(f"{name}: {pair.strip()[:40]!r} is not a key=value header")
        headers[key] = unquote(val).strip()
    return headers


def endpoint_from_env(env: Mapping[str, str], signal: Literal["traces", "metrics"]) -> Endpoint:
    """One signal's :class:`Endpoint` from ``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]*``.

    The per-signal variable wins over the general one; the general endpoint gets
    ``/v1/traces`` or ``/v1/metrics`` appended, the per-signal one is used as is
    (the spec's rule). ``_TIMEOUT`` is in milliseconds as the spec says (the
    Python SDK reads seconds; chaosstream follows the spec for both of its paths).
    Bad values raise :class:`ValueError` naming the variable.
    """
    prefix = f"OTEL_EXPORTER_OTLP_{signal.upper()}_"

    def pick(what: str) -> tuple[str, str]:
        for name in (prefix + what, f"OTEL_EXPORTER_OTLP_{what}"):
            value = env.get(name, "").strip()
            if value:
                return name, value
        return f"OTEL_EXPORTER_OTLP_{what}", ""

    name, url = pick("ENDPOINT")
    if name.startswith("OTEL_EXPORTER_OTLP_ENDPOINT") or not url:
        url = f"{(url or 'http://localhost:4318').rstrip('/')}/v1/{signal}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name}={url[:80]!r}: an OTLP/HTTP endpoint is an http(s) URL")
    headers_var, headers = pick("HEADERS")
    timeout_var, _ = pick("TIMEOUT")
    compression_var, compression = pick("COMPRESSION")
    compression = compression.lower() or "none"
    if compression not in ("none", "gzip", "deflate"):
        raise ValueError(
            f"{compression_var}={compression[:40]!r}: chaosstream compresses with gzip or "
            "deflate (or none)"
        )
    files = {}
    for what in ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"):
        var, path = pick(what)
        if path and not os.path.isfile(path):
            raise ValueError(f"{var}={path[:80]!r}: no such file")
        files[what] = path or None
    return Endpoint(
        url=url,
        headers=parse_headers(headers, headers_var),
        timeout_s=_number(env, timeout_var, 10_000.0) / 1000,
        compression=compression,  # type: ignore[arg-type]
        certificate=files["CERTIFICATE"],
        client_certificate=files["CLIENT_CERTIFICATE"],
        client_key=files["CLIENT_KEY"],
    )


def batch_from_env(env: Mapping[str, str]) -> BatchSettings:
    """The ``OTEL_BSP_*`` settings (milliseconds and spans), with the SDK's defaults."""
    batch = BatchSettings(
        delay_s=_number(env, "OTEL_BSP_SCHEDULE_DELAY", 5000.0) / 1000,
        batch_size=int(_number(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1)),
        queue_size=int(_number(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1)),
        export_timeout_s=_number(env, "OTEL_BSP_EXPORT_TIMEOUT", 30_000.0) / 1000,
    )
    if batch.batch_size > batch.queue_size:
        raise ValueError(
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch.batch_size} is more than "
            f"OTEL_BSP_MAX_QUEUE_SIZE={batch.queue_size}"
        )
    return batch


def metric_interval_from_env(env: Mapping[str, str]) -> tuple[float, float]:
    """(interval, timeout) in seconds: ``OTEL_METRIC_EXPORT_INTERVAL`` (60000 ms) and
    ``OTEL_METRIC_EXPORT_TIMEOUT`` (30000 ms), the periodic reader's defaults."""
    interval = _number(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000.0, 1.0) / 1000
    return interval, _number(env, "OTEL_METRIC_EXPORT_TIMEOUT", 30_000.0) / 1000
