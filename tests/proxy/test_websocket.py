"""WebSocket pass-through on the proxy: messages both ways (text stays text, binary stays
binary), subprotocols, faults on server messages, handshake and upstream failures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from chaosstream.mock import MockServer, answer_text, answer_tokens
from chaosstream.proxy.server import ChaosProxy
from tests.conftest import ProxyFactory, make_profile

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Upstream = Callable[[dict[str, Handler]], Awaitable[str]]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """Start small aiohttp upstreams on free ports; all are cleaned up after the test."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _raw(url: str, request: bytes, timeout: float = 5.0) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


async def _settled(proxy: ChaosProxy, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(proxy.recorder.exchanges) >= count and not proxy.recorder.open:
            return
        await asyncio.sleep(0.02)


def _ws_url(proxy: ChaosProxy, path: str = "/ws") -> str:
    return proxy.url.replace("http://", "ws://") + path


async def test_websocket_messages_pass_both_ways(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A WebSocket through the proxy carries the prompt up and every token message down."""
    proxy = await proxy_factory(mock.url)
    ws_url = proxy.url.replace("http://", "ws://") + "/ws"
    texts: list[str] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.send_json({"prompt": "hello ws", "tokens": 12})
        async for msg in ws:
            data = json.loads(msg.data)
            if data["type"] == "done":
                break
            texts.append(data["text"])
    assert "".join(texts) == answer_text({"prompt": "hello ws"}, 12)


async def test_frame_types_subprotocol_path_and_query_reach_upstream(
    proxy_factory: ProxyFactory, upstream: Upstream
) -> None:
    """Text comes back as text and binary as binary, byte for byte; the subprotocol is agreed
    end to end; path and query reach upstream; the exchange is recorded as a 101 with its bytes."""
    seen: list[tuple[str, str]] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        sock = web.WebSocketResponse(protocols=("chat.v2",))
        await sock.prepare(request)
        seen.append((request.path_qs, sock.ws_protocol or ""))
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    proxy = await proxy_factory(await upstream({"/ws/{room}": echo}))
    binary = bytes(range(256)) * 4
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(_ws_url(proxy, "/ws/r1?user=a"), protocols=("chat.v2",)) as ws,
    ):
        assert ws.protocol == "chat.v2"
        await ws.send_str("caf\u00e9 \u2713")
        text = await asyncio.wait_for(ws.receive(), 5)
        await ws.send_bytes(binary)
        blob = await asyncio.wait_for(ws.receive(), 5)
    assert (text.type, text.data) == (WSMsgType.TEXT, "caf\u00e9 \u2713")
    assert (blob.type, blob.data) == (WSMsgType.BINARY, binary)
    assert seen == [("/ws/r1?user=a", "chat.v2")]
    await _settled(proxy, 1)
    (ex,) = proxy.recorder.exchanges
    # The client closed first: it left, the upstream did not end the exchange.
    assert (ex.status, ex.path, ex.outcome) == (101, "/ws/r1", "client_gone")
    assert ex.bytes_out == len("caf\u00e9 \u2713".encode()) + len(binary)


async def _messages_until_closed(
    proxy: ChaosProxy, count: int
) -> tuple[list[str], aiohttp.WSMessage, int | None]:
    """Ask the mock for `count` tokens; the token texts read, the message that ended it, and
    the close code the client was left with."""
    texts: list[str] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(_ws_url(proxy)) as ws:
        await ws.send_json({"prompt": "cut me", "tokens": count})
        while True:
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type != WSMsgType.TEXT:
                return texts, msg, ws.close_code
            texts.append(json.loads(msg.data)["text"])


@pytest.mark.parametrize(("mode", "code"), [("close", 1011), ("reset", 1006)])
async def test_disconnect_counts_messages_and_cuts_the_socket(
    mode: str, code: int, mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """disconnect after_events: 3 on /ws delivers exactly 3 messages, then a 1011 close frame
    (close) or a dropped connection without one (reset: 1006); the fault is logged."""
    profile = make_profile([{"type": "disconnect", "after_events": 3, "mode": mode}])
    proxy = await proxy_factory(mock.url, profile)
    texts, last, close_code = await _messages_until_closed(proxy, 20)
    assert len(texts) == 3
    assert "".join(texts) == "".join(answer_tokens("cut me", 20)[:3])
    assert last.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    assert close_code == code
    assert [f.action for f in proxy.fault_log] == [mode]
    await _settled(proxy, 1)
    assert proxy.recorder.exchanges[-1].outcome == "fault"


async def test_close_cut_websocket_exchange_is_recorded(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """After a close-mode cut the exchange is recorded as a fault and no longer open."""
    profile = make_profile([{"type": "disconnect", "after_events": 3, "mode": "close"}])
    proxy = await proxy_factory(mock.url, profile)
    texts, _, close_code = await _messages_until_closed(proxy, 20)
    assert (len(texts), close_code) == (3, 1011)
    await _settled(proxy, 1, timeout=2.0)
    assert not proxy.recorder.open
    assert [e.outcome for e in proxy.recorder.exchanges] == ["fault"]


async def test_per_event_latency_holds_each_message_from_its_arrival(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """latency per_event_ms: 300 holds every message after the first ~300 ms from its arrival:
    the burst arrives late but whole, the delays do not pile up (faults/latency.py)."""
    profile = make_profile([{"type": "latency", "per_event_ms": 300}])
    proxy = await proxy_factory(mock.url, profile)
    texts: list[str] = []
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(_ws_url(proxy)) as ws:
        await ws.send_json({"prompt": "slow ws", "tokens": 5})
        async for msg in ws:
            arrivals.append(time.monotonic())
            data = json.loads(msg.data)
            if data["type"] == "done":
                break
            texts.append(data["text"])
    assert "".join(texts) == answer_text({"prompt": "slow ws"}, 5)
    # The mock sends 6 messages within ~20 ms; piled-up delays would take 1.5 s.
    gap = arrivals[1] - arrivals[0]
    assert 0.27 <= gap <= 1.0, gap
    assert arrivals[-1] - arrivals[0] < 1.0, arrivals


async def test_unreachable_or_refusing_upstream_gives_502(
    proxy_factory: ProxyFactory, upstream: Upstream
) -> None:
    """An upstream that refuses connections, or answers the handshake with plain HTTP, gives
    the client a 502 naming the cause; the exchange is an upstream_error."""
    holder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = holder.sockets[0].getsockname()[1]
    holder.close()
    await holder.wait_closed()

    async def not_ws(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="no sockets here")

    for base in (f"http://127.0.0.1:{port}", await upstream({"/ws": not_ws})):
        proxy = await proxy_factory(base)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(_ws_url(proxy))
            assert refused.value.status == 502
            async with session.get(proxy.url + "/ws", headers=_upgrade_headers()) as resp:
                error = (await resp.json())["error"]
        assert resp.status == 502 and error["type"] == "bad_gateway"
        assert error["message"].startswith("cannot open upstream WebSocket: ")
        await _settled(proxy, 2)
        assert [e.outcome for e in proxy.recorder.exchanges] == ["upstream_error"] * 2


async def test_bad_websocket_handshake_never_dials_upstream(
    proxy_factory: ProxyFactory, upstream: Upstream
) -> None:
    """A client handshake the proxy cannot accept gets a 400 and opens no upstream WebSocket."""
    dialed: list[int] = []

    async def ws(request: web.Request) -> web.StreamResponse:
        dialed.append(1)
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for _ in sock:
            pass
        return sock

    url = await upstream({"/ws": ws})
    proxy = await proxy_factory(url)
    bad = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"  # no Sec-WebSocket-Key
    )
    for _ in range(20):
        answer = await _raw(proxy.url, bad)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    await asyncio.sleep(0.1)
    assert dialed == []
    assert not proxy.recorder.open


async def test_websocket_client_gone_during_dial_closes_everything(
    proxy_factory: ProxyFactory, upstream: Upstream
) -> None:
    """A client that leaves while the proxy dials upstream leaves no open exchange or socket."""
    opened: list[int] = []
    closed: list[int] = []

    async def ws(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        opened.append(1)
        try:
            async for _ in sock:
                pass
        finally:
            closed.append(1)
        return sock

    url = await upstream({"/ws": ws})
    proxy = await proxy_factory(url)
    good = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
    for _ in range(10):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(good)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
    for _ in range(250):  # 5 s at most
        if not proxy.recorder.open and len(closed) == len(opened):
            break
        await asyncio.sleep(0.02)
    assert not proxy.recorder.open
    assert len(closed) == len(opened)
    assert [e.outcome for e in proxy.recorder.exchanges] == ["client_gone"] * 10


def _upgrade_headers() -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }


async def test_upstream_close_code_and_reason_reach_the_client(
    upstream: Upstream, proxy_factory: ProxyFactory
) -> None:
    """With no fault, the client sees the code and reason upstream closed with (1011, 4000),
    not the proxy's own 1000."""

    async def closer(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        msg = await ws.receive()
        code = int(msg.data)
        await ws.send_str("bye")
        await ws.close(code=code, message=f"upstream says {code}".encode())
        return ws

    proxy = await proxy_factory(await upstream({"/ws": closer}))
    async with aiohttp.ClientSession() as session:
        for code in (1011, 4000):
            async with session.ws_connect(_ws_url(proxy)) as ws:
                await ws.send_str(str(code))
                first = await ws.receive(timeout=5)
                closing = await ws.receive(timeout=5)
                assert (first.type, first.data) == (WSMsgType.TEXT, "bye")
                assert (closing.type, closing.data, closing.extra) == (
                    WSMsgType.CLOSE,
                    code,
                    f"upstream says {code}",
                )
                assert ws.close_code == code
    await _settled(proxy, 2)
    # Upstream ended both: nothing was closed early, nobody left.
    assert [(e.outcome, e.upstream_closed_early) for e in proxy.recorder.exchanges] == [
        ("complete", False)
    ] * 2


async def test_client_close_code_and_reason_reach_upstream(
    upstream: Upstream, proxy_factory: ProxyFactory
) -> None:
    """With no fault, upstream sees the code and reason the client closed with, and the
    client gets upstream's answering close code back."""
    seen: asyncio.Queue[tuple[WSMsgType, object, object]] = asyncio.Queue()

    async def listener(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoclose=False)
        await ws.prepare(request)
        msg = await ws.receive()
        await seen.put((msg.type, msg.data, msg.extra))
        await ws.close(code=msg.data if isinstance(msg.data, int) else 1000)
        return ws

    proxy = await proxy_factory(await upstream({"/ws": listener}))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(_ws_url(proxy))
        await ws.close(code=4001, message=b"user left")
        got = await asyncio.wait_for(seen.get(), 5)
        assert got == (WSMsgType.CLOSE, 4001, "user left")
        assert ws.close_code == 4001
    await _settled(proxy, 1)
    (ex,) = proxy.recorder.exchanges
    # The client left first: the proxy closed upstream before upstream's end.
    assert (ex.outcome, ex.upstream_closed_early) == ("client_gone", True)
