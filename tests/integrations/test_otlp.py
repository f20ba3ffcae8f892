"""The lean OTLP/HTTP exporter: its bytes decode as opentelemetry-proto, and it never blocks.

The span it sends is compared with the one the SDK makes for the same exchange
(the SDK's own OTLP encoder on the SDK's in-memory span), on a real proxy and
mock; the transport runs against a threaded loopback receiver that can be
slow, fail or refuse.
"""

from __future__ import annotations

import asyncio
import gzip
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import format_span_id, format_trace_id

from chaosstream.faults.profile import load_profile
from chaosstream.integrations.otel import ProxyTelemetry
from chaosstream.integrations.otlp import (
    BatchSettings,
    Endpoint,
    EventRecord,
    Histogram,
    MetricData,
    OtlpExporter,
    SpanRecord,
    batch_from_env,
    encode_metrics,
    encode_spans,
    endpoint_from_env,
    parse_headers,
    parse_traceparent,
)
from chaosstream.mock import MockServer
from chaosstream.proxy.record import Exchange
from chaosstream.proxy.server import ChaosProxy

CHAT = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
SCOPE = ("chaosstream", "test")


class Receiver:
    """A threaded OTLP/HTTP receiver: answers ``statuses`` in turn (then 200), after ``delay``."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses: list[tuple[int, dict[str, str]]] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(receiver.delay)
                with receiver.lock:
                    status, headers = receiver.statuses.pop(0) if receiver.statuses else (200, {})
                    if status == 200:
                        receiver.bodies.append((self.path, dict(self.headers.items()), body))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[Any]:
        out = []
        for path, headers, body in self.bodies:
            if path == "/v1/traces":
                if headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = ExportTraceServiceRequest.FromString(body)
                out += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def exporter(
    url: str | None, metrics: str | None = None, timeout_s: float = 2.0, **batch: Any
) -> OtlpExporter:
    """A lean exporter to ``url`` (traces) and ``metrics``; batch settings as given."""
    settings = BatchSettings(**{"delay_s": 60.0, **batch})
    return OtlpExporter(
        Endpoint(f"{url}/v1/traces", timeout_s=timeout_s) if url else None,
        Endpoint(f"{metrics}/v1/metrics", timeout_s=timeout_s) if metrics else None,
        {"service.name": "otlp-test"},
        SCOPE,
        settings,
    )


def record(i: int = 0) -> SpanRecord:
    """A span record with an event, as the telemetry makes them."""
    event = EventRecord("chaosstream.fault", 1_000_500, {"chaosstream.fault.type": "disconnect"})
    return SpanRecord(
        f"chat m-{i % 3}", None, 1_000_000, 2_000_000, {"chaosstream.profile": "p"}, [event]
    )


def values(attributes: Any) -> dict[str, Any]:
    """KeyValues as {key: python value} (whichever AnyValue member is set)."""
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in attributes}


# -- the same span as the SDK's ---------------------------------------------------------


@pytest.fixture
async def both(
    mock: MockServer, receiver: Receiver
) -> AsyncIterator[tuple[ChaosProxy, InMemorySpanExporter, ProxyTelemetry]]:
    """A proxy traced twice: by the SDK in memory, and by the lean exporter to ``receiver``."""
    proxy = ChaosProxy(mock.url, load_profile("midstream-reset"), seed=7)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    sdk = ProxyTelemetry(provider)
    lean = ProxyTelemetry(exporter=exporter(receiver.url), owned=True)
    sdk.attach(proxy)
    lean.attach(proxy)
    await proxy.start()
    yield proxy, memory, lean
    await proxy.close()
    sdk.shutdown()
    await asyncio.to_thread(lean.shutdown)


@pytest.mark.parametrize("tracestate", [None, "vendor=a1,other=b2"])
async def test_the_lean_span_carries_what_the_sdk_span_does(
    both: tuple[ChaosProxy, InMemorySpanExporter, ProxyTelemetry],
    receiver: Receiver,
    tracestate: str | None,
) -> None:
    """Same exchange, both paths: name, ids, parent, kind, times, attributes, event, status."""
    proxy, memory, lean = both
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"traceparent": f"00-{trace_id}-{span_id}-01"}
    if tracestate:
        headers["tracestate"] = tracestate
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=headers) as resp,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # midstream-reset cuts request 1
    for _ in range(200):
        if proxy.recorder.exchanges and not proxy.recorder.open:
            break
        await asyncio.sleep(0.01)
    await asyncio.to_thread(lean.shutdown)
    (mine,) = receiver.spans()
    (sdk,) = (
        ExportTraceServiceRequest.FromString(
            sdk_encode(memory.get_finished_spans()).SerializeToString()
        )
        .resource_spans[0]
        .scope_spans[0]
        .spans
    )
    assert mine.trace_id.hex() == sdk.trace_id.hex() == trace_id
    assert mine.parent_span_id.hex() == sdk.parent_span_id.hex() == span_id
    assert len(mine.span_id) == 8 and mine.span_id != sdk.span_id  # each makes its own
    assert mine.trace_state == sdk.trace_state == (tracestate or "")
    assert (mine.name, mine.kind, mine.flags) == (sdk.name, sdk.kind, sdk.flags)
    assert mine.name == "chat gpt-test"
    assert (mine.start_time_unix_nano, mine.end_time_unix_nano) == (
        sdk.start_time_unix_nano,
        sdk.end_time_unix_nano,
    )
    assert values(mine.attributes) == values(sdk.attributes)
    assert values(mine.attributes)["chaosstream.outcome"] == "fault"
    assert [(e.name, e.time_unix_nano, values(e.attributes)) for e in mine.events] == [
        (e.name, e.time_unix_nano, values(e.attributes)) for e in sdk.events
    ]
    assert values(mine.events[0].attributes)["chaosstream.fault.events"] == 12
    assert mine.status == sdk.status and mine.status.code == 2
    assert "disconnect: reset after 12 events" in mine.status.message


async def test_an_unsampled_parent_makes_no_span_on_either_path(
    both: tuple[ChaosProxy, InMemorySpanExporter, ProxyTelemetry], receiver: Receiver
) -> None:
    """traceparent flags 00: the SDK's default sampler records nothing, nor does the lean path."""
    proxy, memory, lean = both
    proxy.set_profile(load_profile("clean"), 1)
    header = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"traceparent": header}
        ) as resp,
    ):
        await resp.read()
    for _ in range(200):
        if proxy.recorder.exchanges and not proxy.recorder.open:
            break
        await asyncio.sleep(0.01)
    await asyncio.to_thread(lean.shutdown)
    assert memory.get_finished_spans() == () and receiver.spans() == []


