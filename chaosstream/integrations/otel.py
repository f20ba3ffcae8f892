"""OpenTelemetry: the fault inside the user's own trace, and GenAI metrics over OTLP.

Attach a :class:`ProxyTelemetry` to a :class:`~chaosstream.proxy.server.ChaosProxy`
before it starts. Per exchange it makes one span, a child of the client's
incoming W3C ``traceparent``, with the GenAI semantic conventions' attributes
where they exist (``gen_ai.operation.name``, ``gen_ai.provider.name`` and the
older ``gen_ai.system``, ``gen_ai.request.model``, usage when the body reports
it) plus ``chaosstream.*`` ones (profile, seed, scope, outcome), and one span
event per fault that fired, stamped at the recorded time with its position in
events and bytes. It also feeds OTLP metrics that mirror the Prometheus ones
(:mod:`chaosstream.integrations.metrics`).

Where it hooks in, and what that costs:

- the proxy keeps the request's ``traceparent``/``tracestate`` headers on its
  :class:`~chaosstream.proxy.record.Exchange` (two header look-ups, whether
  telemetry is on or not) and forwards both upstream unchanged (they are
  end-to-end headers), so a model server's spans join the same trace as
  siblings of ours, both children of the client's span; they are parsed only
  when the span is made (on the lean exporter's work thread);
- a recorder listener (and a scope listener) builds the span and the metric
  points once, when the exchange ends, with the times the recorder took: never
  per chunk, and no parse of the body (usage is found with ``rfind`` in the
  body's tail; the model name with one regex over the request).

Two sinks take the same span record (:func:`span_record`): a user's
``TracerProvider`` through the OpenTelemetry API, or, as :func:`configure`
sets it up for the command line, the lean OTLP/HTTP exporter of
:mod:`chaosstream.integrations.otlp`: the loop only queues the finished exchange,
and the exporter's work thread makes the record and the metric points in batches
(about 11 us an exchange, where the SDK's span pipeline took over 100 us).

Nothing here is imported unless telemetry is on (``--otel`` or the
``OTEL_EXPORTER_OTLP_*`` environment; :func:`configure`), so it costs nothing off.
Semantic conventions: https://opentelemetry.io/docs/specs/semconv/gen-ai/ (spans,
metrics) and the W3C Trace Context recommendation (https://www.w3.org/TR/trace-context/).
"""

from __future__ import annotations

import os
import re
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from chaosstream._version import __version__
from chaosstream.faults.base import FaultEvent
from chaosstream.integrations.metrics import PathLabels
from chaosstream.integrations.otlp import (
    STATUS_ERROR,
    AttrValue,
    EventRecord,
    Histogram,
    MetricData,
    OtlpExporter,
    Parent,
    SpanRecord,
    batch_from_env,
    endpoint_from_env,
    metric_interval_from_env,
    parse_traceparent,
)
from chaosstream.proxy.record import Body, Exchange
from chaosstream.proxy.scopes import Scope
from chaosstream.proxy.server import ChaosProxy

__all__ = [
    "FAULT_EVENT",
    "ProxyTelemetry",
    "Usage",
    "configure",
    "describe",
    "parent_of",
    "request_model",
    "sdk_only",
    "sdk_span",
    "span_record",
    "usage",
]

FAULT_EVENT = "chaosstream.fault"
"""The name of the span event added per fault that fired."""

# The W3C trace context only: the proxy relays the headers as they came, so
# it must read exactly what it relays (OTEL_PROPAGATORS would not change that).
# As opentelemetry-api's TraceContextTextMapPropagator: a longer tracestate is ignored.
_MAX_TRACESTATE = 512

