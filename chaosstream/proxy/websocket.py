"""WebSocket pass-through on the proxy: messages both ways, faults on server messages.

One WebSocket message is one chunk, so event-level faults (per-event latency,
disconnect after N events, ...) count messages. A path a WebSocket format
names (OpenAI Realtime's ``/v1/realtime``) gets that format: its faults read
text, terminal and error events as the format says, and the exchange records
the messages as JSON lines (``streams/wsjson.py``), the client's as the
request body and the server's as the response, so the recorder rebuilds the
text as for any stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from chaosstream.faults import Chunk, StreamEnd
from chaosstream.proxy.exchange import abort, refused, request_info
from chaosstream.proxy.headers import end_to_end
from chaosstream.proxy.record import Exchange
from chaosstream.streams.registry import format_for
from chaosstream.streams.wsjson import MEDIA_TYPE, record_line

if TYPE_CHECKING:
    from chaosstream.faults import Clock
    from chaosstream.faults.trigger import Armed, Injector
    from chaosstream.proxy.record import Recorder

# Headers the WebSocket handshake regenerates on each side.
HANDSHAKE = (
    "Host",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol",
    "Content-Length",
)


#: Bytes of the client's messages a recorded exchange keeps as its request body.
REQUEST_LIMIT = 256 * 1024


@dataclass(frozen=True, slots=True)
class Relay:
    """What the WebSocket relay needs of the proxy that hands it a request."""

    upstream: URL
    clock: Clock
    recorder: Recorder
    injector: Injector


@dataclass(slots=True)
class Message(Chunk):
    """A WebSocket message as a chunk; ``text`` says which frame type to send."""

    text: bool = True


async def proxy_websocket(
    proxy: Relay, session: aiohttp.ClientSession, request: web.Request
) -> web.StreamResponse:
    """Check the client's handshake, connect upstream, accept the client, pump both ways.

    The client side is validated before anything is dialled (a bad handshake
    costs no upstream connection), and the upstream WebSocket is closed and
    the exchange finished on every path out, cancellation included.
    """
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    # autoclose off on both sides: a close frame from one side is passed on to the other
    # first, and answered with what that side answers (_close_both), as a transparent
    # relay does -- aiohttp's autoclose would answer 1000 itself and lose the code.
    client = web.WebSocketResponse(protocols=protocols, autoping=True, autoclose=False)
    if not client.can_prepare(request).ok:
        return web.json_response(
            {"error": {"type": "invalid_request", "message": "bad WebSocket handshake"}},
            status=400,
        )
    injector = proxy.injector
    info = request_info(request, b"")
    fmt = format_for("GET", request.path, info.headers)
    # A format of its own (ws-json framing) or the provider-neutral message stream.
    info.provider = fmt.name if fmt.framing == "ws-json" else "sse"
    info.websocket = True
    exchange_id = injector.next_exchange()
    clock = proxy.clock
    ex = Exchange(
        id=exchange_id,
        method="GET",
        path=request.path,
        provider=info.provider,
        stream=True,
        started=clock.now(),
        query=request.query_string,
        traceparent=request.headers.get("traceparent"),
        tracestate=request.headers.get("tracestate"),
    )
    if info.provider != "sse":
        ex.content_type = MEDIA_TYPE
    proxy.recorder.begin(ex)
    every = injector.arm(exchange_id, info, ex.started, ex.faults)
    armed = [a for a in every if a.fault.acts_on_stream]
    upstream: aiohttp.ClientWebSocketResponse[bool] | None = None
    closes: dict[str, tuple[int, str]] = {}
    try:
        for a in every:
            # A refusal answers the handshake itself, as a server that will not upgrade
            # does (the Realtime API's 429): the client's WebSocket library raises.
            refusal = await a.refuse()
            if refusal is not None:
                refused(ex, a.ctx, refusal, clock.now())
                return web.Response(
                    status=refusal.status,
                    body=refusal.body,
                    headers={**refusal.headers, "Content-Type": refusal.content_type},
                )
        url = URL(str(proxy.upstream) + request.raw_path, encoded=True)
        url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        try:
            upstream = await session.ws_connect(
                url,
                headers=end_to_end(request.headers, drop=HANDSHAKE),
                protocols=protocols,
                autoping=True,
                autoclose=False,
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            ex.outcome = "upstream_error"
            message = f"cannot open upstream WebSocket: {str(e)[:300]}"
            ex.error = message
            return web.json_response(
                {"error": {"type": "bad_gateway", "message": message}}, status=502
            )
        await client.prepare(request)
        ex.status = 101
        await _pump_ws(proxy, request, client, upstream, ex, armed, closes)
    except asyncio.CancelledError:
        if ex.outcome == "pending":
            ex.outcome = "client_gone"
        raise
    except (ConnectionError, aiohttp.ClientError):
        if ex.outcome == "pending":
            ex.outcome = "client_gone"
    finally:
        ex.ended = clock.now()
        if ex.outcome == "pending":
            ex.outcome = "complete"
        # Upstream still open here (it sent no close frame and did not drop) is closed by
        # the proxy below: before its end, the evidence cancels_upstream judges on.
        if upstream is not None and "upstream" not in closes and not upstream.closed:
            ex.upstream_closed_early = True
        for a in every:
            a.release()
        proxy.recorder.finish(ex)
        # A client that hangs up after a close frame makes aiohttp cancel this handler,
        # often inside the awaits below: the record is finished first, and the closes
        # are shielded so the upstream socket is closed all the same.
        await _shielded(_close_both(upstream, client, closes))
    return client


_closing: set[asyncio.Task[None]] = set()


def _sendable(code: int) -> int:
    """``code`` when a close frame may carry it, else 1000 (RFC 6455 7.4.1/7.4.2: 1005,
    1006 and 1015 are never sent, 1004 and codes under 1000 or in 1016-2999 are
    reserved; aiohttp reports an empty close frame as 0)."""
    return (
        code
        if (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or (3000 <= code <= 4999)
        else 1000
    )


def _answer(got: int | None, asked: int) -> int:
    """The code to answer a close with: the other side's answer when it sent one, else an
    echo of ``asked`` (aiohttp reports 1006 for a receive we cancelled, not a frame)."""
    return got if got is not None and got == _sendable(got) else asked


async def _close_both(
    upstream: aiohttp.ClientWebSocketResponse[bool] | None,
    client: web.WebSocketResponse,
    closes: dict[str, tuple[int, str]] | None = None,
) -> None:
    """Close both sides, each with the code and reason the other one closed with.

    The side that did not close first gets the closer's frame, and its answer is the
    closer's reply (RFC 6455 5.5.1: the reply echoes the code it answers), so with no
    fault the client sees upstream's 1011 or 4000 and upstream sees the client's code.
    """
    closes = closes or {}
    open_client = client.prepared and not client.closed
    if "upstream" in closes:
        code, reason = closes["upstream"]
        reply = code
        if open_client:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await client.close(code=_sendable(code), message=reason.encode())
            reply = _answer(client.close_code, code)
        if upstream is not None:
            await upstream.close(code=_sendable(reply))
        return
    if "client" in closes:
        code, reason = closes["client"]
        reply = code
        if upstream is not None:
            await upstream.close(code=_sendable(code), message=reason.encode())
            reply = _answer(upstream.close_code, code)
        if open_client:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await client.close(code=_sendable(reply))
        return
    if upstream is not None:
        await upstream.close()
    if open_client:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await client.close()


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled meanwhile (then re-raise)."""
    task = asyncio.ensure_future(work)
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    await asyncio.shield(task)


