"""Prometheus metrics of one proxy, in its own registry.

Fed once per exchange by a :class:`~chaosstream.proxy.record.Recorder` listener, never
per chunk, so the hot path pays nothing. Open streams and the interruption ratio
are read at scrape time. Every series carries ``profile`` (the active profile's
name when the exchange ended) and ``path`` (the request path).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chaosstream.proxy.record import Exchange, Recorder

__all__ = ["CONTENT_TYPE", "ProxyMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format served at ``GET /metrics``."""

LABELS = ("profile", "path")
# Outcomes that mean a stream started and did not reach its own end.
INTERRUPTED = frozenset({"fault", "upstream_error", "client_gone"})
# TTFT spans a fast mock (ms) to a slow-first-token profile (s).
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TTLT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RATE_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class _Live(Collector):
    """Series computed at scrape time from the recorder and the tallies."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        open_streams = GaugeMetricFamily(
            "chaosstream_open_streams",
            "Streaming exchanges in flight through the proxy.",
            labels=LABELS,
        )
        now = Tally(
            (m.profile_name(), ex.path) for ex in list(m.recorder.open.values()) if ex.stream
        )
        for (profile, path), n in sorted(now.items()):
            open_streams.add_metric([profile, path], n)
        yield open_streams
        ratio = GaugeMetricFamily(
            "chaosstream_stream_interruption_ratio",
            "Share of finished streams that ended early (fault, upstream error, client gone).",
            labels=LABELS,
        )
        for key, streams in sorted(m.streams.items()):
            ratio.add_metric(list(key), m.interrupted[key] / streams)
        yield ratio


class ProxyMetrics:
    """The metrics of one proxy: attach to its recorder, serve :meth:`render`."""

    def __init__(self, recorder: Recorder, profile_name: Callable[[], str]) -> None:
        self.recorder = recorder
        self.profile_name = profile_name
        self.registry = CollectorRegistry()
        self.streams: Tally[tuple[str, str]] = Tally()
        self.interrupted: Tally[tuple[str, str]] = Tally()
        reg = self.registry
        self.ttft = Histogram(
            "chaosstream_time_to_first_token_seconds",
            "Time from request to the first byte of a successful response.",
            LABELS,
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self.ttlt = Histogram(
            "chaosstream_time_to_last_token_seconds",
            "Time from request to the last byte sent to the client.",
            LABELS,
            buckets=TTLT_BUCKETS,
            registry=reg,
        )
        self.rate = Histogram(
            "chaosstream_tokens_per_second",
            "Answer tokens per second after the first byte, per streamed exchange.",
            LABELS,
            buckets=RATE_BUCKETS,
            registry=reg,
        )
        self.exchanges = Counter(
            "chaosstream_exchanges",
            "Exchanges through the proxy by outcome.",
            (*LABELS, "outcome"),
            registry=reg,
        )
        self.faults = Counter(
            "chaosstream_faults_fired",
            "Faults that fired, once per fault per exchange, by fault type.",
            (*LABELS, "type"),
            registry=reg,
        )
        self.stream_count = Counter(
            "chaosstream_streams", "Streaming exchanges that finished.", LABELS, registry=reg
        )
        self.interruptions = Counter(
            "chaosstream_stream_interruptions",
            "Streaming exchanges that ended early (fault, upstream error, client gone).",
            LABELS,
            registry=reg,
        )
        reg.register(_Live(self))
        recorder.listeners.append(self.observe)

    def close(self) -> None:
        """Stop listening to the recorder."""
        if self.observe in self.recorder.listeners:
            self.recorder.listeners.remove(self.observe)

    def observe(self, ex: Exchange) -> None:
        """Count one finished exchange (the recorder listener)."""
        key = (self.profile_name(), ex.path)
        self.exchanges.labels(*key, ex.outcome).inc()
        for fault_type in {(f.index, f.type) for f in ex.faults}:
            self.faults.labels(*key, fault_type[1]).inc()
        ok = ex.status is not None and ex.status < 400
        if ok and ex.first_byte is not None:
            self.ttft.labels(*key).observe(ex.first_byte - ex.started)
            if ex.ended is not None:
                self.ttlt.labels(*key).observe(ex.ended - ex.started)
                # Parses the delivered body once, here at the end, never per chunk.
                rate = ex.tokens_per_s if ex.stream else None
                if rate is not None:
                    self.rate.labels(*key).observe(rate)
        if ex.stream and ok:
            self.streams[key] += 1
            self.stream_count.labels(*key).inc()
            if ex.outcome in INTERRUPTED:
                self.interrupted[key] += 1
                self.interruptions.labels(*key).inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