# Our wire format -> gen_ai.provider.name (the GenAI conventions' well-known values;
# "ollama" is not one of them, and a custom value is allowed). No provider for the
# AI SDK UI stream: it is an app's own route, whatever model is behind it.
_PROVIDERS = {
    "openai": "openai",
    "openai-responses": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "ollama": "ollama",
}
# Usage keys per format, as each API names them (input, output).
_USAGE_KEYS = {
    "openai": (b'"prompt_tokens"', b'"completion_tokens"'),
    "openai-responses": (b'"input_tokens"', b'"output_tokens"'),
    "anthropic": (b'"input_tokens"', b'"output_tokens"'),
    "gemini": (b'"promptTokenCount"', b'"candidatesTokenCount"'),
    "ollama": (b'"prompt_eval_count"', b'"eval_count"'),
}
# Usage comes last (OpenAI's include_usage chunk, Anthropic's message_delta,
# Gemini's last chunk, Ollama's done line, Responses' response.completed, whose
# usage follows its output); Anthropic's input count may be only in the first
# event. A few packed blocks of the recorded body each (record.PACK_BLOCK): unpacking
# a long body whole cost 0.5 ms per 2,000-event stream, 16 KB of it about 7 us.
_TAIL_BYTES = 16 * 1024
_NUMBER = re.compile(rb"\s*:\s*(\d{1,12})")
# A key of a JSON object: inside a JSON string a quote is escaped, so `"model":"`
# matches only a real key (a tool schema's {"model": {...}} has no string value).
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_PATH_MODEL = re.compile(r"/models?/([^/:]{1,200})")
_MAX_MODEL_BODY = 4 * 1024 * 1024
# The GenAI conventions' advised buckets (gen_ai.server.* metrics).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
# Outcomes that mean a stream started and did not reach its own end (as metrics.py).
INTERRUPTED = frozenset({"fault", "upstream_error", "client_gone"})


class Usage:
    """Token counts a response body reported; None where it reported none."""

    __slots__ = ("input_tokens", "output_tokens")

    def __init__(self, input_tokens: int | None, output_tokens: int | None) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


def _last_number(data: bytes, key: bytes) -> int | None:
    at = data.rfind(key)
    while at >= 0:
        m = _NUMBER.match(data, at + len(key))
        if m is not None:
            return int(m.group(1))
        at = data.rfind(key, 0, at)  # e.g. "output_tokens": null, an earlier one counts
    return None


def usage(body: bytes | Body, provider: str) -> Usage | None:
    """The usage the body of wire format ``provider`` reported (its last, cumulative counts).

    Reads the body's last 16 KB and, for Anthropic's input count in
    ``message_start``, its first 16 KB: ``rfind`` per key, no parse. A recorded
    :class:`~chaosstream.proxy.record.Body` unpacks only those blocks. None for
    a format with no usage.
    """
    keys = _USAGE_KEYS.get(provider)
    if keys is None:
        return None
    tail = body.tail(_TAIL_BYTES) if isinstance(body, Body) else body[-_TAIL_BYTES:]
    if not tail:
        return None
    # Both keys end alike (_tokens", TokenCount", eval_count"): one scan tells a
    # body with no usage (an OpenAI stream without include_usage) from one with some.
    # rfind, not `in`: on 10 KB of SSE it took 1 us, the forward search 5 us.
    found: list[int | None] = [None, None]
    if tail.rfind(keys[0][-7:]) >= 0:
        found = [_last_number(tail, key) for key in keys]
    if found[0] is None and provider == "anthropic" and len(tail) == _TAIL_BYTES:
        # Only Anthropic reports the input count in its first event alone (message_start);
        # the others report both counts together at the end. (py-spy: scanning every
        # long body's head too was most of the work thread's time on 200-event streams.)
        head = body.head(_TAIL_BYTES) if isinstance(body, Body) else body[:_TAIL_BYTES]
        found[0] = _last_number(head, keys[0])
    if found[0] is None and found[1] is None:
        return None
    return Usage(found[0], found[1])


def request_model(ex: Exchange) -> str | None:
    """``gen_ai.request.model``: the body's ``model``, or the path's (Gemini, Bedrock)."""
    if ex.provider == "gemini" or "/model" in ex.path:
        m = _PATH_MODEL.search(ex.path)
        if m is not None:
            return m.group(1)
    body = ex.request_body
    if body[:1] == b"{" and len(body) <= _MAX_MODEL_BODY:
        found = _MODEL.search(body)
        if found is not None:
            return found.group(1).decode("utf-8", "replace")
    return None


def _operation(ex: Exchange) -> str | None:
    """``gen_ai.operation.name`` (chat, generate_content, text_completion, embeddings)."""
    if ex.provider == "gemini":
        return "generate_content"
    if ex.provider == "ollama" and ex.path.endswith("/api/generate"):
        return "text_completion"
    if ex.provider in _PROVIDERS or ex.provider == "ui-message-stream":
        return "chat"
    path = ex.path.rstrip("/")
    if path.endswith("/embeddings"):
        return "embeddings"
    return None


