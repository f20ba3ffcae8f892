"""OpenTelemetry: a span per exchange in the client's trace, fault events, GenAI metrics.

In process with the SDK's in-memory exporters on a real proxy and the real
mock; through the command line as a subprocess exporting OTLP/HTTP to a small
loopback receiver that decodes the protobuf payloads with opentelemetry-proto.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chaosstream.faults.profile import load_profile
from chaosstream.integrations.otel import FAULT_EVENT, ProxyTelemetry, request_model, usage
from chaosstream.mock import MockServer
from chaosstream.proxy.record import Exchange, Recorder
from chaosstream.proxy.server import ChaosProxy
from chaosstream.streams.format import json_or_none
from tests.conftest import make_profile

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hello"}]}


def traceparent() -> tuple[str, str, str]:
    """A fresh client span: (header value, trace id hex, span id hex)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


class Telemetry:
    """A ProxyTelemetry on in-memory SDK providers, with readers for the test."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = ProxyTelemetry(tracer_provider, meter_provider)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        """Every data point of metric ``name`` in one collection."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def otel() -> Telemetry:
    return Telemetry()


@pytest.fixture
async def traced(mock: MockServer, otel: Telemetry) -> AsyncIterator[ChaosProxy]:
    """A proxy on the mock with the midstream-reset profile (seed 7), traced in memory."""
    proxy = ChaosProxy(mock.url, load_profile("midstream-reset"), seed=7)
    otel.telemetry.attach(proxy)
    await proxy.start()
    yield proxy
    await proxy.close()
    otel.telemetry.shutdown()


async def post(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """POST and read the whole answer; a cut stream is read up to the cut."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers=headers) as resp,
    ):
        try:
            return resp.status, await resp.read()
        except aiohttp.ClientPayloadError:
            return resp.status, b""


async def ended(proxy: ChaosProxy, count: int) -> list[Exchange]:
    """The proxy's finished exchanges once ``count`` of them ended (bounded wait)."""
    for _ in range(200):
        if len(proxy.recorder.exchanges) >= count and not proxy.recorder.open:
            break
        await asyncio.sleep(0.01)
    return list(proxy.recorder.exchanges)


async def test_a_cut_stream_is_one_span_in_the_clients_trace_with_the_fault_as_an_event(
    traced: ChaosProxy, mock: MockServer, otel: Telemetry
) -> None:
    """A reset stream: one SERVER span, child of the sent traceparent, fault event at its place."""
    header, trace_id, span_id = traceparent()
    await post(f"{traced.url}/v1/chat/completions", CHAT, {"traceparent": header})
    (ex,) = await ended(traced, 1)
    (span,) = otel.finished()
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == trace_id
    assert format(span.parent.span_id, "016x") == span_id
    assert span.parent.is_remote
    assert span.kind == SpanKind.SERVER
    assert span.name == "chat gpt-test"
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-test"
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["chaosstream.profile"] == "midstream-reset"
    assert attrs["chaosstream.seed"] == 7
    assert attrs["chaosstream.outcome"] == ex.outcome == "fault"
    assert attrs["error.type"] == "disconnect"
    assert span.status.status_code == StatusCode.ERROR
    assert "disconnect: reset after 12 events" in (span.status.description or "")
    # The event sits where the recorder says the fault acted.
    (fault,) = ex.faults
    (event,) = span.events
    assert event.name == FAULT_EVENT
    ev = dict(event.attributes or {})
    assert (ev["chaosstream.fault.type"], ev["chaosstream.fault.action"]) == ("disconnect", "reset")
    assert ev["chaosstream.fault.events"] == fault.events == 12
    assert ev["chaosstream.fault.bytes"] == fault.bytes > 0
    assert ev["chaosstream.fault.trigger"] == fault.trigger
    assert span.start_time is not None and span.end_time is not None
    assert event.timestamp - span.start_time == pytest.approx(fault.at_ms * 1e6, abs=1e3)
    assert span.end_time - span.start_time == pytest.approx(ex.duration_ms * 1e6, abs=1e3)  # type: ignore[operator]
    # Upstream got the client's trace context unchanged: the model's spans join this trace.
    sent = mock.requests[-1].headers
    assert sent["traceparent"] == header
    assert sent["traceparent"].split("-")[1] == trace_id


async def test_no_traceparent_makes_a_root_span_and_upstream_gets_none(
    traced: ChaosProxy, mock: MockServer, otel: Telemetry
) -> None:
    """Without a client trace the span is a root, and the proxy adds no header upstream."""
    traced.set_profile(load_profile("clean"), 1)
    status, _ = await post(f"{traced.url}/v1/chat/completions", CHAT)
    await ended(traced, 1)
    (span,) = otel.finished()
    assert status == 200
    assert span.parent is None
    assert span.status.status_code == StatusCode.UNSET
    assert dict(span.attributes or {})["chaosstream.outcome"] == "complete"
    assert "traceparent" not in mock.requests[-1].headers


async def test_a_websocket_exchange_is_a_child_of_its_handshakes_traceparent(
    traced: ChaosProxy, otel: Telemetry
) -> None:
    """The trace context a WebSocket handshake carries parents that exchange's span too."""
    traced.set_profile(load_profile("clean"), 1)
    header, trace_id, span_id = traceparent()
    ws_url = traced.url.replace("http://", "ws://") + "/ws"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url, headers={"traceparent": header}) as ws,
    ):
        await ws.send_json({"prompt": "hello ws", "tokens": 3})
        async for msg in ws:
            if json.loads(msg.data)["type"] == "done":
                break
    await ended(traced, 1)
    (span,) = otel.finished()
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == trace_id
    assert format(span.parent.span_id, "016x") == span_id


