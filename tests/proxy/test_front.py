"""The proxy's own HTTP/1.1 front: real sockets on loopback, a real aiohttp fallback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from chaosstream.proxy.front import Downstream, Front, Incoming

Handler = Callable[[Incoming, Downstream], Awaitable[None]]
_writers: list[asyncio.StreamWriter] = []  # raw clients, closed as each server stops


async def _echo(req: Incoming, down: Downstream) -> None:
    body = f"{req.method} {req.path} {req.query_string} ".encode() + req.body
    await down.answer(200, body, {"Content-Type": "text/plain"})


async def _fallback(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("aiohttp:" + msg.data)
        return ws
    body = await request.read()
    return web.Response(text=f"aiohttp {request.method} {request.path} " + body.decode())


@contextlib.asynccontextmanager
async def serve(handler: Handler = _echo, **kw: float) -> AsyncIterator[tuple[int, Front]]:
    # What ChaosProxy hands over: the web.Server an AppRunner builds for an Application
    # (its router answers Expect: 100-continue).
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _fallback)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    fallback = runner.server
    assert fallback is not None
    front = Front(handler, fallback, **kw)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(front, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], front
    finally:
        for writer in _writers:
            writer.close()
        _writers.clear()
        server.close()
        await front.shutdown(1.0)
        await server.wait_closed()
        await runner.cleanup()


async def _raw(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    _writers.append(writer)
    writer.write(data)
    return reader, writer


async def _response(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[bytes, bytes]:
    """One response from a raw connection: its head and its body, framing removed."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lower = head.lower()
    if head_only:
        return head, b""
    if b"content-length:" in lower:
        n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(n)
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += data[:-2]
    return head, await asyncio.wait_for(reader.read(), 5)


async def test_keep_alive_reuses_one_connection_and_heads_match_aiohttp() -> None:
    """Sequential requests share one connection; Date, Server, Content-Type as aiohttp sends."""
    seen: list[object] = []

    async def handler(req: Incoming, down: Downstream) -> None:
        seen.append(down.transport)
        await _echo(req, down)

    async with serve(handler) as (port, _), aiohttp.ClientSession() as session:
        for i in range(5):
            url = f"http://127.0.0.1:{port}/v1/x%20y?n={i}"
            async with session.post(url, data=b"hi") as resp:
                assert resp.status == 200
                assert await resp.read() == f"POST /v1/x y n={i} hi".encode()
                assert resp.headers["Server"].startswith("Python/")
                assert resp.headers["Date"].endswith(" GMT")
                assert "Connection" not in resp.headers
    assert len(seen) == 5 and len(set(map(id, seen))) == 1


async def test_pipelined_requests_are_answered_in_order() -> None:
    """Four requests in one write (one with a chunked body) get four answers in order."""
    async with serve() as (port, _):
        reader, writer = await _raw(
            port,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /c?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"PUT /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nde\r\n1\r\nf\r\n0\r\n\r\n",
        )
        bodies = [(await _response(reader))[1] for _ in range(4)]
        writer.close()
    assert bodies == [b"GET /a  ", b"POST /b  abc", b"GET /c q=1 ", b"PUT /d  def"]


async def test_head_and_first_chunk_leave_together_and_framing_is_exact() -> None:
    """The head waits for the first write; chunks are framed byte-exactly, terminal chunk last."""
    gate = asyncio.Event()

    async def handler(req: Incoming, down: Downstream) -> None:
        down.headers["Content-Type"] = "text/event-stream"
        await down.prepare()
        assert down.chunked
        await down.write(b"a")
        await gate.wait()
        for data in (b"bc", b"", b"x" * 300):
            await down.write(data)
        await down.write_eof()
        await down.write_eof()  # idempotent

    async with serve(handler) as (port, _):
        reader, writer = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        first = await asyncio.wait_for(reader.read(65536), 5)
        gate.set()
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    head, _, body = first.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Connection: close" in head
    assert body == b"1\r\na\r\n"  # in the same read as the head
    assert rest == b"2\r\nbc\r\n12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n"


