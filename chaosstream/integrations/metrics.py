"""Prometheus metrics of one proxy, in its own registry.

Fed once per exchange by a :class:`~chaosstream.proxy.record.Recorder` listener, never
per chunk, so the hot path pays nothing. Open streams and the interruption ratio
are read at scrape time. Every series carries ``profile`` (the active profile's
name when the exchange ended -- a scope's own for a scoped exchange) and ``path``.

Labels stay bounded, whatever clients send: ``path`` is the request path with
id-like segments (digits, hex, UUIDs, long tokens) written ``{id}``, and after
:data:`MAX_PATHS` distinct values every new one is ``other``. Scopes get no
label: a per-test scope name would make a new series per test, without end
(Prometheus' own advice: no unbounded label values); ``chaosstream_scopes``
counts them instead.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chaosstream.proxy.record import Exchange, Recorder
from chaosstream.proxy.scopes import Scope, Scopes

__all__ = ["CONTENT_TYPE", "MAX_PATHS", "PathLabels", "ProxyMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format served at ``GET /metrics``."""

LABELS = ("profile", "path")
# Outcomes that mean a stream started and did not reach its own end.
INTERRUPTED = frozenset({"fault", "upstream_error", "client_gone"})
# TTFT spans a fast mock (ms) to a slow-first-token profile (s).
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TTLT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RATE_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
MAX_PATHS = 100
"""Distinct ``path`` label values kept; later new paths are counted as ``other``."""
OTHER = "other"
# A segment that names one thing rather than a route: a number, a hex run or UUID,
# or a long token (ids such as resp_..., msg_...). Model names like gpt-4o stay.
_ID_SEGMENT = re.compile(r"[0-9]+|[0-9a-fA-F-]{16,}|[A-Za-z]+_[A-Za-z0-9]{12,}|[A-Za-z0-9_-]{33,}")


class PathLabels:
    """Request path -> a bounded ``path`` label (ids as ``{id}``, at most ``cap`` values)."""

    def __init__(self, cap: int = MAX_PATHS) -> None:
        self.cap = cap
        self._seen: dict[str, str] = {}
        self._labels: set[str] = set()

    def __call__(self, path: str) -> str:
        label = self._seen.get(path)
        if label is not None:
            return label
        label = "/".join(
            "{id}" if _ID_SEGMENT.fullmatch(seg) else seg for seg in path[:512].split("/")
        )
        if label not in self._labels:
            if len(self._labels) >= self.cap:
                label = OTHER
            else:
                self._labels.add(label)
        if len(self._seen) < 4 * self.cap:  # the memo is bounded too
            self._seen[path] = label
        return label


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
            (m.profile_name(), m.path(ex.path))
            for ex in list(m.recorder.open.values())
            if ex.stream
        )
        scopes = m.scopes.all() if m.scopes is not None else []
        for scope in scopes:
            now.update(
                (scope.profile.name, m.path(ex.path))
                for ex in list(scope.recorder.open.values())
                if ex.stream
            )
        for (profile, path), n in sorted(now.items()):
            open_streams.add_metric([profile, path], n)
        yield open_streams
        if m.scopes is not None:
            yield GaugeMetricFamily(
                "chaosstream_scopes", "Scopes held by the proxy.", value=len(scopes)
            )
            yield CounterMetricFamily(
                "chaosstream_scopes_evicted",
                "Idle scopes forgotten to make room under --max-scopes.",
                value=m.scopes.evicted,
            )
        ratio = GaugeMetricFamily(
            "chaosstream_stream_interruption_ratio",
            "Share of finished streams that ended early (fault, upstream error, client gone).",
            labels=LABELS,
        )
        for key, streams in sorted(m.streams.items()):
            ratio.add_metric(list(key), m.interrupted[key] / streams)
        yield ratio


class ProxyMetrics:
    """The metrics of one proxy: attach to its recorder (and its scopes), serve :meth:`render`."""

    def __init__(
        self,
        recorder: Recorder,
        profile_name: Callable[[], str],
        scopes: Scopes | None = None,
        max_paths: int = MAX_PATHS,
    ) -> None:
        self.recorder = recorder
        self.profile_name = profile_name
        self.scopes = scopes
        self.path = PathLabels(max_paths)
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
        if scopes is not None:
            scopes.listeners.append(self.observe_scoped)

    def close(self) -> None:
        """Stop listening to the recorder and the scopes."""
        if self.observe in self.recorder.listeners:
            self.recorder.listeners.remove(self.observe)
        if self.scopes is not None and self.observe_scoped in self.scopes.listeners:
            self.scopes.listeners.remove(self.observe_scoped)

    def observe_scoped(self, scope: Scope, ex: Exchange) -> None:
        """Count one finished exchange of a scope, under the scope's profile."""
        self.observe(ex, scope.profile.name)

    def observe(self, ex: Exchange, profile: str | None = None) -> None:
        """Count one finished exchange (the recorder listener)."""
        key = (profile if profile is not None else self.profile_name(), self.path(ex.path))
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