TRACEPARENTS = [
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "  00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\t",
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09-later-field",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
    "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
    "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
    "00-0af7651916cd43dd8448eb211c8031 c-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333--01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" + " " * 500,
    "",
]


def test_traceparent_is_read_as_the_sdk_propagator_reads_it() -> None:
    """Valid, lenient and invalid headers: the same verdict and ids as the SDK's propagator."""
    for header in TRACEPARENTS:
        ctx = TraceContextTextMapPropagator().extract({"traceparent": header})
        sdk = get_current_span(ctx).get_span_context()
        mine = parse_traceparent(header)
        if not sdk.is_valid:
            assert mine is None, header
            continue
        assert mine is not None, header
        assert mine[0].hex() == format_trace_id(sdk.trace_id)
        assert mine[1].hex() == format_span_id(sdk.span_id)
        assert mine[2] == sdk.trace_flags


def test_encoded_values_decode_with_opentelemetry_proto() -> None:
    """Every attribute type, big and negative ints, unicode, a root span's fresh ids."""
    attrs: dict[str, Any] = {"s": "héllo ✓", "t": True, "f": False, "z": 0, "neg": -5}
    measured: dict[str, Any] = {"big": 2**62, "d": 0.25, "n": -(2**40), "long": "x" * 300}
    rec = SpanRecord("GET /x", None, 5, 7, attrs, [], measured=measured)
    (span,) = (
        ExportTraceServiceRequest.FromString(encode_spans([rec], {"service.name": "s"}))
        .resource_spans[0]
        .scope_spans[0]
        .spans
    )
    assert values(span.attributes) == {**attrs, **measured}
    assert len(span.trace_id) == 16 and len(span.span_id) == 8 and span.parent_span_id == b""
    assert span.flags == 0x100  # the parent is known not to be remote: there is none
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (5, 7)