def describe(f: FaultEvent) -> str:
    """One line for a span's status: ``chaosstream disconnect: reset after 12 events, ...``."""
    why = f" ({f.trigger})" if f.trigger else ""
    detail = f"; {f.detail}" if f.detail else ""
    return (
        f"chaosstream {f.type}: {f.action} after {f.events} events, {f.bytes} bytes, "
        f"{f.at_ms:.0f} ms{why}{detail}"
    )


def _error_type(ex: Exchange) -> str | None:
    """``error.type`` of a failed exchange (low cardinality), None when it did not fail."""
    if ex.outcome == "fault":
        return ex.faults[-1].type if ex.faults else "fault"
    if ex.outcome == "refused" or (ex.status is not None and ex.status >= 400):
        return str(ex.status)
    if ex.outcome in ("upstream_error", "client_gone"):
        return ex.outcome
    return None


def _parent(value: str, state: str | None) -> Parent | None:
    """The client's W3C context from its ``traceparent`` and headers, or None (invalid).

    Validation as the SDK's TraceContextTextMapPropagator (first header of each
    name); the tracestate is parsed by the API's ``TraceState.from_header`` (an
    invalid list is dropped whole) and kept as its canonical header value.
    """
    parent = parse_traceparent(value)
    if parent is None:
        return None
    if state is not None and len(state) <= _MAX_TRACESTATE:
        items = TraceState.from_header([state]).items()
        if items:
            return (*parent[:3], ",".join(f"{k}={v}" for k, v in items))
    return parent


def parent_of(ex: Exchange) -> Parent | None:
    """The W3C parent of ``ex``'s span: its client's trace context, or None (none, invalid)."""
    return None if ex.traceparent is None else _parent(ex.traceparent, ex.tracestate)


_ATTRIBUTE_SETS: dict[tuple[Any, ...], dict[str, AttrValue]] = {}
_FAULT_SETS: dict[tuple[Any, ...], dict[str, AttrValue]] = {}
_SETS_LIMIT = 4096  # distinct sets kept; a path with ids in it must not grow them forever


def _attributes(key: tuple[Any, ...]) -> dict[str, AttrValue]:
    """A span's low-cardinality attributes from their ``_record`` key."""
    (profile, seed, scope, provider, operation, model, outcome, fmt, faults, stream, method,
     path, status, error) = key  # fmt: skip
    attrs: dict[str, AttrValue] = {"chaosstream.profile": profile}
    if operation is not None:
        attrs["gen_ai.operation.name"] = operation
    if provider is not None:
        attrs["gen_ai.provider.name"] = provider
    if model is not None:
        attrs["gen_ai.request.model"] = model
    if provider is not None:
        # The older name, still what many backends read (spans only: metrics stay lean).
        attrs["gen_ai.system"] = provider
    attrs["chaosstream.seed"] = seed
    attrs["chaosstream.outcome"] = outcome
    attrs["chaosstream.format"] = fmt
    attrs["chaosstream.faults"] = faults
    if scope is not None:
        attrs["chaosstream.scope"] = scope
    attrs["gen_ai.request.stream"] = stream
    attrs["http.request.method"] = method
    attrs["url.path"] = path
    if status is not None:
        attrs["http.response.status_code"] = status
    if error is not None:
        attrs["error.type"] = error
    return attrs


def _fault_event(f: FaultEvent, start_ns: int) -> EventRecord:
    key = (f.type, f.action, f.index, f.trigger, f.detail)
    attrs = _FAULT_SETS.get(key)
    if attrs is None:
        if len(_FAULT_SETS) >= _SETS_LIMIT:
            _FAULT_SETS.clear()
        attrs = _FAULT_SETS[key] = {
            "chaosstream.fault.type": f.type,
            "chaosstream.fault.action": f.action,
            "chaosstream.fault.index": f.index,
            "chaosstream.fault.trigger": f.trigger,
            "chaosstream.fault.detail": f.detail,
        }
    measured: dict[str, AttrValue] = {
        "chaosstream.fault.events": f.events,
        "chaosstream.fault.bytes": f.bytes,
        "chaosstream.fault.at_ms": round(f.at_ms, 1),
    }
    return EventRecord(FAULT_EVENT, start_ns + int(f.at_ms * 1e6), attrs, measured, key=key)