async def _pump_ws(
    proxy: Relay,
    request: web.Request,
    client: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse[bool],
    ex: Exchange,
    armed: list[Armed],
    closes: dict[str, tuple[int, str]],
) -> None:
    clock = proxy.clock
    recorded = ex.content_type == MEDIA_TYPE
    sent = proxy.recorder.body() if recorded and armed else None
    ex.client_chunks = sent

    async def from_upstream() -> AsyncIterator[Chunk]:
        while True:
            msg = await upstream.receive()
            if msg.type == WSMsgType.TEXT:
                data = msg.data.encode()
                if recorded:
                    ex.upstream_chunks.append(record_line(data))
                yield Message(data, clock.now(), True)
            elif msg.type == WSMsgType.BINARY:
                yield Message(msg.data, clock.now(), False)
            else:
                if msg.type == WSMsgType.CLOSE:  # data: the code, extra: the reason
                    closes["upstream"] = (msg.data, msg.extra or "")
                break

    async def downstream() -> None:
        stream: AsyncIterator[Chunk] = from_upstream()
        for a in armed:
            stream = a.apply(stream)
        async for chunk in stream:
            if ex.first_byte is None:
                ex.first_byte = clock.now()
            if isinstance(chunk, Message) and not chunk.text:
                await client.send_bytes(chunk.data)
            else:
                await client.send_str(chunk.data.decode("utf-8", "replace"))
                if sent is not None:
                    sent.append(record_line(chunk.data))
            ex.bytes_out += len(chunk.data)

    async def upstream_bound() -> None:
        while True:
            msg = await client.receive()
            if msg.type == WSMsgType.TEXT:
                if recorded and len(ex.request_body) < REQUEST_LIMIT:
                    # The client's events: what the fingerprint and the answer key on.
                    ex.request_body += record_line(msg.data.encode())[:REQUEST_LIMIT]
                await upstream.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)
            else:
                if msg.type == WSMsgType.CLOSE:
                    closes["client"] = (msg.data, msg.extra or "")
                # The client closed first: it left; upstream did not end the exchange.
                if ex.outcome == "pending":
                    ex.outcome = "client_gone"
                break

    tasks = [asyncio.ensure_future(downstream()), asyncio.ensure_future(upstream_bound())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if isinstance(exc, StreamEnd):
                ex.outcome = "fault"
                await _end_ws(request, client, exc)
            elif exc is not None and not isinstance(exc, (ConnectionError, aiohttp.ClientError)):
                raise exc
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def _end_ws(request: web.Request, client: web.WebSocketResponse, end: StreamEnd) -> None:

    if end.mode == "close":
        # 1011: the server hit an unexpected condition -- a clean close frame, no "done".
        await client.close(
            code=aiohttp.WSCloseCode.INTERNAL_ERROR, message=b"chaosstream: disconnect"
        )
    elif end.mode == "reset":
        abort(request, rst=True)  # the client sees 1006: closed without a close frame
    else:
        await asyncio.Event().wait()
