"""Prometheus metrics: names, labels and values after real exchanges; one registry per proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chaosstream.integrations.metrics import MAX_PATHS, PathLabels, ProxyMetrics
from chaosstream.mock import HEADER_TOKENS_PER_S, MockServer
from chaosstream.proxy.server import ChaosProxy
from tests.conftest import ProxyFactory

CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
PATH = "/v1/chat/completions"


def samples(metrics: ProxyMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the registry, keyed by (name, labels)."""
    text = metrics.render().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: ProxyMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


@pytest.fixture
async def proxy(mock: MockServer, proxy_factory: ProxyFactory) -> ChaosProxy:
    return await proxy_factory(mock.url, "midstream-reset", seed=7)


@pytest.fixture
async def metrics(proxy: ChaosProxy) -> AsyncIterator[ProxyMetrics]:
    m = ProxyMetrics(proxy.recorder, lambda: proxy.profile.name)
    yield m
    m.close()


async def _stream(proxy: ChaosProxy, headers: dict[str, str] | None = None) -> None:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.post(f"{proxy.url}{PATH}", json=CHAT, headers=headers) as resp:
                await resp.read()
        except aiohttp.ClientPayloadError:
            pass


async def test_counts_outcomes_faults_and_interruptions(
    proxy: ChaosProxy, metrics: ProxyMetrics
) -> None:
    """A cut stream and a whole one give outcome counts, a fault count and ratio 0.5."""
    await _stream(proxy)  # midstream-reset cuts the first
    await _stream(proxy)
    labels = {"profile": "midstream-reset", "path": PATH}
    assert value(metrics, "chaosstream_exchanges_total", outcome="fault", **labels) == 1
    assert value(metrics, "chaosstream_exchanges_total", outcome="complete", **labels) == 1
    assert value(metrics, "chaosstream_faults_fired_total", type="disconnect", **labels) == 1
    assert value(metrics, "chaosstream_streams_total", **labels) == 2
    assert value(metrics, "chaosstream_stream_interruptions_total", **labels) == 1
    assert value(metrics, "chaosstream_stream_interruption_ratio", **labels) == 0.5
    assert value(metrics, "chaosstream_time_to_first_token_seconds_count", **labels) == 2
    assert value(metrics, "chaosstream_time_to_last_token_seconds_count", **labels) == 2


async def test_timings_match_the_mock_pace(proxy: ChaosProxy, metrics: ProxyMetrics) -> None:
    """TTFT is near the mock's 20 ms and tokens/s near its 500/s, within loose bounds."""
    proxy.set_profile(proxy.profile.model_copy(update={"name": "plain", "faults": []}))
    await _stream(proxy)
    labels = {"profile": "plain", "path": PATH}
    ttft = value(metrics, "chaosstream_time_to_first_token_seconds_sum", **labels)
    assert ttft is not None and 0.015 <= ttft < 1.0
    ttlt = value(metrics, "chaosstream_time_to_last_token_seconds_sum", **labels)
    assert ttlt is not None and ttlt > ttft
    assert value(metrics, "chaosstream_tokens_per_second_count", **labels) == 1
    rate = value(metrics, "chaosstream_tokens_per_second_sum", **labels)
    # 30 tokens at 500/s; a busy machine only slows it down.
    assert rate is not None and 50 < rate < 700


async def test_open_streams_gauge_follows_live_streams(
    proxy: ChaosProxy, metrics: ProxyMetrics
) -> None:
    """While a slow stream is open the gauge reads 1; after it ends the series is gone."""
    proxy.set_profile(proxy.profile.model_copy(update={"name": "plain", "faults": []}))
    labels = {"profile": "plain", "path": PATH}
    task = asyncio.create_task(_stream(proxy, {HEADER_TOKENS_PER_S: "20"}))
    try:
        for _ in range(200):
            if value(metrics, "chaosstream_open_streams", **labels) == 1:
                break
            await asyncio.sleep(0.01)
        assert value(metrics, "chaosstream_open_streams", **labels) == 1
    finally:
        await asyncio.wait_for(task, 10)
    assert value(metrics, "chaosstream_open_streams", **labels) is None


async def test_registry_is_per_proxy(
    mock: MockServer, proxy_factory: ProxyFactory, proxy: ChaosProxy, metrics: ProxyMetrics
) -> None:
    """Two proxies count apart, and nothing lands in prometheus_client's global registry."""
    other = await proxy_factory(mock.url, "clean")
    other_metrics = ProxyMetrics(other.recorder, lambda: other.profile.name)
    try:
        await _stream(other)
        assert value(other_metrics, "chaosstream_streams_total", profile="clean", path=PATH) == 1
        assert not any(name.startswith("chaosstream_streams") for name, _ in samples(metrics))
    finally:
        other_metrics.close()
    assert other_metrics.observe not in other.recorder.listeners
    global_names = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("chaosstream") for n in global_names)


async def test_refused_requests_count_but_have_no_ttft(
    proxy: ChaosProxy, metrics: ProxyMetrics
) -> None:
    """An upstream that cannot be reached counts as upstream_error with no timing samples."""
    broken = ChaosProxy("http://127.0.0.1:9", proxy.profile)
    m = ProxyMetrics(broken.recorder, lambda: "p")
    await broken.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{broken.url}/x") as resp:
            assert resp.status == 502
    finally:
        await broken.close()
        m.close()
    assert value(m, "chaosstream_exchanges_total", profile="p", path="/x", outcome="upstream_error")
    assert value(m, "chaosstream_time_to_first_token_seconds_count", profile="p", path="/x") is None


def test_path_label_writes_ids_as_id_and_caps_distinct_values() -> None:
    """Ids in paths become {id}; past the cap every new path is 'other' (bounded series)."""
    labels = PathLabels(cap=4)
    assert labels("/v1/chat/completions") == "/v1/chat/completions"
    assert labels("/v1/responses/resp_0123456789abcdef") == "/v1/responses/{id}"
    assert labels("/v1/threads/12345/runs") == "/v1/threads/{id}/runs"
    assert labels("/v1/files/0f8fad5b-d9cb-469f-a165-70867728950e") == "/v1/files/{id}"
    assert labels("/v1/models/gpt-4o") == "other"  # a fifth distinct route
    assert labels("/v1/chat/completions") == "/v1/chat/completions"  # known ones stay
    assert labels("/v1/responses/resp_ffffffffffffffff") == "/v1/responses/{id}"


async def test_random_paths_do_not_grow_the_series(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """300 distinct junk paths give MAX_PATHS labels plus other (a scanner can't blow up)."""
    proxy = await proxy_factory(mock.url, "clean")
    m = ProxyMetrics(proxy.recorder, lambda: "clean")
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(300):
                async with http.get(f"{proxy.url}/junk-{i}-x") as resp:
                    await resp.read()
        paths = {dict(labels).get("path") for _, labels in samples(m)}
        assert len(paths - {None, "other"}) == MAX_PATHS and "other" in paths
    finally:
        m.close()
