"""The transparent proxy: byte-exact streaming, headers, errors, cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from chaosstream.mock import MockServer
from chaosstream.proxy.server import ChaosProxy
from chaosstream.streams.providers import token_text
from chaosstream.streams.sse import EventDecoder
from tests.conftest import ProxyFactory, make_profile

# An SSE stream with every awkward trait at once: CRLF and LF endings, a
# comment, multi-line data, non-ASCII text, and the terminal event.
AWKWARD = (
    b": keep-alive comment\r\n\r\n"
    + b"id: 1\r\nevent: message\r\ndata: caf\xc3\xa9 na\xc3\xafve \xe2\x9c\x93\r\n\r\n"
    + b"data: line one\ndata: line two\n\n"
    + b'retry: 1500\nid: 2\ndata: {"x": "\xf0\x9f\x98\x80"}\n\n'
    + b"data: [DONE]\n\n"
)
# Read sizes that cut inside CRLF pairs and inside UTF-8 characters.
CUTS = [1, 3, 2, 17, 5, 8, 1, 1, 29, 4, 7, 13, 2, 64]


def awkward_chunks() -> list[bytes]:
    chunks, i, k = [], 0, 0
    while i < len(AWKWARD):
        n = CUTS[k % len(CUTS)]
        chunks.append(AWKWARD[i : i + n])
        i += n
        k += 1
    return chunks


async def awkward_upstream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Upstream": "yes"})
    await resp.prepare(request)
    for chunk in awkward_chunks():
        await resp.write(chunk)
        await asyncio.sleep(0.002)
    return resp


@pytest.fixture
async def raw_upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/awkward", awkward_upstream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def fetch(url: str, **kwargs: object) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
    method = str(kwargs.pop("method", "GET"))
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.request(method, url, **kwargs) as r,  # type: ignore[arg-type]
    ):
        return r.status, await r.read(), r.headers


async def test_sse_with_awkward_chunking_is_byte_exact(
    raw_upstream: str, proxy_factory: ProxyFactory
) -> None:
    """An SSE body cut inside CRLFs and UTF-8 characters arrives byte for byte, clean or framed."""
    direct = await fetch(f"{raw_upstream}/awkward")
    assert direct[1] == AWKWARD
    clean = await proxy_factory(raw_upstream)
    through = await fetch(f"{clean.url}/awkward")
    assert through[1] == AWKWARD
    assert through[2]["X-Upstream"] == "yes"
    # A fault that needs events but delays nothing still delivers the same bytes.
    framed = await proxy_factory(
        raw_upstream, make_profile([{"type": "latency", "per_event_ms": 0.001}])
    )
    assert (await fetch(f"{framed.url}/awkward"))[1] == AWKWARD


async def test_large_binary_response_is_byte_exact(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A 5 MiB binary body has the same hash direct and through the proxy."""
    url = "/bytes?n=5242880&seed=3"
    status, direct, _ = await fetch(mock.url + url)
    proxy = await proxy_factory(mock.url)
    status2, through, headers = await fetch(proxy.url + url)
    assert status == status2 == 200
    assert len(through) == 5 * 1024 * 1024
    assert hashlib.sha256(through).digest() == hashlib.sha256(direct).digest()
    assert headers["Content-Length"] == str(5 * 1024 * 1024)