def span_record(
    ex: Exchange,
    profile: str,
    seed: int,
    scope: str | None = None,
    parent: Parent | None = None,
    path: PathLabels | None = None,
) -> SpanRecord:
    """The span of one finished exchange, in plain values (no OpenTelemetry object).

    Both sinks take it: the SDK path (a user's ``TracerProvider``) through the API,
    and the lean OTLP exporter (:mod:`chaosstream.integrations.otlp`).
    """
    provider = _PROVIDERS.get(ex.provider)
    operation = _operation(ex)
    model = request_model(ex) if operation is not None else None
    found = usage(ex.upstream_chunks, ex.provider) if provider is not None else None
    return _record(ex, profile, seed, scope, parent, path, provider, operation, model, found)


def _record(
    ex: Exchange,
    profile: str,
    seed: int,
    scope: str | None,
    parent: Parent | None,
    path: PathLabels | None,
    provider: str | None,
    operation: str | None,
    model: str | None,
    found: Usage | None,
) -> SpanRecord:
    error = _error_type(ex)
    # The low-cardinality attributes are a function of these: made once per distinct
    # set (a tuple and a lookup, not 15 dict stores), and the key names the set for
    # the exporter's cache of encoded bytes.
    key = (profile, seed, scope, provider, operation, model, ex.outcome, ex.provider,
           len(ex.faults), ex.stream, ex.method, ex.path, ex.status, error)  # fmt: skip
    attrs = _ATTRIBUTE_SETS.get(key)
    if attrs is None:
        if len(_ATTRIBUTE_SETS) >= _SETS_LIMIT:
            _ATTRIBUTE_SETS.clear()
        attrs = _ATTRIBUTE_SETS[key] = _attributes(key)
    # Per exchange: kept apart so the exporter encodes the repeating set above once.
    measured: dict[str, AttrValue] = {
        "chaosstream.exchange": ex.id,
        "chaosstream.bytes": ex.bytes_out,
    }
    if ex.first_byte is not None:
        measured["gen_ai.response.time_to_first_chunk"] = ex.first_byte - ex.started
    if found is not None:
        if found.input_tokens is not None:
            measured["gen_ai.usage.input_tokens"] = found.input_tokens
        if found.output_tokens is not None:
            measured["gen_ai.usage.output_tokens"] = found.output_tokens
    if operation is not None:
        # The GenAI conventions' span name: "{gen_ai.operation.name} {gen_ai.request.model}".
        name = f"{operation} {model}" if model else operation
    else:
        name = f"{ex.method} {(path or PathLabels())(ex.path)}"
    start = int(ex.wall * 1e9)
    end = start + int(max(0.0, (ex.ended or ex.started) - ex.started) * 1e9)
    events = [_fault_event(f, start) for f in ex.faults]
    record = SpanRecord(name, parent, start, end, attrs, events, measured=measured, key=key)
    if error is not None:
        record.status_code = STATUS_ERROR
        if ex.faults and ex.outcome in ("fault", "refused"):
            record.status_message = describe(ex.faults[-1])
        else:
            record.status_message = ex.error or f"{ex.outcome}, status {ex.status}"
    return record


def sdk_span(tracer: Tracer, record: SpanRecord) -> None:
    """Make ``record`` a span of ``tracer`` (the API: a user's SDK or any provider)."""
    context = Context()
    if record.parent is not None:
        trace_id, span_id, flags, state = record.parent
        parent = SpanContext(
            int.from_bytes(trace_id, "big"),
            int.from_bytes(span_id, "big"),
            is_remote=True,
            trace_flags=TraceFlags(flags),
            trace_state=TraceState.from_header([state]) if state else None,
        )
        context = set_span_in_context(NonRecordingSpan(parent), context)
    span = tracer.start_span(
        record.name,
        context=context,
        kind=SpanKind.SERVER,
        attributes=record.all_attributes(),
        start_time=record.start_ns,
    )
    for ev in record.events:
        span.add_event(ev.name, ev.all_attributes(), timestamp=ev.time_ns)
    if record.status_code == STATUS_ERROR:
        span.set_status(Status(StatusCode.ERROR, record.status_message))
    span.end(end_time=record.end_ns)


