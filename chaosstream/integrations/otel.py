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

- an aiohttp middleware reads ``traceparent``/``tracestate`` once per request
  into a context variable; the proxy forwards both headers upstream unchanged
  (they are end-to-end headers), so a model server's spans join the same trace
  as siblings of ours, both children of the client's span;
- a recorder listener (and a scope listener) builds the span and the metric
  points once, when the exchange ends, with the times the recorder took: never
  per chunk, and no parse of the body (usage is found with ``rfind`` in the
  body's tail; the model name with one regex over the request).

Nothing here is imported unless telemetry is on (``--otel`` or the
``OTEL_EXPORTER_OTLP_*`` environment; :func:`configure`), so it costs nothing off.
Semantic conventions: https://opentelemetry.io/docs/specs/semconv/gen-ai/ (spans,
metrics) and the W3C Trace Context recommendation (https://www.w3.org/TR/trace-context/).
"""

from __future__ import annotations

import os
import re
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from chaosstream._version import __version__
from chaosstream.faults.base import FaultEvent
from chaosstream.integrations.metrics import PathLabels
from chaosstream.proxy.record import Exchange
from chaosstream.proxy.scopes import Scope
from chaosstream.proxy.server import ChaosProxy

__all__ = [
    "FAULT_EVENT",
    "ProxyTelemetry",
    "Usage",
    "configure",
    "describe",
    "request_model",
    "usage",
]

FAULT_EVENT = "chaosstream.fault"
"""The name of the span event added per fault that fired."""

# The W3C trace context only: the proxy relays the headers as they came, so
# it must read exactly what it relays (OTEL_PROPAGATORS would not change that).
_PROPAGATOR = TraceContextTextMapPropagator()
_PARENT: ContextVar[Context | None] = ContextVar("chaosstream_otel_parent", default=None)

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
# Gemini's last chunk, Ollama's done line, Responses' response.completed).
_TAIL_BYTES = 64 * 1024
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


def usage(body: bytes, provider: str) -> Usage | None:
    """The usage the body of wire format ``provider`` reported (its last, cumulative counts).

    Reads the body's tail and, for Anthropic's input count in ``message_start``,
    its head: two ``rfind`` per key, no parse. None for a format with no usage.
    """
    keys = _USAGE_KEYS.get(provider)
    if keys is None or not body:
        return None
    tail = body[-_TAIL_BYTES:]
    found = [_last_number(tail, key) for key in keys]
    if found[0] is None and len(body) > _TAIL_BYTES:
        found[0] = _last_number(body[:_TAIL_BYTES], keys[0])
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


def _fault_attributes(f: FaultEvent) -> dict[str, Any]:
    return {
        "chaosstream.fault.type": f.type,
        "chaosstream.fault.action": f.action,
        "chaosstream.fault.index": f.index,
        "chaosstream.fault.events": f.events,
        "chaosstream.fault.bytes": f.bytes,
        "chaosstream.fault.at_ms": round(f.at_ms, 1),
        "chaosstream.fault.trigger": f.trigger,
        "chaosstream.fault.detail": f.detail,
    }


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


@web.middleware
async def trace_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Keep the request's W3C trace context for the span its exchange gets when it ends.

    The proxy's handler records the exchange's end (and so calls the listeners)
    inside this await, in the same task: the context variable is visible there.
    """
    if "traceparent" not in request.headers:
        return await handler(request)
    token = _PARENT.set(_PROPAGATOR.extract(request.headers))
    try:
        return await handler(request)
    finally:
        _PARENT.reset(token)


class ProxyTelemetry:
    """Spans and metrics for the proxies attached to it; either provider may be None.

    ``tracer_provider`` and ``meter_provider`` are SDK providers (or any API
    ones); :meth:`shutdown` flushes and stops them when ``owned`` (as
    :func:`configure` makes them).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        owned: bool = False,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.owned = owned
        #: Where spans and metrics go, for the command's banner.
        self.where = "the given providers"
        self.tracer = (
            tracer_provider.get_tracer("chaosstream", __version__)
            if tracer_provider is not None
            else None
        )
        self._proxies: list[ChaosProxy] = []
        self._unhook: list[Callable[[], None]] = []
        self.path = PathLabels()
        if meter_provider is None:
            self._metrics = False
            return
        self._metrics = True
        meter = meter_provider.get_meter("chaosstream", __version__)
        self.ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            "s",
            "Time from the request to the first byte of a successful response sent to the client.",
            explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
        )
        self.tpot = meter.create_histogram(
            "gen_ai.server.time_per_output_token",
            "s",
            "Time per output token after the first, on completed answers whose body reports usage.",
            explicit_bucket_boundaries_advisory=TPOT_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.server.request.duration",
            "s",
            "Time from the request to the last byte sent to the client (the stream's duration).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        # The counters are tallied here, a dict increment per exchange, and read by
        # observable counters at collection time: each synchronous add() costs the
        # SDK about 10 us of attribute checks and hashing, the tally well under 1 us.
        #: Cumulative counts per (counter name, attribute items).
        self.tallies: Tally[tuple[str, tuple[tuple[str, Any], ...]]] = Tally()
        for name, unit, text in (
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
        ):
            meter.create_observable_counter(name, [self._counts(name)], unit, text)
        meter.create_observable_up_down_counter(
            "chaosstream.streams.open",
            [self._open_streams],
            "{stream}",
            "Streaming exchanges in flight through the proxy.",
        )

    # -- wiring ------------------------------------------------------------

    def attach(self, proxy: ChaosProxy) -> None:
        """Trace ``proxy``'s exchanges (its scopes' too). Call before ``proxy.start()``."""
        proxy.app.middlewares.append(trace_context)

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

    def shutdown(self) -> None:
        """Flush and shut the providers down when this object made them; stop listening."""
        if self.owned:
            # First: the last collection still reads the attached proxies' open streams.
            for provider in (self.tracer_provider, self.meter_provider):
                stop = getattr(provider, "shutdown", None)
                if stop is not None:
                    stop()
        for unhook in self._unhook:
            unhook()
        self._unhook.clear()

    def _open_streams(self, _options: CallbackOptions) -> Iterable[Observation]:
        # Read at collection time (the exporter's thread): list() of a dict's values
        # is one step under the GIL, as the Prometheus collector reads it.
        now: Tally[str] = Tally()
        for proxy in list(self._proxies):
            now[proxy.profile.name] += sum(
                1 for ex in list(proxy.recorder.open.values()) if ex.stream
            )
            for scope in proxy.scopes.all():
                open_ = list(scope.recorder.open.values())
                now[scope.profile.name] += sum(1 for ex in open_ if ex.stream)
        return [Observation(n, {"chaosstream.profile": name}) for name, n in sorted(now.items())]

    # -- per exchange -------------------------------------------------------------

    def observe(self, ex: Exchange, profile: str, seed: int, scope: str | None = None) -> None:
        """One finished exchange: its span (with an event per fault) and its metric points."""
        provider = _PROVIDERS.get(ex.provider)
        operation = _operation(ex)
        model = request_model(ex) if operation is not None else None
        base: dict[str, Any] = {"chaosstream.profile": profile}
        if operation is not None:
            base["gen_ai.operation.name"] = operation
        if provider is not None:
            base["gen_ai.provider.name"] = provider
        if model is not None:
            base["gen_ai.request.model"] = model
        error = _error_type(ex)
        found = usage(bytes(ex.upstream_chunks), ex.provider) if provider is not None else None
        if self.tracer is not None:
            self._span(ex, base, error, found, seed, scope, operation, model)
        if self._metrics:
            self._measure(ex, base, error, found)

    def _span(
        self,
        ex: Exchange,
        base: dict[str, Any],
        error: str | None,
        found: Usage | None,
        seed: int,
        scope: str | None,
        operation: str | None,
        model: str | None,
    ) -> None:
        assert self.tracer is not None
        attrs = dict(base)
        if "gen_ai.provider.name" in attrs:
            # The older name, still what many backends read (spans only: metrics stay lean).
            attrs["gen_ai.system"] = attrs["gen_ai.provider.name"]
        attrs["chaosstream.seed"] = seed
        attrs["chaosstream.outcome"] = ex.outcome
        attrs["chaosstream.exchange"] = ex.id
        attrs["chaosstream.format"] = ex.provider
        attrs["chaosstream.bytes"] = ex.bytes_out
        attrs["chaosstream.faults"] = len(ex.faults)
        if scope is not None:
            attrs["chaosstream.scope"] = scope
        attrs["gen_ai.request.stream"] = ex.stream
        attrs["http.request.method"] = ex.method
        attrs["url.path"] = ex.path
        if ex.status is not None:
            attrs["http.response.status_code"] = ex.status
        if ex.first_byte is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = ex.first_byte - ex.started
        if found is not None:
            if found.input_tokens is not None:
                attrs["gen_ai.usage.input_tokens"] = found.input_tokens
            if found.output_tokens is not None:
                attrs["gen_ai.usage.output_tokens"] = found.output_tokens
        if error is not None:
            attrs["error.type"] = error
        if operation is not None:
            # The GenAI conventions' span name: "{gen_ai.operation.name} {gen_ai.request.model}".
            name = f"{operation} {model}" if model else operation
        else:
            name = f"{ex.method} {self.path(ex.path)}"
        start = int(ex.wall * 1e9)
        end = start + int(max(0.0, (ex.ended or ex.started) - ex.started) * 1e9)
        parent = _PARENT.get()
        span = self.tracer.start_span(
            name,
            context=parent if parent is not None else Context(),
            kind=SpanKind.SERVER,
            attributes=attrs,
            start_time=start,
        )
        for f in ex.faults:
            span.add_event(FAULT_EVENT, _fault_attributes(f), timestamp=start + int(f.at_ms * 1e6))
        if error is not None:
            if ex.faults and ex.outcome in ("fault", "refused"):
                text = describe(ex.faults[-1])
            else:
                text = ex.error or f"{ex.outcome}, status {ex.status}"
            span.set_status(Status(StatusCode.ERROR, text))
        span.end(end_time=end)

    def _counts(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def read(_options: CallbackOptions) -> Iterable[Observation]:
            # The exporter's thread: list() of a dict's items is one step under the GIL.
            return [
                Observation(n, dict(k)) for (m, k), n in list(self.tallies.items()) if m == name
            ]

        return read

    def _measure(
        self, ex: Exchange, base: dict[str, Any], error: str | None, found: Usage | None
    ) -> None:
        tally = self.tallies
        key = tuple(base.items())
        tally["chaosstream.exchanges", (*key, ("chaosstream.outcome", ex.outcome))] += 1
        for fault_type in sorted({f.type for f in ex.faults}):
            tally["chaosstream.faults.fired", (*key, ("chaosstream.fault.type", fault_type))] += 1
        ok = ex.status is not None and ex.status < 400
        if ex.ended is not None:
            with_error = base if error is None else {**base, "error.type": error}
            self.duration.record(ex.ended - ex.started, with_error)
        if ok and ex.first_byte is not None:
            self.ttft.record(ex.first_byte - ex.started, base)
            n = found.output_tokens if found is not None else None
            if ex.outcome == "complete" and ex.ended is not None and n is not None and n >= 2:
                self.tpot.record((ex.ended - ex.first_byte) / (n - 1), base)
        if ex.stream and ok:
            tally["chaosstream.streams", key] += 1
            if ex.outcome in INTERRUPTED:
                kind = ex.faults[-1].type if ex.outcome == "fault" and ex.faults else "none"
                cut = (*key, ("chaosstream.fault.type", kind), ("chaosstream.outcome", ex.outcome))
                tally["chaosstream.stream.interruptions", cut] += 1


def _exporter_choice(env: Mapping[str, str], name: str) -> bool:
    """Is the ``OTEL_{name}_EXPORTER`` signal on (otlp, the default) or off (none)?"""
    value = env.get(f"OTEL_{name}_EXPORTER", "otlp").strip().lower() or "otlp"
    if value not in ("otlp", "none"):
        raise ValueError(
            f"OTEL_{name}_EXPORTER={value[:40]!r}: chaosstream exports with otlp (or none)"
        )
    return value == "otlp"


def configure(env: Mapping[str, str] | None = None) -> ProxyTelemetry:
    """Telemetry exporting over OTLP/HTTP as the standard environment says.

    The exporters read ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default
    ``http://localhost:4318``), the per-signal endpoints, headers, timeout and
    compression themselves; the resource reads ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` (``service.name`` is ``chaosstream`` when
    neither names one); ``OTEL_METRIC_EXPORT_INTERVAL`` paces metrics.
    ``OTEL_TRACES_EXPORTER``/``OTEL_METRICS_EXPORTER`` may be ``none``. Bad
    settings raise :class:`ValueError` with the variable's name.
    """
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if env is None else env
    for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):  # fmt: skip
        protocol = env.get(var, "").strip()
        if protocol and protocol != "http/protobuf":
            raise ValueError(
                f"{var}={protocol[:40]!r}: chaosstream exports OTLP over http/protobuf only "
                "(a Collector takes both on ports 4317 and 4318)"
            )
    traces = _exporter_choice(env, "TRACES")
    metrics = _exporter_choice(env, "METRICS")
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "chaosstream"}))
    tracer_provider = None
    if traces:
        tracer_provider = SdkTracerProvider(resource=resource)
        # Batched on the SDK's own thread: a slow collector never stalls the event loop.
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = None
    if metrics:
        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        meter_provider = SdkMeterProvider(resource=resource, metric_readers=[reader])
    telemetry = ProxyTelemetry(tracer_provider, meter_provider, owned=True)
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    signals = " and ".join(name for name, on in (("spans", traces), ("metrics", metrics)) if on)
    service = resource.attributes.get(SERVICE_NAME)
    telemetry.where = f"{signals or 'nothing (both exporters none)'} over OTLP/HTTP to {base} "
    telemetry.where += f"as service {service}"
    return telemetry