async def test_large_request_body_is_byte_exact(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A 3 MiB request body reaches the upstream unchanged."""
    body = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    proxy = await proxy_factory(mock.url)
    status, echoed, headers = await fetch(
        proxy.url + "/echo",
        method="POST",
        data=io.BytesIO(body),
        headers={"Content-Type": "application/x-test"},
    )
    assert status == 200
    assert headers["x-chaosstream-sha256"] == hashlib.sha256(body).hexdigest()
    assert echoed == body


async def first_token_ms(base: str, session: aiohttp.ClientSession) -> float:
    start = time.monotonic()
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "ttft"}]}
    decoder = EventDecoder()
    async with session.post(base + "/v1/chat/completions", json=body) as resp:
        async for data in resp.content.iter_any():
            for event in decoder.feed(data):
                if token_text(event, "openai"):
                    return (time.monotonic() - start) * 1000.0
    raise AssertionError("no token")


async def test_clean_proxy_does_not_hold_back_the_first_byte(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """TTFT through the clean profile is within a few ms of direct (median of 7)."""
    proxy = await proxy_factory(mock.url)
    async with aiohttp.ClientSession() as session:
        direct = sorted([await first_token_ms(mock.url, session) for _ in range(7)])[3]
        through = sorted([await first_token_ms(proxy.url, session) for _ in range(7)])[3]
    assert through - direct < 20.0, (direct, through)


async def test_first_byte_latency_adds_its_setting(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """latency first_byte_ms: 300 adds about 300 ms to TTFT."""
    slow = await proxy_factory(mock.url, make_profile([{"type": "latency", "first_byte_ms": 300}]))
    clean = await proxy_factory(mock.url)
    async with aiohttp.ClientSession() as session:
        base = await first_token_ms(clean.url, session)
        delayed = await first_token_ms(slow.url, session)
    assert 270 <= delayed - base <= 450, (base, delayed)
    assert [f.action for f in slow.fault_log] == ["delay_first_byte"]


async def raw_stream(proxy_url: str, read_timeout: float) -> tuple[bytes, str]:
    """POST a streaming chat request over a raw socket; return what arrived and how it ended."""
    host, port = proxy_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "cut"}]}
    )
    writer.write(
        (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
    )
    await writer.drain()
    got = b""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not data:
                return got, "eof"
            got += data
    except ConnectionResetError:
        return got, "reset"
    except asyncio.TimeoutError:
        return got, "silent"
    finally:
        writer.close()


def dechunk(raw: bytes) -> tuple[bytes, bool]:
    """The body of a chunked HTTP/1.1 response, and whether its last-chunk arrived."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body, True
        body += rest[:size]
        rest = rest[size + 2 :]
    return body, False


@pytest.mark.parametrize("mode", ["reset", "close", "stall"])
async def test_disconnect_after_five_events(
    mode: str, mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """disconnect after_events: 5 delivers exactly 5 data events, then RST / clean EOF / silence."""
    profile = make_profile([{"type": "disconnect", "after_events": 5, "mode": mode}])
    proxy = await proxy_factory(mock.url, profile)
    raw, ending = await raw_stream(proxy.url, read_timeout=1.0)
    body, finished = dechunk(raw)
    events = EventDecoder().feed(body)
    assert len(events) == 5
    assert all(e.data != "[DONE]" for e in events)
    assert ending == {"reset": "reset", "close": "eof", "stall": "silent"}[mode]
    assert finished is (mode == "close")
    assert [f.action for f in proxy.fault_log] == [mode]


async def test_client_leaving_mid_stream_closes_upstream(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """When the client goes away, the upstream sees its request closed at once."""
    proxy = await proxy_factory(mock.url)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "leave"}]}
    headers = {"x-chaosstream-mock-tokens": "2000", "x-chaosstream-mock-tokens-per-s": "100"}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(proxy.url + "/v1/chat/completions", json=body, headers=headers)
        await resp.content.readany()
        assert mock.open_streams == 1
        resp.close()
    for _ in range(100):
        if mock.closed_early == 1 and mock.open_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert mock.closed_early == 1
    assert mock.open_streams == 0
    assert proxy.recorder.exchanges[-1].outcome == "client_gone"
    assert not proxy.recorder.open


async def test_unreachable_upstream_gives_502_naming_the_cause(proxy_factory: ProxyFactory) -> None:
    """An upstream that refuses connections gives the client a 502 with a short JSON error."""
    sock_holder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = sock_holder.sockets[0].getsockname()[1]
    sock_holder.close()
    await sock_holder.wait_closed()
    proxy = await proxy_factory(f"http://127.0.0.1:{port}")
    status, body, _ = await fetch(proxy.url + "/v1/models")
    assert status == 502
    error = json.loads(body)["error"]
    assert error["type"] == "bad_gateway"
    assert f"127.0.0.1:{port}" in error["message"]
    assert "refused" in error["message"].lower() or "connect" in error["message"].lower()