# The instruments: (name, unit, description[, advised buckets]), for both metric paths.
HISTOGRAMS = (
    (
        "gen_ai.server.time_to_first_token",
        "s",
        "Time from the request to the first byte of a successful response sent to the client.",
        TTFT_BUCKETS,
    ),
    (
        "gen_ai.server.time_per_output_token",
        "s",
        "Time per output token after the first, on completed answers whose body reports usage.",
        TPOT_BUCKETS,
    ),
    (
        "gen_ai.server.request.duration",
        "s",
        "Time from the request to the last byte sent to the client (the stream's duration).",
        DURATION_BUCKETS,
    ),
)
COUNTERS = (
    ("chaosstream.exchanges", "{exchange}", "Exchanges through the proxy by outcome."),
    (
        "chaosstream.faults.fired",
        "{fault}",
        "Faults that fired, once per fault per exchange, by fault type.",
    ),
    ("chaosstream.streams", "{stream}", "Streaming exchanges that finished."),
    (
        "chaosstream.stream.interruptions",
        "{stream}",
        "Streams that ended early (fault, upstream error, client gone), by fault type.",
    ),
)
OPEN_STREAMS = (
    "chaosstream.streams.open",
    "{stream}",
    "Streaming exchanges in flight through the proxy.",
)
AttrKey = tuple[tuple[str, AttrValue], ...]


class _SdkHistogram:
    """An SDK histogram behind the lean one's ``point(key)``."""

    def __init__(self, meter: Any, name: str, unit: str, text: str, bounds: tuple[float, ...]):
        self.h = meter.create_histogram(
            name, unit, text, explicit_bucket_boundaries_advisory=bounds
        )

    def point(self, key: AttrKey) -> Callable[[float], None]:
        return partial(self.h.record, attributes=dict(key))


# Counter cells to add one to; duration, TTFT and TPOT adders (None: not recorded).
_Plan = tuple[
    list[list[int]],
    Callable[[float], None],
    Callable[[float], None] | None,
    Callable[[float], None] | None,
]