async def test_usage_and_time_per_output_token_from_an_anthropic_stream(
    traced: ChaosProxy, otel: Telemetry
) -> None:
    """Anthropic reports usage in the stream: the span carries it, TPOT is recorded from it."""
    traced.set_profile(load_profile("clean"), 1)
    body = {"model": "claude-test", "max_tokens": 64, "stream": True, "messages": CHAT["messages"]}
    _, raw = await post(f"{traced.url}/v1/messages", body, {"anthropic-version": "2023-06-01"})
    await ended(traced, 1)
    # What the stream itself said, parsed here independently of the code under test.
    events = [json_or_none(line[5:]) for line in raw.decode().splitlines() if line[:5] == "data:"]
    input_tokens = next(e["message"]["usage"]["input_tokens"] for e in events if "message" in e)
    output_tokens = [
        e["usage"]["output_tokens"] for e in events if e.get("type") == "message_delta"
    ]
    (span,) = otel.finished()
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == "claude-test"
    assert attrs["gen_ai.usage.input_tokens"] == input_tokens
    assert attrs["gen_ai.usage.output_tokens"] == output_tokens[-1]
    (tpot,) = otel.points("gen_ai.server.time_per_output_token")
    assert tpot.count == 1 and 0 < tpot.sum < 1.0