async def test_upstream_dying_mid_body_breaks_the_client_body(proxy_factory: ProxyFactory) -> None:
    """An upstream that dies mid-body makes the client's body end early too, not look complete."""

    async def dying(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    app = web.Application()
    app.router.add_get("/die", dying)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        proxy = await proxy_factory(f"http://{host}:{port}")
        with pytest.raises(aiohttp.ClientPayloadError):
            await fetch(proxy.url + "/die")
        for _ in range(50):
            if proxy.recorder.exchanges:
                break
            await asyncio.sleep(0.01)
        assert proxy.recorder.exchanges[-1].outcome == "upstream_error"
    finally:
        await runner.cleanup()


async def test_sdk_text_through_proxy_equals_direct(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """The official openai and anthropic SDKs read the same text through the proxy as direct."""
    import anthropic
    import openai

    proxy = await proxy_factory(mock.url)
    messages = [{"role": "user", "content": "same text please"}]

    async def openai_text(base: str) -> str:
        async with openai.AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0) as client:
            stream = await client.chat.completions.create(model="m", messages=messages, stream=True)  # type: ignore[arg-type]
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def anthropic_text(base: str) -> str:
        client = anthropic.AsyncAnthropic(base_url=base, api_key="x", max_retries=0)
        async with (
            client,
            client.messages.stream(
                model="chaosstream-mock",
                max_tokens=100,
                messages=messages,  # type: ignore[arg-type]
            ) as stream,
        ):
            return "".join([t async for t in stream.text_stream])

    assert await openai_text(proxy.url) == await openai_text(mock.url) != ""
    assert await anthropic_text(proxy.url) == await anthropic_text(mock.url) != ""


def test_upstream_must_be_http_url() -> None:
    """A non-HTTP upstream is refused with a clear message."""
    with pytest.raises(ValueError, match="http:// or https://"):
        ChaosProxy("ftp://example.com", make_profile())


async def test_shutdown_closes_open_streams_and_their_upstreams(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """Closing the proxy ends a stalled stream and a live one, and both upstream requests."""
    stalled = await proxy_factory(
        mock.url, make_profile([{"type": "disconnect", "after_events": 2, "mode": "stall"}])
    )
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "bye"}]}
    headers = {"x-chaosstream-mock-tokens": "2000", "x-chaosstream-mock-tokens-per-s": "50"}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(stalled.url + "/v1/chat/completions", json=body, headers=headers)
        await resp.content.readany()
        started = time.monotonic()
        await stalled.close()
        assert time.monotonic() - started < 5
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    for _ in range(100):
        if mock.open_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert mock.open_streams == 0
    assert not stalled.recorder.open


