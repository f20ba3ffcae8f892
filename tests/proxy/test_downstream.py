"""The client's side of an exchange (proxy/downstream.py) on real sockets: what a
handler writes through a Downstream reaches a raw client byte-exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from chaosstream.proxy.downstream import AiohttpSide, Downstream, abort, drained

Handler = Callable[[Downstream], Awaitable[None]]
Serve = Callable[[Handler], Awaitable[int]]


@pytest.fixture
async def serve_side() -> AsyncIterator[Serve]:
    """Serve one handler through AiohttpSide on a free port; yields the port."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> int:
        async def handle(request: web.Request) -> web.StreamResponse:
            side = AiohttpSide(request)
            await handler(side)
            assert side.response is not None
            return side.response

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    yield start
    for runner in runners:
        await runner.cleanup()


async def exchange(port: int, request: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") -> bytes:
    """Send ``request`` on a raw socket and read until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    out = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 1.0):
            out += chunk
    except (asyncio.TimeoutError, ConnectionResetError):
        pass
    writer.close()
    return out


async def test_a_streamed_body_is_chunked_and_ends_with_the_last_chunk(serve_side: Serve) -> None:
    """prepare(), writes and write_eof() give the head, one chunk per write, and 0 CRLF CRLF."""

    async def handler(down: Downstream) -> None:
        down.status, down.reason = 201, "Made"
        down.headers["Content-Type"] = "text/event-stream"
        await down.prepare()
        assert down.chunked
        for event in (b"data: 1\n\n", b"data: 22\n\n"):
            await down.write(event)
        await down.write_eof()
        await down.write_eof()  # idempotent

    raw = await exchange(await serve_side(handler))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 Made\r\n")
    assert b"Content-Type: text/event-stream" in head
    assert body == b"9\r\ndata: 1\n\n\r\na\r\ndata: 22\n\n\r\n0\r\n\r\n"


async def test_an_answer_has_a_length_and_the_given_head(serve_side: Serve) -> None:
    """answer() sends a whole response with Content-Length and the headers given."""

    async def handler(down: Downstream) -> None:
        await down.answer(
            429, b'{"error":1}', {"Retry-After": "2", "Content-Type": "application/json"}
        )

    raw = await exchange(await serve_side(handler))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ")
    assert b"Content-Length: 11" in head and b"Retry-After: 2" in head
    assert body == b'{"error":1}'


async def test_force_close_announces_and_closes(serve_side: Serve) -> None:
    """force_close() before prepare(): Connection: close in the head, FIN after the body."""

    async def handler(down: Downstream) -> None:
        down.force_close()
        await down.prepare()
        await down.write(b"x")
        await down.write_eof()

    port = await serve_side(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 5)  # returns only at the server's FIN
    writer.close()
    assert b"Connection: close" in raw.partition(b"\r\n\r\n")[0]


async def test_abort_with_rst_resets_the_client(serve_side: Serve) -> None:
    """abort(rst=True) after the bytes drained: the client reads them, then a reset."""

    async def handler(down: Downstream) -> None:
        await down.prepare()
        await down.write(b"partial")
        await drained(down.transport)
        await asyncio.sleep(0.05)
        abort(down.transport, rst=True)
        await asyncio.sleep(0.1)

    port = await serve_side(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    with pytest.raises(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            got += chunk
    writer.close()
    assert b"partial" in got