def test_histograms_and_sums_decode_as_cumulative_otlp_metrics() -> None:
    """Bucket counts (upper bound inclusive), count, sum, min, max; counters monotonic."""
    h = Histogram("gen_ai.server.time_to_first_token", "s", "TTFT", (0.1, 1.0))
    key = (("chaosstream.profile", "p"),)
    for v in (0.05, 0.1, 0.5, 3.0):
        h.record(v, key)
    metrics = [
        MetricData(h.name, h.unit, h.description, "histogram", histogram=h),
        MetricData("chaosstream.streams", "{stream}", "Streams", "counter", [(key, 4)]),
        MetricData("chaosstream.streams.open", "{stream}", "Open", "updown", [(key, 0)]),
    ]
    req = ExportMetricsServiceRequest.FromString(
        encode_metrics(metrics, {"service.name": "s"}, SCOPE, 10, 20)
    )
    (sm,) = req.resource_metrics[0].scope_metrics
    assert (sm.scope.name, sm.scope.version) == SCOPE
    hist, streams, open_ = sm.metrics
    (point,) = hist.histogram.data_points
    assert hist.histogram.aggregation_temporality == 2  # cumulative
    assert list(point.bucket_counts) == [2, 1, 1] and list(point.explicit_bounds) == [0.1, 1.0]
    assert (point.count, point.sum, point.min, point.max) == (4, 3.65, 0.05, 3.0)
    assert (point.start_time_unix_nano, point.time_unix_nano) == (10, 20)
    assert values(point.attributes) == {"chaosstream.profile": "p"}
    assert streams.sum.is_monotonic and streams.sum.data_points[0].as_int == 4
    assert not open_.sum.is_monotonic and open_.sum.aggregation_temporality == 2


# -- the transport's bounds -------------------------------------------------------------


def test_shutdown_flushes_what_is_queued(receiver: Receiver) -> None:
    """Spans waiting for the 60 s delay are sent at shutdown, in batches of the batch size."""
    exp = exporter(receiver.url, batch_size=4)
    for i in range(10):
        exp.add_span(record(i))
    assert exp.shutdown(5.0)
    assert len(receiver.spans()) == 10 and len(receiver.bodies) == 3
    assert (exp.exported, exp.dropped, exp.failed) == (10, 0, 0)


def test_a_full_batch_is_sent_without_waiting_for_the_delay(receiver: Receiver) -> None:
    """batch_size spans wake the thread: they arrive long before the 60 s delay."""
    exp = exporter(receiver.url, batch_size=5)
    try:
        for i in range(5):
            exp.add_span(record(i))
        for _ in range(200):
            if receiver.bodies:
                break
            time.sleep(0.01)
        assert len(receiver.spans()) == 5
    finally:
        exp.shutdown(2.0)


def test_a_slow_collector_drops_spans_past_the_queue_never_the_loop(receiver: Receiver) -> None:
    """Receiver sleeping 0.5 s: add_span stays instant, the overflow is counted as dropped."""
    receiver.delay = 0.5
    exp = exporter(receiver.url, batch_size=5, queue_size=10)
    try:
        began = time.perf_counter()
        for i in range(1000):
            exp.add_span(record(i))
        assert time.perf_counter() - began < 0.5  # about 1 us each; wide margin
        assert exp.dropped >= 1000 - 10 - 5
    finally:
        began = time.monotonic()
        exp.shutdown(0.5)
        assert time.monotonic() - began < 3.0  # bounded even while the receiver sleeps


def test_a_collector_that_is_down_costs_a_bounded_shutdown() -> None:
    """Connection refused: spans count as failed, shutdown returns within its timeout."""
    exp = exporter("http://127.0.0.1:9", batch_size=2)  # discard port: nothing listens
    for i in range(4):
        exp.add_span(record(i))
    began = time.monotonic()
    exp.shutdown(1.0)
    assert time.monotonic() - began < 3.0
    assert exp.exported == 0 and exp.failed == 4


def test_retryable_statuses_are_retried_and_a_500_is_not(receiver: Receiver) -> None:
    """503 with Retry-After 0 then 200: delivered; a 500 batch is dropped as the spec says."""
    receiver.statuses = [(503, {"Retry-After": "0"}), (200, {}), (500, {})]
    exp = exporter(receiver.url, batch_size=1)
    exp.add_span(record(1))
    for _ in range(300):
        if receiver.bodies:
            break
        time.sleep(0.01)
    exp.add_span(record(2))  # meets the 500
    assert exp.shutdown(3.0)
    assert [s.name for s in receiver.spans()] == ["chat m-1"]
    assert (exp.exported, exp.failed) == (1, 1)


def finished(i: int) -> Exchange:
    """A finished streaming exchange, as the recorder hands it to its listeners."""
    ex = Exchange(i, "POST", "/v1/chat/completions", "openai", True, time.monotonic())
    ex.request_body = b'{"model":"m-1","stream":true}'
    ex.upstream_chunks.append(b'data: {"choices":[]}\n\ndata: [DONE]\n\n')
    ex.status, ex.outcome = 200, "complete"
    ex.first_byte, ex.ended = ex.started + 0.01, ex.started + 0.02
    return ex