class ProxyTelemetry:
    """Spans and metrics for the proxies attached to it.

    Either SDK providers (or any API ones) -- ``tracer_provider``,
    ``meter_provider``, each may be None -- or a lean ``exporter``
    (:class:`~chaosstream.integrations.otlp.OtlpExporter`, as :func:`configure`
    makes it) for a signal the providers leave out. :meth:`shutdown` flushes and
    stops what this object made (``owned``).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        owned: bool = False,
        exporter: OtlpExporter | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.exporter = exporter
        self.owned = owned
        #: Where spans and metrics go, for the command's banner.
        self.where = "the given providers"
        self.tracer = (
            tracer_provider.get_tracer("chaosstream", __version__)
            if tracer_provider is not None
            else None
        )
        #: Spans go to the lean exporter (no SDK tracer given, the exporter takes spans).
        self.lean_spans = (
            self.tracer is None and exporter is not None and exporter.traces is not None
        )
        self._proxies: list[ChaosProxy] = []
        self._unhook: list[Callable[[], None]] = []
        self.path = PathLabels()
        # The counters are tallied here, a dict increment per exchange, and read at
        # collection time: each synchronous SDK add() cost about 10 us of attribute
        # checks and hashing, the tally well under 1 us.
        #: Cumulative counts per (counter name, attribute items), each in a one-item list.
        self.tallies: dict[tuple[str, AttrKey], list[int]] = {}
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self.histograms: list[Histogram] | list[_SdkHistogram] = []
        if meter_provider is not None:
            meter = meter_provider.get_meter("chaosstream", __version__)
            self.histograms = [_SdkHistogram(meter, *spec) for spec in HISTOGRAMS]
            for name, unit, text in COUNTERS:
                meter.create_observable_counter(name, [self._observe_counts(name)], unit, text)
            meter.create_observable_up_down_counter(
                OPEN_STREAMS[0], [self._observe_open], *OPEN_STREAMS[1:]
            )
        elif exporter is not None and exporter.metrics is not None:
            # The lean path: histograms tallied with bisect (the SDK's record() was
            # about 4 us each, three per exchange), all read on the exporter's thread.
            self.histograms = [Histogram(*spec) for spec in HISTOGRAMS]
            exporter.collect = self.collect
        self._metrics = bool(self.histograms)
        # Only the lean exporter: every exchange's work runs on its work thread (one
        # writer of the metric cells). With an SDK provider, all of it on the loop.
        self._work = (
            exporter if exporter is not None and self.tracer is None and meter_provider is None
            else None
        )  # fmt: skip
        if self._work is not None:
            self._work.process = self._deferred

    # -- wiring ------------------------------------------------------------

    def attach(self, proxy: ChaosProxy) -> None:
        """Trace ``proxy``'s exchanges (its scopes' too). Call before ``proxy.start()``."""

        def plain(ex: Exchange) -> None:
            self.observe(ex, proxy.profile.name, proxy.seed)

        def scoped(scope: Scope, ex: Exchange) -> None:
            self.observe(ex, scope.profile.name, scope.seed, scope.name)

        proxy.recorder.listeners.append(plain)
        proxy.scopes.listeners.append(scoped)
        self._proxies.append(proxy)

        def unhook() -> None:
            if plain in proxy.recorder.listeners:
                proxy.recorder.listeners.remove(plain)
            if scoped in proxy.scopes.listeners:
                proxy.scopes.listeners.remove(scoped)
            if proxy in self._proxies:
                self._proxies.remove(proxy)

        self._unhook.append(unhook)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Flush and shut down what this object made (within ``timeout_s`` for the lean
        exporter); stop listening."""
        if self.owned:
            # First: the last collection still reads the attached proxies' open streams.
            for provider in (self.tracer_provider, self.meter_provider):
                stop = getattr(provider, "shutdown", None)
                if stop is not None:
                    stop()
            if self.exporter is not None:
                self.exporter.shutdown(timeout_s)
        for unhook in self._unhook:
            unhook()
        self._unhook.clear()

    # -- collection (the exporter's thread) ---------------------------------------------

    def open_streams(self) -> list[tuple[AttrKey, int]]:
        """Streaming exchanges in flight, per profile, as (attributes, count)."""
        # list() of a dict's values is one step under the GIL, as the Prometheus
        # collector reads it.
        now: Tally[str] = Tally()
        for proxy in list(self._proxies):
            now[proxy.profile.name] += sum(
                1 for ex in list(proxy.recorder.open.values()) if ex.stream
            )
            for scope in proxy.scopes.all():
                open_ = list(scope.recorder.open.values())
                now[scope.profile.name] += sum(1 for ex in open_ if ex.stream)
        return [((("chaosstream.profile", name),), n) for name, n in sorted(now.items())]

    def counts(self, name: str) -> list[tuple[AttrKey, int]]:
        """Counter ``name``'s cumulative values per attribute set."""
        return [(k, cell[0]) for (m, k), cell in list(self.tallies.items()) if m == name]

    def collect(self) -> list[MetricData]:
        """Every metric now, for the lean exporter."""
        out = [
            MetricData(h.name, h.unit, h.description, "histogram", histogram=h)
            for h in self.histograms
            if isinstance(h, Histogram)
        ]
        for name, unit, text in COUNTERS:
            out.append(MetricData(name, unit, text, "counter", self.counts(name)))
        out.append(MetricData(*OPEN_STREAMS, "updown", self.open_streams()))
        return out

    def _observe_open(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, dict(k)) for k, n in self.open_streams()]

    def _observe_counts(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def read(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(n, dict(k)) for k, n in self.counts(name)]

        return read

    # -- per exchange -------------------------------------------------------------

    def observe(self, ex: Exchange, profile: str, seed: int, scope: str | None = None) -> None:
        """One finished exchange: its span (with an event per fault) and its metric points.

        With only the lean exporter (no SDK provider), the loop just queues the
        exchange with its profile, seed, scope and W3C parent (what may change or is
        only known here); the exporter's work thread makes the rest.
        """
        if self._work is not None:
            self._work.defer((ex, profile, seed, scope))
            return
        self._observe(ex, profile, seed, scope, parent_of(ex))

    def _deferred(self, item: tuple[Exchange, str, int, str | None]) -> None:
        ex, profile, seed, scope = item
        self._observe(ex, profile, seed, scope, parent_of(ex))

    def _observe(
        self, ex: Exchange, profile: str, seed: int, scope: str | None, parent: Parent | None
    ) -> None:
        # A finished exchange's fields no longer change; a compaction may pack its
        # bodies meanwhile, which Body.tail reads all the same.
        provider = _PROVIDERS.get(ex.provider)
        operation = _operation(ex)
        model = request_model(ex) if operation is not None else None
        found = usage(ex.upstream_chunks, ex.provider) if provider is not None else None
        if self.tracer is not None or self.lean_spans:
            record = _record(
                ex, profile, seed, scope, parent, self.path, provider, operation, model, found
            )
            if self.tracer is not None:
                sdk_span(self.tracer, record)
            elif self.exporter is not None:
                self.exporter.add_span(record)
        if self._metrics:
            error = _error_type(ex)
            ok = ex.status is not None and ex.status < 400
            faults = tuple([f.type for f in ex.faults])
            plan_key = (profile, operation, provider, model, ex.outcome, ok, ex.stream, error,
                        faults)  # fmt: skip
            plan = self._plans.get(plan_key)
            if plan is None:
                if len(self._plans) >= _SETS_LIMIT:
                    self._plans.clear()
                plan = self._plans[plan_key] = self._plan(plan_key)
            cells, duration, ttft, tpot = plan
            for cell in cells:
                cell[0] += 1
            if ex.ended is not None:
                duration(ex.ended - ex.started)
            if ttft is not None and ex.first_byte is not None:
                ttft(ex.first_byte - ex.started)
                n = found.output_tokens if found is not None else None
                if (
                    tpot is not None
                    and n is not None
                    and n >= 2
                    and ex.outcome == "complete"
                    and ex.ended is not None
                ):
                    tpot((ex.ended - ex.first_byte) / (n - 1))

    def _plan(self, plan_key: tuple[Any, ...]) -> _Plan:
        """Where one kind of exchange counts: its counter cells and histogram points.

        Made once per distinct (attributes, outcome, status class, stream, error, fault
        types); each exchange then adds to them without building or hashing the
        attribute sets again.
        """
        profile, operation, provider, model, outcome, ok, stream, error, faults = plan_key
        key: AttrKey = (("chaosstream.profile", profile),)
        if operation is not None:
            key += (("gen_ai.operation.name", operation),)
        if provider is not None:
            key += (("gen_ai.provider.name", provider),)
        if model is not None:
            key += (("gen_ai.request.model", model),)
        cells = [self._cell("chaosstream.exchanges", (*key, ("chaosstream.outcome", outcome)))]
        for fault_type in sorted(set(faults)):
            fired = (*key, ("chaosstream.fault.type", fault_type))
            cells.append(self._cell("chaosstream.faults.fired", fired))
        if stream and ok:
            cells.append(self._cell("chaosstream.streams", key))
            if outcome in INTERRUPTED:
                kind = faults[-1] if outcome == "fault" and faults else "none"
                cut = (*key, ("chaosstream.fault.type", kind), ("chaosstream.outcome", outcome))
                cells.append(self._cell("chaosstream.stream.interruptions", cut))
        ttft, tpot, duration = self.histograms
        with_error = key if error is None else (*key, ("error.type", error))
        if not ok:
            return cells, duration.point(with_error), None, None
        return cells, duration.point(with_error), ttft.point(key), tpot.point(key)

    def _cell(self, name: str, key: AttrKey) -> list[int]:
        cell = self.tallies.get((name, key))
        if cell is None:
            cell = self.tallies[name, key] = [0]
        return cell


def _exporter_choice(env: Mapping[str, str], name: str) -> bool:
    """Is the ``OTEL_{name}_EXPORTER`` signal on (otlp, the default) or off (none)?"""
    value = env.get(f"OTEL_{name}_EXPORTER", "otlp").strip().lower() or "otlp"
    if value not in ("otlp", "none"):
        raise ValueError(
            f"OTEL_{name}_EXPORTER={value[:40]!r}: chaosstream exports with otlp (or none)"
        )
    return value == "otlp"


# Settings only the SDK's pipeline honours: when one is set, that signal takes the
# SDK path (same output, the SDK's cost) instead of the lean exporter.
_SDK_ONLY_TRACES: tuple[str, ...] = (
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
)
_SDK_ONLY_METRICS: tuple[str, ...] = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_METRICS_CREDENTIAL_PROVIDER",
)


