"""Streams recognised by the response head, and compressed streams under event faults."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from chaosstream.mock import MockServer
from tests.conftest import ProxyFactory, make_profile

UI_BODY = {
    "id": "chat-1",
    "trigger": "submit-message",
    "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hello"}]}],
}
EVENTS = [f'data: {{"type":"text-delta","id":"0","delta":"w{i} "}}\n\n'.encode() for i in range(8)]
DONE = b'data: {"type":"finish","finishReason":"stop"}\n\ndata: [DONE]\n\n'


async def post(url: str, body: object, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.post(url, json=body, headers=headers) as r,
    ):
        try:
            data = await r.read()
        except aiohttp.ClientPayloadError:
            data = b""
        return r.status, data, dict(r.headers)


async def test_ui_stream_without_stream_flag_arms_stream_faults(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """useChat's POST says nothing of streaming; its SSE answer still arms `stream: true` faults."""
    profile = make_profile(
        [
            {"type": "disconnect", "after_events": 3, "mode": "close", "match": {"stream": True}},
            {"type": "latency", "first_byte_ms": 1, "match": {"stream": False}},
        ]
    )
    proxy = await proxy_factory(mock.url, profile)
    status, body, _ = await post(f"{proxy.url}/api/ui/chat", UI_BODY)
    assert status == 200
    assert body.count(b"data: ") == 3 and b"[DONE]" not in body
    (ex,) = proxy.recorder.exchanges
    assert ex.stream is True
    assert [f.type for f in ex.faults] == ["disconnect"]


async def test_json_answer_to_unflagged_request_arms_only_non_stream_faults(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A JSON answer is no stream: a `stream: false` fault fires, a `stream: true` one does not."""
    profile = make_profile(
        [
            {"type": "disconnect", "after_bytes": 1, "mode": "close", "match": {"stream": True}},
            {"type": "latency", "first_byte_ms": 5, "match": {"stream": False}},
        ]
    )
    proxy = await proxy_factory(mock.url, profile)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    status, data, _ = await post(f"{proxy.url}/v1/chat/completions", body)
    assert status == 200 and json.loads(data)["choices"]
    (ex,) = proxy.recorder.exchanges
    assert ex.stream is False
    assert [f.type for f in ex.faults] == ["latency"]


async def test_requests_counter_counts_streams_known_by_head(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """`requests: [2]` on a response-decided match fires on the second stream only."""
    profile = make_profile(
        [
            {
                "type": "disconnect",
                "after_events": 2,
                "mode": "close",
                "match": {"stream": True},
                "requests": [2],
            }
        ]
    )
    proxy = await proxy_factory(mock.url, profile)
    first = await post(f"{proxy.url}/api/ui/chat", UI_BODY)
    second = await post(f"{proxy.url}/api/ui/chat", UI_BODY)
    assert b"[DONE]" in first[1]
    assert second[1].count(b"data: ") == 2
    assert [len(e.faults) for e in proxy.recorder.exchanges] == [0, 1]


@pytest.fixture
async def gzip_upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """An app route that gzips its event stream whatever it is asked (as a careless Next
    config would), flushing each event, with a pause after the second event."""
    seen: list[dict[str, str]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Content-Encoding": "gzip",
                "x-vercel-ai-ui-message-stream": "v1",
            }
        )
        await resp.prepare(request)
        gz = zlib.compressobj(wbits=31)
        for i, event in enumerate([*EVENTS, DONE]):
            await resp.write(gz.compress(event) + gz.flush(zlib.Z_SYNC_FLUSH))
            if i == 1:
                await asyncio.sleep(0.6)
        await resp.write(gz.flush())
        return resp

    app = web.Application()
    app.router.add_post("/api/chat", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", seen
    await runner.cleanup()


async def test_gzip_stream_is_decoded_for_event_faults_and_sent_as_identity(
    gzip_upstream: tuple[str, list[dict[str, str]]], proxy_factory: ProxyFactory
) -> None:
    """An event fault asks for identity; a gzip answer anyway is decoded per read, cut at its
    event, and reaches the client as identity, first event before upstream's pause ends."""
    url, seen = gzip_upstream
    profile = make_profile(
        [{"type": "disconnect", "after_events": 4, "mode": "close", "match": {"stream": True}}]
    )
    proxy = await proxy_factory(url, profile)
    started = time.monotonic()
    first_at = None
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.post(f"{proxy.url}/api/chat", json=UI_BODY, headers={"Accept-Encoding": "gzip"}) as r,
    ):
        headers = dict(r.headers)
        body = b""
        async for data in r.content.iter_any():
            if first_at is None:
                first_at = time.monotonic() - started
            body += data
    assert seen[0]["Accept-Encoding"] == "identity"
    assert "Content-Encoding" not in headers
    assert body == b"".join(EVENTS[:4])
    assert first_at is not None and first_at < 0.5  # not held until the pause ends
    (ex,) = proxy.recorder.exchanges
    assert [f.type for f in ex.faults] == ["disconnect"]
    assert ex.response_text == "".join(f"w{i} " for i in range(8))


async def test_clean_gzip_stream_stays_byte_exact_and_is_recorded_decoded(
    gzip_upstream: tuple[str, list[dict[str, str]]], proxy_factory: ProxyFactory
) -> None:
    """Without faults the compressed bytes and the client's Accept-Encoding pass untouched; the
    record still reads the answer's text."""
    url, seen = gzip_upstream
    direct = await post(f"{url}/api/chat", UI_BODY, **{"Accept-Encoding": "gzip, br"})
    proxy = await proxy_factory(url)
    status, body, headers = await post(
        f"{proxy.url}/api/chat", UI_BODY, **{"Accept-Encoding": "gzip, br"}
    )
    assert status == 200 and body == direct[1]
    assert headers["Content-Encoding"] == "gzip"
    assert seen[1]["Accept-Encoding"] == "gzip, br"
    (ex,) = proxy.recorder.exchanges
    assert ex.stream is True and ex.upstream_complete
    assert ex.response_text == "".join(f"w{i} " for i in range(8))
