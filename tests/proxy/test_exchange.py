"""What both proxies share, on a real aiohttp server: request_info (provider, stream flag,
parsed body), abort (RST or plain close, seen by a raw socket) and drained (downstream.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chaosstream.proxy.downstream import drained
from chaosstream.proxy.exchange import abort, request_info

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[str, int]]]]:
    """Serve one catch-all handler on a free loopback port; (host, port) back."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> tuple[str, int]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return str(host), int(port)

    yield start
    for runner in runners:
        await runner.cleanup()


async def _info_echo(request: web.Request) -> web.Response:
    """Answer with what request_info made of the request."""
    body = await request.read()
    info = request_info(request, body)
    return web.json_response(
        {
            "method": info.method,
            "path": info.path,
            "query": info.query,
            "headers": info.headers,
            "body_ok": info.body == body,
            "body_len": len(info.body),
            "provider": info.provider,
            "stream": info.stream,
            "json": info.json,
        }
    )


STREAM_CASES = [
    # (path, body, accept, provider, stream, json)
    ("/v1/chat/completions", b'{"stream": true}', None, "openai", True, {"stream": True}),
    ("/v1/chat/completions", b'{"stream": false}', None, "openai", False, {"stream": False}),
    ("/v1/messages", b'{"model": "m"}', None, "anthropic", False, {"model": "m"}),
    ("/v1/messages", b'{"stream": true}', None, "anthropic", True, {"stream": True}),
    ("/sse", b"", "text/event-stream", "sse", True, None),
    ("/sse", b"", "application/json", "sse", False, None),
    # Either signal is enough: an SSE Accept with "stream": false still streams.
    (
        "/v1/chat/completions",
        b'{"stream": false}',
        "text/event-stream",
        "openai",
        True,
        {"stream": False},
    ),
    # A non-boolean "stream" is not a flag.
    ("/v1/chat/completions", b'{"stream": "yes"}', None, "openai", False, {"stream": "yes"}),
    ("/v1/chat/completions", b'["stream", true]', None, "openai", False, ["stream", True]),
    ("/v1/chat/completions", b"{not json", None, "openai", False, None),
    ("/v1/chat/completions", b"stream=true", None, "openai", False, None),
    (
        "/openai/deployments/d/chat/completions",
        b'{"stream": true}',
        None,
        "openai",
        True,
        {"stream": True},
    ),
]


@pytest.mark.parametrize(("path", "body", "accept", "provider", "stream", "parsed"), STREAM_CASES)
async def test_request_info_reads_provider_and_stream_flag(
    serve: Callable[[Handler], Awaitable[tuple[str, int]]],
    path: str,
    body: bytes,
    accept: str | None,
    provider: str,
    stream: bool,
    parsed: Any,
) -> None:
    """The stream flag comes from a boolean JSON `stream` or an SSE Accept; the provider from
    the path's tail; the body is kept byte for byte and parsed only when it is JSON."""
    host, port = await serve(_info_echo)
    headers = {"Accept": accept} if accept else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://{host}:{port}{path}", data=body, headers=headers) as resp,
    ):
        got = await resp.json()
    assert (got["provider"], got["stream"]) == (provider, stream)
    assert got["body_ok"] and got["body_len"] == len(body)
    assert got["json"] == parsed


async def test_request_info_keeps_method_query_and_lowercased_headers(
    serve: Callable[[Handler], Awaitable[tuple[str, int]]],
) -> None:
    """Method, path and query pass as sent; header names are lower-cased and the last of a
    repeated header wins."""
    host, port = await serve(_info_echo)
    headers = [("X-Trace", "one"), ("X-Trace", "two"), ("X-Chaosstream-Scope", "A")]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}/sse?prompt=hi&tokens=3", headers=headers) as r,
    ):
        got = await r.json()
    assert (got["method"], got["path"]) == ("GET", "/sse")
    assert got["query"] == "prompt=hi&tokens=3"
    assert got["headers"]["x-trace"] == "two"
    assert got["headers"]["x-chaosstream-scope"] == "A"
    assert all(name == name.lower() for name in got["headers"])
    assert (got["json"], got["stream"], got["body_len"]) == (None, False, 0)