async def test_metrics_mirror_the_prometheus_ones(traced: ChaosProxy, otel: Telemetry) -> None:
    """A cut stream and a whole one: TTFT x2, one interruption by disconnect, streams 2, open 0."""
    await post(f"{traced.url}/v1/chat/completions", CHAT)  # cut: request 1 of midstream-reset
    await post(f"{traced.url}/v1/chat/completions", CHAT)
    await ended(traced, 2)
    (ttft,) = otel.points("gen_ai.server.time_to_first_token")
    assert ttft.count == 2 and ttft.attributes["gen_ai.request.model"] == "gpt-test"
    durations = otel.points("gen_ai.server.request.duration")
    assert sum(p.count for p in durations) == 2
    assert {p.attributes.get("error.type") for p in durations} == {None, "disconnect"}
    (cut,) = otel.points("chaosstream.stream.interruptions")
    assert cut.value == 1 and cut.attributes["chaosstream.fault.type"] == "disconnect"
    (streams,) = otel.points("chaosstream.streams")
    assert streams.value == 2
    (fired,) = otel.points("chaosstream.faults.fired")
    assert fired.value == 1 and fired.attributes["chaosstream.profile"] == "midstream-reset"
    outcomes = {
        p.attributes["chaosstream.outcome"]: p.value for p in otel.points("chaosstream.exchanges")
    }
    assert outcomes == {"fault": 1, "complete": 1}
    assert sum(p.value for p in otel.points("chaosstream.streams.open")) == 0


async def test_open_streams_are_counted_while_a_stall_holds_one(
    mock: MockServer, otel: Telemetry
) -> None:
    """A stalled stream is an open stream at collection time, gone once the client leaves."""
    profile = make_profile([{"type": "disconnect", "after_events": 2, "mode": "stall"}])
    proxy = ChaosProxy(mock.url, profile, seed=1)
    otel.telemetry.attach(proxy)
    await proxy.start()
    try:
        task = asyncio.ensure_future(post(f"{proxy.url}/v1/chat/completions", CHAT))
        for _ in range(200):
            if proxy.recorder.open:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert [p.value for p in otel.points("chaosstream.streams.open")] == [1]
        task.cancel()
        await ended(proxy, 1)
        assert sum(p.value for p in otel.points("chaosstream.streams.open")) == 0
    finally:
        await proxy.close()
        otel.telemetry.shutdown()


async def test_a_scoped_exchange_names_its_scope_and_its_own_profile(
    traced: ChaosProxy, otel: Telemetry
) -> None:
    """/~/<scope>/<profile>/...: the span says the scope, and the scope's profile and seed."""
    header, trace_id, _ = traceparent()
    url = f"{traced.url}/~/test-42/clean/v1/chat/completions"
    status, _ = await post(url, CHAT, {"traceparent": header})
    scope = traced.scopes.get("test-42")
    assert status == 200 and scope is not None
    for _ in range(200):
        if scope.recorder.exchanges and not scope.recorder.open:
            break
        await asyncio.sleep(0.01)
    (span,) = otel.finished()
    attrs = dict(span.attributes or {})
    assert attrs["chaosstream.scope"] == "test-42"
    assert attrs["chaosstream.profile"] == "clean"
    assert attrs["chaosstream.seed"] == scope.seed
    assert span.context is not None and format(span.context.trace_id, "032x") == trace_id


async def test_detached_telemetry_records_nothing_more(traced: ChaosProxy, otel: Telemetry) -> None:
    """After shutdown the recorder has no telemetry listener left and no span is made."""
    otel.telemetry.shutdown()
    await post(f"{traced.url}/v1/chat/completions", CHAT)
    await ended(traced, 1)
    assert otel.finished() == []
    assert traced.recorder.listeners == [] and traced.scopes.listeners == []


def test_usage_reads_each_formats_last_counts() -> None:
    """Usage keys per API: the last (cumulative) counts win, a null is skipped, none is None."""
    openai = (
        b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":31}}\n\n'
        b"data: [DONE]\n\n"
    )
    found = usage(openai, "openai")
    assert found is not None and (found.input_tokens, found.output_tokens) == (9, 31)
    gemini = b'data: {"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 12}}\r\n\r\n'
    found = usage(gemini, "gemini")
    assert found is not None and (found.input_tokens, found.output_tokens) == (4, 12)
    ollama = b'{"done":false}\n{"done":true,"prompt_eval_count":3,"eval_count":7}\n'
    found = usage(ollama, "ollama")
    assert found is not None and (found.input_tokens, found.output_tokens) == (3, 7)
    assert usage(b'data: {"choices":[]}\n\n', "openai") is None
    assert usage(b"data: x\n\n", "sse") is None