async def test_close_cut_announces_connection_close(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A close-mode cut says Connection: close up front, so a pooled client never reuses it."""
    profile = make_profile([{"type": "disconnect", "after_events": 3, "mode": "close"}])
    proxy = await proxy_factory(mock.url, profile)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "pool"}]}
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.post(proxy.url + "/v1/chat/completions", json=body) as resp:
                assert resp.headers["Connection"] == "close"
                events = EventDecoder().feed(await resp.read())
                assert len(events) == 3
    assert [f.action for f in proxy.fault_log] == ["close"] * 20


async def test_in_stream_error_keeps_the_connection(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """After an in-stream error the body ends cleanly and the connection stays reusable."""
    profile = make_profile([{"type": "stream_error", "after_events": 2}])
    proxy = await proxy_factory(mock.url, profile)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "err"}]}
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.post(proxy.url + "/v1/chat/completions", json=body) as resp:
                assert resp.headers.get("Connection", "").lower() != "close"
                events = EventDecoder().feed(await resp.read())
                assert '"error"' in events[-1].data
    assert [f.action for f in proxy.fault_log] == ["overloaded"] * 5


async def test_batched_events_are_not_held_back(proxy_factory: ProxyFactory) -> None:
    """With only prompt faults, events leave as soon as their read came: none waits for the next
    read, and a dropped terminal event does not strand the ones before it."""

    async def two_reads(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\ndata: two\n\n")
        await asyncio.sleep(0.4)
        await resp.write(b"data: three\n\ndata: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/two", two_reads)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        profile = make_profile(
            [
                {"type": "disconnect", "after_events": 100},
                {"type": "corrupt", "action": "drop_terminal"},
            ]
        )
        proxy = await proxy_factory(f"http://{host}:{port}", profile)
        body = b""
        two_at = None
        start = time.monotonic()
        async with aiohttp.ClientSession() as session, session.get(proxy.url + "/two") as resp:
            async for data in resp.content.iter_any():
                body += data
                if two_at is None and b"data: two\n\n" in body:
                    two_at = time.monotonic() - start
        assert body == b"data: one\n\ndata: two\n\ndata: three\n\n"
        assert two_at is not None and two_at < 0.3, two_at
    finally:
        await runner.cleanup()


# A delay whose read-ahead task sits inside upstream's read: the network block's, or latency's.
DELAYS: dict[str, tuple[dict[str, object], list[dict[str, object]]]] = {
    "network": ({"network": {"latency_ms": 30}}, []),
    "latency": ({}, [{"type": "latency", "per_event_ms": 30}]),
}


@pytest.mark.parametrize("mode", ["close", "reset"])
@pytest.mark.parametrize("delay", sorted(DELAYS))
async def test_cut_behind_a_delaying_fault_is_clean(
    mode: str, delay: str, mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A cut behind a delay (whose read-ahead task is inside upstream's read) still ends the
    stream as the profile says -- clean end or RST after 5 events -- and is recorded a fault."""
    extra, faults = DELAYS[delay]
    cut = {"type": "disconnect", "after_events": 5, "mode": mode}
    profile = make_profile([*faults, cut], **extra)
    proxy = await proxy_factory(mock.url, profile)
    raw, ending = await raw_stream(proxy.url, read_timeout=2.0)
    body, finished = dechunk(raw)
    assert len(EventDecoder().feed(body)) == 5
    assert ending == {"reset": "reset", "close": "eof"}[mode]
    assert finished is (mode == "close")
    for _ in range(100):
        if not proxy.recorder.open:
            break
        await asyncio.sleep(0.01)
    ex = proxy.recorder.exchanges[-1]
    assert ex.outcome == "fault", ex.error
    assert mode in [f.action for f in ex.faults]


async def test_network_profile_sends_a_bodyless_get_as_sent_one_way_delay_each_way(
    proxy_factory: ProxyFactory,
) -> None:
    """Through mobile-3g (200 ms each way) a GET with no body reaches upstream without
    Transfer-Encoding, after the one-way delay, and the answer takes about twice that."""
    seen: list[tuple[float, str | None, str | None]] = []
    start = 0.0

    async def models(request: web.Request) -> web.Response:
        await request.read()
        te, cl = request.headers.get("Transfer-Encoding"), request.headers.get("Content-Length")
        seen.append((time.monotonic() - start, te, cl))
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        proxy = await proxy_factory(f"http://{host}:{port}", "mobile-3g")
        async with aiohttp.ClientSession() as session:
            await (await session.get(proxy.url + "/v1/models")).read()  # pool warm
            seen.clear()
            start = time.monotonic()
            async with session.get(proxy.url + "/v1/models") as resp:
                assert resp.status == 200
                await resp.read()
            total = time.monotonic() - start
        ((arrived, te, cl),) = seen
        assert te is None and cl in (None, "0"), (te, cl)
        assert 0.19 <= arrived <= 0.6, arrived
        assert 0.39 <= total <= 1.2, total
    finally:
        await runner.cleanup()


async def test_a_refusal_to_a_page_carries_cors_so_the_page_can_read_it(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A 429 the proxy makes itself has CORS headers when a page asked (Origin), none otherwise."""
    profile = make_profile([{"type": "http_error", "status": 429, "retry_after_s": 1}])
    proxy = await proxy_factory(mock.url, profile)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        url = f"{proxy.url}/v1/chat/completions"
        async with session.post(url, json=body, headers={"Origin": "http://127.0.0.1:1"}) as r:
            assert r.status == 429
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert r.headers["Access-Control-Expose-Headers"] == "*"
            assert r.headers["Retry-After"] == "1"
        async with session.post(url, json=body) as r:
            assert r.status == 429 and "Access-Control-Allow-Origin" not in r.headers