async def test_head_leaves_at_prepare_when_the_body_waits() -> None:
    """A prepared head with no body yet reaches the client (as aiohttp's StreamResponse),
    and a cut then is a broken body, not a connection closed before any head."""

    async def handler(req: Incoming, down: Downstream) -> None:
        await down.prepare()
        await asyncio.sleep(0.3)
        assert down.transport is not None
        down.transport.abort()

    async with serve(handler) as (port, _):
        reader, _w = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.25)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_head_request_gets_no_body_and_the_connection_stays_usable() -> None:
    """HEAD: the head only, though the handler writes; the next request reads cleanly."""

    async def handler(req: Incoming, down: Downstream) -> None:
        await down.prepare()
        await down.write(b"body bytes")

    async with serve(handler) as (port, _):
        reader, writer = await _raw(
            port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        head, _ = await _response(reader, head_only=True)
        assert b"Transfer-Encoding" not in head
        head2, body2 = await _response(reader)
        writer.close()
    assert head2.startswith(b"HTTP/1.1 200 OK") and body2 == b"body bytes"


async def test_handler_without_response_gets_500_and_failure_closes_only_its_connection() -> None:
    """No response → a JSON 500; an exception → 500 and close; other clients are still served."""

    async def handler(req: Incoming, down: Downstream) -> None:
        if req.path == "/boom":
            raise RuntimeError("boom")
        if req.path == "/late":
            await down.prepare()
            await down.write(b"part")
            raise RuntimeError("late boom")
        if req.path == "/ok":
            await _echo(req, down)

    async with serve(handler) as (port, _):
        reader, writer = await _raw(port, b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 500") and body.startswith(b'{"error"')
        writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 500") and b"boom" not in body
        assert await asyncio.wait_for(reader.read(), 5) == b""
        reader, writer = await _raw(port, b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest.endswith(b"4\r\npart\r\n")  # cut: no terminal chunk
        reader, writer = await _raw(port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _response(reader))[1] == b"GET /ok  "
        writer.close()


async def test_client_leaving_cancels_the_handler() -> None:
    """A client that closes mid-exchange cancels its handler (handler_cancellation)."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(req: Incoming, down: Downstream) -> None:
        await down.prepare()
        await down.write(b"first")
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serve(handler) as (port, _):
        _, writer = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 5)


async def test_client_leaving_after_its_response_ended_lets_the_handler_finish() -> None:
    """A client that read the whole response and closed left after its exchange, not
    during it: the handler, still finishing (the relay ends a body from the socket's
    callback, before its task wakes), is not cancelled."""
    finished = asyncio.Event()

    async def handler(req: Incoming, down: Downstream) -> None:
        await down.prepare()
        await down.write(b"whole", last=True)
        await asyncio.sleep(0.3)  # what is left of the exchange once its end was sent
        finished.set()

    async with serve(handler) as (port, _):
        reader, writer = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _response(reader))[1] == b"whole"
        writer.close()
        await asyncio.wait_for(finished.wait(), 5)


async def test_idle_timeout_cuts_silent_and_partial_heads_but_not_a_slow_response() -> None:
    """A silent connection and an unfinished head are closed; a long response is not cut."""

    async def handler(req: Incoming, down: Downstream) -> None:
        await down.prepare()
        await asyncio.sleep(0.8)  # silent far past the idle timeout
        await down.write(b"late")

    async with serve(handler, idle_timeout_s=0.2) as (port, _):
        loop = asyncio.get_running_loop()
        silent, _w1 = await _raw(port, b"")
        partial, _w2 = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n")
        slow, _w3 = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = loop.time()
        assert await asyncio.wait_for(silent.read(), 5) == b""
        assert await asyncio.wait_for(partial.read(), 5) == b""
        assert loop.time() - t0 < 2.0
        head, body = await _response(slow)
        assert head.startswith(b"HTTP/1.1 200") and body == b"late"
        # After the response the timer runs again: the idle keep-alive connection goes.
        assert await asyncio.wait_for(slow.read(), 5) == b""


@pytest.mark.parametrize(
    ("request_bytes", "expect"),
    [
        (b"GARBAGE\r\n\r\n", b" 400 Bad Request"),
        (b"GET / HTTP/1.0\r\n\r\n", b"aiohttp GET /"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", b" 400 Bad Request"),
        # Small enough a head, but one field past aiohttp's 8,190-byte field limit.
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", b" 400 Bad Request"),
        (b"GET /" + b"p" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b" 400 Bad Request"),
        (
            b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"z" * 2000,
            b"aiohttp POST /big",
        ),
    ],
    ids=["garbage", "http10", "huge-head", "long-field", "long-target", "body-over-limit"],
)
async def test_hand_off_to_aiohttp(request_bytes: bytes, expect: bytes) -> None:
    """Malformed, HTTP/1.0, oversized head or field or target, and body-over-limit requests
    are aiohttp's (its 400 for the limits of docs/limits.md)."""
    async with serve(max_body_bytes=1000) as (port, _):
        reader, writer = await _raw(port, request_bytes)
        data = await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
    assert data.startswith(expect) or expect in data


async def test_hand_off_after_served_requests_on_the_same_connection() -> None:
    """Pipelined behind a plain request (same write), a garbage one gets aiohttp's 400 and an
    HTTP/1.0 one aiohttp's answer, from its own first byte; so does one sent after a response."""
    async with serve() as (port, _):
        reader, writer = await _raw(
            port,
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
        )
        assert (await _response(reader))[1] == b"GET /one  "
        answer = await asyncio.wait_for(reader.read(65536), 5)
        assert answer.startswith(b"HTTP/1.0 400 Bad Request")
        reader, writer = await _raw(
            port, b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /h10 HTTP/1.0\r\n\r\n"
        )
        assert (await _response(reader))[1] == b"GET /one  "
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.endswith(b"aiohttp GET /h10 ") and b"/one" not in answer
        reader, writer = await _raw(port, b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _response(reader))[1] == b"GET /two  "
        writer.write(b"POST /three HTTP/1.0\r\nContent-Length: 2\r\n\r\nok")
        assert b"aiohttp POST /three ok" in await asyncio.wait_for(reader.read(), 5)
        writer.close()


async def test_websocket_upgrade_and_100_continue_are_aiohttp_s() -> None:
    """A WebSocket handshake gets aiohttp's 101 and frames; Expect: 100-continue its flow."""
    async with serve() as (port, _), aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            await ws.send_str("hi")
            assert (await ws.receive_str(timeout=5)) == "aiohttp:hi"
        async with session.post(f"http://127.0.0.1:{port}/c", data=b"body", expect100=True) as r:
            assert await r.text() == "aiohttp POST /c body"


async def test_shutdown_cancels_handlers_still_running() -> None:
    """shutdown(timeout) gives a running handler its time, then cancels it and closes."""
    cancelled = asyncio.Event()

    async def handler(req: Incoming, down: Downstream) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serve(handler) as (port, front):
        reader, writer = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await front.shutdown(0.3)
        assert cancelled.is_set() and 0.2 < loop.time() - t0 < 3.0
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_request_parts_as_aiohttp_gives_them() -> None:
    """Absolute-form target, percent-decoded path, raw query, non-UTF-8 header bytes kept."""
    got: list[Incoming] = []

    async def handler(req: Incoming, down: Downstream) -> None:
        got.append(req)
        await down.answer(204, b"", {})

    async with serve(handler) as (port, _):
        reader, _w = await _raw(
            port,
            b"GET http://h.example/a%2Fb%20c?x=%20&y HTTP/1.1\r\n"
            b"Host: h\r\nX-Raw: \xff\xfe\r\n\r\n",
        )
        head, _ = await _response(reader, head_only=True)
    assert head.startswith(b"HTTP/1.1 204 No Content") and b"Content-Length" not in head
    req = got[0]
    assert req.raw_path == "http://h.example/a%2Fb%20c?x=%20&y"
    assert (req.path, req.query_string) == ("/a/b c", "x=%20&y")
    assert req.headers["x-raw"].encode("utf-8", "surrogateescape") == b"\xff\xfe"
    assert (req.version, req.keep_alive) == ((1, 1), True)


async def test_a_line_break_in_a_response_header_never_reaches_the_client() -> None:
    """A header value with CRLF (response splitting) is refused: the client gets a 500."""

    async def handler(req: Incoming, down: Downstream) -> None:
        down.headers["X-Evil"] = "a\r\nSet-Cookie: stolen=1"
        await down.prepare()
        await down.write(b"never")

    async with serve(handler) as (port, _):
        reader, _w = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 500") and b"stolen" not in head + body


async def test_pipelined_flood_stops_being_read_while_an_exchange_runs() -> None:
    """32 MiB of pipelined requests behind a busy exchange stay mostly in the client's
    buffers (reading pauses past 64 KiB), and all are answered once it ends."""
    gate = asyncio.Event()

    async def handler(req: Incoming, down: Downstream) -> None:
        await gate.wait()
        await down.answer(200, str(len(req.body)).encode(), {})

    body = b"b" * (512 * 1024)
    one = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    async with serve(handler) as (port, _):
        reader, writer = await _raw(port, one * 64)
        await asyncio.sleep(0.5)
        # Kernel buffers on loopback hold a few MiB at most; the rest waits client-side.
        assert writer.transport.get_write_buffer_size() > 8 * 2**20
        gate.set()
        for _ in range(64):
            assert (await _response(reader))[1] == b"524288"


async def test_body_past_the_declared_length_is_dropped() -> None:
    """With a Content-Length the body goes raw, cut at that length (as aiohttp does)."""

    async def handler(req: Incoming, down: Downstream) -> None:
        down.headers["Content-Length"] = "3"
        await down.prepare()
        assert not down.chunked
        await down.write(b"ab")
        await down.write(b"cdef")

    async with serve(handler) as (port, _):
        reader, _w = await _raw(
            port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first = await _response(reader)
        second = await _response(reader)
    assert first[1] == second[1] == b"abc"
    assert second[0].startswith(b"HTTP/1.1 200 OK")  # nothing past the length leaked in


async def test_a_head_growing_over_many_reads_goes_to_aiohttp() -> None:
    """A head sent in small pieces past max_head_bytes is handed off (aiohttp's 400), not kept."""
    async with serve() as (port, _):
        reader, writer = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
        data = b""
        for _ in range(80):  # 80 KB at most; the hand-off comes past 32 KiB
            writer.write(b"a" * 1000)
            with contextlib.suppress(asyncio.TimeoutError):
                data = await asyncio.wait_for(reader.read(65536), 0.02)
                break
    assert data.startswith(b"HTTP/1.0 400 Bad Request")


async def _uvloop_scenario() -> list[bytes]:
    got: list[bytes] = []
    async with serve() as (port, _):
        reader, _w = await _raw(
            port, b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /h10 HTTP/1.0\r\n\r\n"
        )
        got.append((await _response(reader))[1])
        got.append(await asyncio.wait_for(reader.read(), 5))
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            await ws.send_str("hi")
            got.append(str(await ws.receive_str(timeout=5)).encode())
    return got


def test_serving_and_hand_off_on_uvloop() -> None:
    """On uvloop's transports: served, pipelined hand-off from the request's first byte,
    WebSocket hand-off (uvloop's set_protocol)."""
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        got = loop.run_until_complete(_uvloop_scenario())
    finally:
        loop.close()
    assert got[0] == b"GET /one  "
    assert got[1].endswith(b"aiohttp GET /h10 ") and b"/one" not in got[1]
    assert got[2] == b"aiohttp:hi"