def test_usage_of_a_long_recorded_body_reads_its_two_ends() -> None:
    """A packed 300 KB Anthropic body: input from its first event, output from its last."""
    body = Recorder().body()
    body.append(
        b'event: message_start\ndata: {"type":"message_start","message":'
        b'{"usage":{"input_tokens":25,"output_tokens":1}}}\n\n'
    )
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{}}\n\n'
    for _ in range(4000):
        body.append(delta)
    body.append(b'event: message_delta\ndata: {"usage":{"output_tokens":4001}}\n\n')
    found = usage(body, "anthropic")
    assert found is not None and (found.input_tokens, found.output_tokens) == (25, 4001)


def test_request_model_from_body_or_path() -> None:
    """The body's top-level model string; Gemini's from the path; a schema's object is no model."""

    def ex(path: str, body: bytes, provider: str = "openai") -> Exchange:
        return Exchange(1, "POST", path, provider, True, 0.0, request_body=body)

    tool = b'{"tools":[{"parameters":{"properties":{"model":{"type":"string"}}}}],"model":"m-1"}'
    assert request_model(ex("/v1/chat/completions", tool)) == "m-1"
    assert request_model(ex("/v1beta/models/gemini-2.0-flash:streamGenerateContent", b"{}",
                            "gemini")) == "gemini-2.0-flash"  # fmt: skip
    assert request_model(ex("/v1/chat/completions", b'{"messages":[]}')) is None


# -- through the command line -----------------------------------------------------