async def test_request_info_survives_json_too_deep_to_parse(
    serve: Callable[[Handler], Awaitable[tuple[str, int]]],
) -> None:
    """100,000 nested arrays: no RecursionError escapes, json is None, stream unknown (false)."""
    host, port = await serve(_info_echo)
    body = b"[" * 100_000 + b"]" * 100_000
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://{host}:{port}/v1/chat/completions", data=body) as resp,
    ):
        assert resp.status == 200
        got = await resp.json()
    assert (got["json"], got["stream"], got["body_len"]) == (None, False, len(body))


async def _raw_get(host: str, port: int, path: str) -> tuple[bytes, str]:
    """GET over a raw socket; what arrived and how the connection ended."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    got = b""
    try:
        while data := await asyncio.wait_for(reader.read(65536), 5):
            got += data
        return got, "eof"
    except ConnectionResetError:
        return got, "reset"
    finally:
        writer.close()


@pytest.mark.parametrize(("rst", "ending"), [(True, "reset"), (False, "eof")])
async def test_abort_cuts_a_response_mid_body(
    serve: Callable[[Handler], Awaitable[tuple[str, int]]], rst: bool, ending: str
) -> None:
    """abort(rst=True) ends the connection with RST (ConnectionResetError on the client's read),
    abort() with a plain close (EOF); either way the chunked body has no last-chunk."""

    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: partial\n\n")
        await drained(request.transport)
        await asyncio.sleep(0.05)  # the proxy's grace: the client reads before the RST lands
        abort(request, rst=rst)
        return resp

    host, port = await serve(cut)
    got, how = await _raw_get(host, port, "/cut")
    assert how == ending
    assert got.startswith(b"HTTP/1.1 200") and b"data: partial\n\n" in got
    assert not got.endswith(b"0\r\n\r\n")


async def test_abort_after_the_client_left_does_nothing(
    serve: Callable[[Handler], Awaitable[tuple[str, int]]],
) -> None:
    """Once the client is gone (no transport), abort with or without RST is a quiet no-op."""
    done: list[str] = []

    async def late(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(250):  # 5 s at most
            if request.transport is None:
                break
            await asyncio.sleep(0.02)
        assert request.transport is None
        abort(request, rst=True)
        abort(request)
        done.append("ok")
        return resp

    host, port = await serve(late)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    for _ in range(250):
        if done:
            break
        await asyncio.sleep(0.02)
    assert done == ["ok"]


async def test_drained_waits_for_the_buffer_and_gives_up_at_its_timeout(
    serve: Callable[[Handler], Awaitable[tuple[str, int]]],
) -> None:
    """drained returns at its timeout while the client reads nothing, and as soon as the
    write buffer is empty once the client reads."""
    size = 32 << 20  # more than loopback's kernel buffers hold
    seen: dict[str, tuple[float, int]] = {}
    reading, flowed = asyncio.Event(), asyncio.Event()

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        transport = request.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        # Straight to the transport: resp.write would itself wait for the reader.
        transport.write(b"z" * size)
        start = loop.time()
        await drained(request.transport, timeout=0.3)
        seen["stuck"] = (loop.time() - start, transport.get_write_buffer_size())
        reading.set()
        start = loop.time()
        await drained(request.transport, timeout=20)
        seen["flowing"] = (loop.time() - start, transport.get_write_buffer_size())
        flowed.set()
        return resp

    host, port = await serve(big)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reading.wait(), 5)
    await reader.readuntil(b"\r\n\r\n")
    started = time.monotonic()
    assert len(await asyncio.wait_for(reader.readexactly(size), 20)) == size
    await asyncio.wait_for(flowed.wait(), 5)
    writer.close()
    stuck_s, stuck_left = seen["stuck"]
    assert 0.28 <= stuck_s < 2.0, stuck_s
    assert stuck_left > 0
    flowing_s, flowing_left = seen["flowing"]
    assert flowing_left == 0
    assert flowing_s < time.monotonic() - started + 1.0