def sdk_only(env: Mapping[str, str], signal: str) -> str | None:
    """The first setting in ``env`` that only the SDK honours for ``signal`` (traces or
    metrics), or None: the lean exporter serves it."""
    if signal == "traces":
        sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
        if sampler not in ("", "parentbased_always_on"):
            return "OTEL_TRACES_SAMPLER"
        names = _SDK_ONLY_TRACES
    else:
        temporality = env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "")
        if temporality.strip().lower() not in ("", "cumulative"):
            return "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
        aggregation = env.get("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "")
        if aggregation.strip().lower() not in ("", "explicit_bucket_histogram"):
            return "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"
        names = _SDK_ONLY_METRICS
    return next((name for name in names if env.get(name, "").strip()), None)


def configure(env: Mapping[str, str] | None = None) -> ProxyTelemetry:
    """Telemetry exporting over OTLP/HTTP as the standard environment says.

    The lean exporter (:mod:`chaosstream.integrations.otlp`) reads
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``http://localhost:4318``), the
    per-signal endpoints, headers, timeout, compression and certificates,
    ``OTEL_BSP_*`` and ``OTEL_METRIC_EXPORT_INTERVAL``/``_TIMEOUT``; the SDK's
    resource reads ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
    (``service.name`` is ``chaosstream`` when neither names one).
    ``OTEL_TRACES_EXPORTER``/``OTEL_METRICS_EXPORTER`` may be ``none``. A setting
    only the SDK honours (:func:`sdk_only`: a sampler, span limits, delta
    temporality...) sends that signal through the SDK instead, with the same
    endpoint settings. Bad settings raise :class:`ValueError` naming the variable.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    env = os.environ if env is None else env
    for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):  # fmt: skip
        protocol = env.get(var, "").strip()
        if protocol and protocol != "http/protobuf":
            raise ValueError(
                f"{var}={protocol[:40]!r}: chaosstream exports OTLP over http/protobuf only "
                "(a Collector takes both on ports 4317 and 4318)"
            )
    traces = endpoint_from_env(env, "traces") if _exporter_choice(env, "TRACES") else None
    metrics = endpoint_from_env(env, "metrics") if _exporter_choice(env, "METRICS") else None
    batch = batch_from_env(env)
    interval, timeout = metric_interval_from_env(env)
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "chaosstream"}))
    tracer_provider = meter_provider = None
    if traces is not None and sdk_only(env, "traces"):
        tracer_provider = _sdk_tracer_provider(resource, traces, batch)
        traces = None
    if metrics is not None and sdk_only(env, "metrics"):
        meter_provider = _sdk_meter_provider(resource, metrics, interval, timeout)
        metrics = None
    exporter = None
    if traces is not None or metrics is not None:
        # Resource attributes from the environment are strings; a detector's list is left out.
        scalar = (str, bool, int, float)
        attrs = {k: v for k, v in resource.attributes.items() if isinstance(v, scalar)}
        exporter = OtlpExporter(
            traces, metrics, attrs, ("chaosstream", __version__), batch, interval, timeout
        )
    telemetry = ProxyTelemetry(tracer_provider, meter_provider, owned=True, exporter=exporter)
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    on = (
        ("spans", traces is not None or tracer_provider is not None),
        ("metrics", metrics is not None or meter_provider is not None),
    )
    signals = " and ".join(name for name, yes in on if yes)
    service = resource.attributes.get(SERVICE_NAME)
    telemetry.where = f"{signals or 'nothing (both exporters none)'} over OTLP/HTTP to {base} "
    telemetry.where += f"as service {service}"
    return telemetry


def _sdk_tracer_provider(resource: Any, traces: Any, batch: Any) -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = SdkTracerProvider(resource=resource)
    exporter = OTLPSpanExporter(
        traces.url,
        traces.certificate,
        traces.client_key,
        traces.client_certificate,
        traces.headers,
        traces.timeout_s,
        Compression(traces.compression),
    )
    # Batched on the SDK's own thread: a slow collector never stalls the event loop.
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=batch.queue_size,
            schedule_delay_millis=batch.delay_s * 1000,
            max_export_batch_size=batch.batch_size,
            export_timeout_millis=batch.export_timeout_s * 1000,
        )
    )
    return provider


def _sdk_meter_provider(
    resource: Any, metrics: Any, interval: float, timeout: float
) -> MeterProvider:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter = OTLPMetricExporter(
        metrics.url,
        metrics.certificate,
        metrics.client_key,
        metrics.client_certificate,
        metrics.headers,
        metrics.timeout_s,
        Compression(metrics.compression),
    )
    reader = PeriodicExportingMetricReader(exporter, interval * 1000, timeout * 1000)
    return SdkMeterProvider(resource=resource, metric_readers=[reader])