class Receiver:
    """An OTLP/HTTP receiver on loopback: decodes what arrives with opentelemetry-proto."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.content_types: set[str] = set()

    async def on_traces(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        self.traces.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def on_metrics(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        self.metrics.append(ExportMetricsServiceRequest.FromString(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def spans(self) -> list[Any]:
        return [
            span
            for req in self.traces
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def metric_names(self) -> set[str]:
        return {
            m.name
            for req in self.metrics
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", rec.on_traces)
    app.router.add_post("/v1/metrics", rec.on_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield rec, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def cli_env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="chaos-under-test",
        OTEL_METRIC_EXPORT_INTERVAL="60000",  # the exit flush must send them
        OTEL_BSP_SCHEDULE_DELAY="100",
        **extra,
    )
    return env


async def test_proxy_command_exports_spans_and_metrics_over_otlp_http(
    receiver: tuple[Receiver, str], mock: MockServer
) -> None:
    """`chaosstream proxy --otel`: the span (client's trace, fault event) and metrics arrive."""
    rec, endpoint = receiver
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chaosstream", "proxy", "--upstream", mock.url,
        "--profile", "midstream-reset", "--seed", "7", "--listen", "127.0.0.1:0", "--otel",
        env=cli_env(endpoint), stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stderr is not None
    banner = b""
    try:
        while b"otel:" not in banner:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert line, banner.decode()
            banner += line
        url = banner.split(b"listening on ", 1)[1].split()[0].decode()
        header, trace_id, span_id = traceparent()
        await post(f"{url}/v1/chat/completions", CHAT, {"traceparent": header})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, (banner + err).decode()
    assert f"to {endpoint}".encode() in banner and b"chaos-under-test" in banner
    assert rec.content_types == {"application/x-protobuf"}
    (span,) = rec.spans()
    assert span.trace_id.hex() == trace_id and span.parent_span_id.hex() == span_id
    assert span.name == "chat gpt-test"
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["chaosstream.profile"].string_value == "midstream-reset"
    assert attrs["chaosstream.outcome"].string_value == "fault"
    (event,) = span.events
    ev = {a.key: a.value for a in event.attributes}
    assert event.name == FAULT_EVENT and ev["chaosstream.fault.events"].int_value == 12
    service = {
        a.key: a.value.string_value for a in rec.traces[0].resource_spans[0].resource.attributes
    }
    assert service["service.name"] == "chaos-under-test"
    assert {
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.request.duration",
        "chaosstream.stream.interruptions",
        "chaosstream.streams.open",
    } <= rec.metric_names()


CLIENT = """
import json, os, sys, urllib.request
body = json.dumps({"model": "gpt-test", "stream": True,
                   "messages": [{"role": "user", "content": "hello"}]}).encode()
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", body,
                             {"Content-Type": "application/json", "traceparent": sys.argv[1]})
try:
    urllib.request.urlopen(req, timeout=10).read()
except Exception as e:
    sys.exit(f"stream failed: {e}")
"""


async def test_run_command_traces_the_clients_exchanges(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    """`chaosstream run --otel`: the client's request is a span in the client's trace."""
    rec, endpoint = receiver
    scenarios = tmp_path / "s.yaml"
    scenarios.write_text(
        "version: 1\nscenarios:\n  - name: cut\n    profile: midstream-reset\n"
        "    expect: [surfaces_error]\n"
    )
    header, trace_id, _ = traceparent()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chaosstream", "run", str(scenarios), "--seed", "7", "--otel",
        "--", sys.executable, "-c", CLIENT, header,
        env=cli_env(endpoint), stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out + err).decode()
    (span,) = rec.spans()
    assert span.trace_id.hex() == trace_id
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["chaosstream.profile"].string_value == "midstream-reset"
    assert attrs["chaosstream.seed"].int_value == 7
    assert [e.name for e in span.events] == [FAULT_EVENT]
    assert "chaosstream.stream.interruptions" in rec.metric_names()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ],
)
async def test_otel_settings_chaosstream_cannot_honour_are_bad_input(
    setting: dict[str, str], named: str
) -> None:
    """An OTEL_* value chaosstream cannot export with: exit 2 naming the variable."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chaosstream", "proxy", "--listen", "127.0.0.1:0", "--otel",
        env=cli_env("http://127.0.0.1:9", **setting),
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    text = err.decode()
    assert named in text and "Traceback" not in text and len(text.strip().splitlines()) == 1


# -- the compose example -------------------------------------------------------------


def test_otel_compose_example_adds_a_collector_and_jaeger_to_the_stack() -> None:
    """docker-compose.otel.yml parses and wires chaosstream -> Collector -> Jaeger."""
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    services = yaml.safe_load((ROOT / "docker-compose.otel.yml").read_text())["services"]
    assert set(services) == {"chaosstream", "otel-collector", "jaeger"}
    proxy = services["chaosstream"]
    # Compose replaces a command list: the override must be the base command plus --otel.
    assert proxy["command"] == [*base["chaosstream"]["command"], "--otel"]
    assert proxy["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    # The image gets the otel extra through the Dockerfile's EXTRAS build argument.
    assert proxy["build"]["args"]["EXTRAS"] == "otel"
    assert "otel = [" in (ROOT / "pyproject.toml").read_text()
    assert 'ARG EXTRAS=""' in (ROOT / "Dockerfile").read_text()
    collector = services["otel-collector"]
    (mount,) = collector["volumes"]
    source, target = mount.split(":")[:2]
    assert f"--config={target}" in collector["command"]
    config = yaml.safe_load((ROOT / source).read_text())
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http.endswith(":4318")
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["receivers"] == pipelines["metrics"]["receivers"] == ["otlp"]
    (trace_exporter,) = pipelines["traces"]["exporters"]
    jaeger_host = config["exporters"][trace_exporter]["endpoint"].split(":")[0]
    assert jaeger_host == "jaeger" and services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"]
    for name in pipelines["metrics"]["exporters"]:
        assert name in config["exporters"]
    assert "127.0.0.1:16686:16686" in services["jaeger"]["ports"]
    for service in services.values():  # published on the host's loopback only, as the base
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))