def test_a_slow_collector_drops_spans_but_every_exchange_is_counted(receiver: Receiver) -> None:
    """The work thread does no I/O: spans past the queue are dropped, metric points never."""
    receiver.delay = 0.5
    exp = OtlpExporter(
        Endpoint(f"{receiver.url}/v1/traces"),
        Endpoint(f"{receiver.url}/v1/metrics"),
        {},
        SCOPE,
        BatchSettings(delay_s=60.0, batch_size=5, queue_size=10),
    )
    telemetry = ProxyTelemetry(exporter=exp, owned=True)
    for i in range(300):
        telemetry.observe(finished(i), "p", 1)
    telemetry.shutdown(1.0)
    assert exp.dropped > 0 and exp.dropped_work == 0
    counted = dict(telemetry.counts("chaosstream.exchanges"))
    assert sum(counted.values()) == 300
    (ttft,) = [h for h in telemetry.collect() if h.name == "gen_ai.server.time_to_first_token"]
    assert ttft.histogram is not None
    assert sum(sum(state[3:]) for state in ttft.histogram.points.values()) == 300


def test_headers_and_gzip_reach_the_receiver(receiver: Receiver) -> None:
    """OTEL_EXPORTER_OTLP_HEADERS and _COMPRESSION=gzip as the environment says."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret,X-Team=core",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
    }
    exp = OtlpExporter(endpoint_from_env(env, "traces"), None, {}, SCOPE, BatchSettings())
    exp.add_span(record(1))
    assert exp.shutdown(3.0)
    ((_, headers, _),) = receiver.bodies
    assert headers["api-key"] == "s ecret" and headers["x-team"] == "core"
    assert headers["Content-Encoding"] == "gzip"
    assert [s.name for s in receiver.spans()] == ["chat m-1"]


def test_metrics_are_collected_at_the_interval_and_at_shutdown(receiver: Receiver) -> None:
    """The collect callback runs on the thread; each export decodes as OTLP metrics."""
    exp = OtlpExporter(
        None,
        Endpoint(f"{receiver.url}/v1/metrics"),
        {"service.name": "m"},
        SCOPE,
        BatchSettings(),
        metric_interval_s=0.1,
    )
    exp.collect = lambda: [MetricData("c", "1", "", "counter", [((("k", "v"),), 3)])]
    time.sleep(0.35)
    assert exp.shutdown(2.0)
    assert exp.metric_exports >= 2
    req = ExportMetricsServiceRequest.FromString(receiver.bodies[-1][2])
    (metric,) = req.resource_metrics[0].scope_metrics[0].metrics
    assert metric.name == "c" and metric.sum.data_points[0].as_int == 3


# -- the standard environment -------------------------------------------------------------


def test_endpoints_follow_the_specs_rules() -> None:
    """The general endpoint gets /v1/<signal>; a per-signal one is used as is; 4318 default."""
    assert endpoint_from_env({}, "traces").url == "http://localhost:4318/v1/traces"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://c.example:4318/otlp/",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m.example/custom",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "500",
    }
    traces, metrics = endpoint_from_env(env, "traces"), endpoint_from_env(env, "metrics")
    assert traces.url == "https://c.example:4318/otlp/v1/traces"
    assert metrics.url == "http://m.example/custom"
    assert (traces.timeout_s, metrics.timeout_s) == (0.5, 2.5)  # milliseconds, per the spec
    assert batch_from_env({"OTEL_BSP_SCHEDULE_DELAY": "200"}) == BatchSettings(delay_s=0.2)


def test_bad_exporter_settings_name_their_variable() -> None:
    """A value the exporter cannot use raises ValueError naming the variable."""
    for env, named in [
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
        ({"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_TRACES_COMP"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/no/such.pem"}, "OTEL_EXPORTER_OTLP_CERTIFICATE"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "OTEL_EXPORTER_OTLP_HEADERS"),
    ]:
        with pytest.raises(ValueError, match=named):
            endpoint_from_env(env, "traces")


def test_bad_batch_settings_name_their_variable() -> None:
    """OTEL_BSP_* must be numbers, and a batch no bigger than the queue."""
    with pytest.raises(ValueError, match="OTEL_BSP_MAX_QUEUE_SIZE"):
        batch_from_env({"OTEL_BSP_MAX_QUEUE_SIZE": "-1"})
    with pytest.raises(ValueError, match="OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        batch_from_env({"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"})


def test_headers_are_url_decoded_pairs() -> None:
    """The spec's key=value list: blanks trimmed, values URL-decoded, keys lower-cased."""
    assert parse_headers(" A=1 , b=x%3Dy,,", "V") == {"a": "1", "b": "x=y"}
