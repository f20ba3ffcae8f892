"""The chaos proxy: an aiohttp reverse proxy that streams upstream bytes through faults.

Per exchange: read the request, ask the injector which faults fire, let a
refusing fault answer, else call upstream and stream its body to the client.
When no fault acts on the stream the body is relayed from the socket callback
with no task step per read (proxy/relay.py, the hot path); otherwise it flows
through the faults' chain, framed into SSE events first if one of them needs
events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from chaosstream.faults import Chunk, Clock, FaultEvent, RequestInfo, StreamEnd, SystemClock
from chaosstream.faults.base import Horizon
from chaosstream.faults.network import LinkDelay
from chaosstream.faults.profile import Profile
from chaosstream.faults.trigger import Armed
from chaosstream.proxy.cassette import CassetteTap
from chaosstream.proxy.downstream import AiohttpSide, Downstream, Incoming, abort, drained
from chaosstream.proxy.encoding import Decoder, decoder_for, is_encoded
from chaosstream.proxy.exchange import refused, request_info
from chaosstream.proxy.front import Front
from chaosstream.proxy.headers import end_to_end
from chaosstream.proxy.record import Body, Exchange, Recorder
from chaosstream.proxy.relay import relay
from chaosstream.proxy.scopes import (
    MAX_SCOPES,
    SCOPE_HEADER,
    SCOPE_PREFIX,
    ProxyState,
    Scope,
    ScopeError,
    Scopes,
    split_scope,
)
from chaosstream.proxy.upstream import BodyError, Pool, Response, UpstreamError
from chaosstream.streams.format import Framer, Splitter
from chaosstream.streams.providers import error_body
from chaosstream.streams.registry import format_for_response, framer_for, get, is_stream_body
from chaosstream.streams.sse import SSE_FRAMER

log = structlog.get_logger("chaosstream.proxy.server")

# Defaults of ChaosProxy's limits (its keyword arguments of the same names; the
# CLI flags and docs/limits.md list them too).
#: One SSE event may hold this many bytes while a fault that needs events is
#: armed; past it the rest of the body passes on unframed (see frame_events).
MAX_EVENT_BYTES = 1024 * 1024
#: A client connection without a complete request head for this long -- since
#: it opened or since its last response ended -- is closed (idle keep-alive and
#: slowloris alike). aiohttp's keepalive timer does exactly this from 3.14.4 on:
#: it starts at connection_made and fires while the handler awaits a message.
IDLE_TIMEOUT_S = 60.0
#: Upstream must send its response head within this time, else the client gets
#: a 504 in the provider's error shape. Generous: a model may think before its
#: first byte. None turns it off.
UPSTREAM_HEAD_TIMEOUT_S: float | None = 300.0
# After the last delivered byte leaves, a RST waits this long so the client can
# read what was delivered: on a real link the data arrives before the reset.
RESET_GRACE_S = 0.05
# How long close() lets open streams run before cancelling them.
SHUTDOWN_TIMEOUT_S = 1.0
#: A request body past this size is refused (413, by aiohttp's server).
MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Connections the kernel queues before the proxy accepts them. aiohttp's 128
#: overflowed 289-1,998 times when 1,000-3,000 streams started together (issue 17):
#: each overflow is a SYN the client retransmits a second later. Linux caps it at
#: net.core.somaxconn (4,096 since 5.4).
LISTEN_BACKLOG = 4096
CORS_ERROR_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "*"}
"""Added to a refusal the proxy makes itself when the request came from a page (has Origin)."""
#: The head of the proxy's own JSON answers (errors, bad gateway).
JSON = {"Content-Type": "application/json"}
#: Allocations between two young-generation collections in a proxy process (see tune_gc).
GC_GEN0_THRESHOLD = 5000


def tune_gc(gen0: int = GC_GEN0_THRESHOLD) -> None:
    """Set the garbage collector for a process that serves many streams (issue 17).

    With CPython's default young threshold (700 allocations) every open stream's
    objects (transports, tasks, readers) are swept through the older generations,
    and each full collection walks them all: at 3,000 streams seven of them took 0.9 s
    of a 2.3 s run, so the cost per event grew with the number of streams. A young
    threshold of 5,000 lets a stream's short-lived objects die young; full collections
    still run when due (the older thresholds and CPython's 25 % rule are kept), so
    garbage stays bounded. ``gc.freeze()`` moves what start-up built out of every
    later collection (https://docs.python.org/3/library/gc.html#gc.freeze). Process-
    wide, so the ``proxy`` command calls it, never the library on its own.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes when a front (proxy/intercept.py) decided, not the proxy."""

    upstream: URL
    """Base URL the request's path is appended to."""
    host: str
    """The host the client called: what a fault's ``match.host`` sees."""


#: Set on a request by the intercepting front; absent in reverse mode.
ROUTE = web.RequestKey("chaosstream.route", Route)


class ChaosProxy:
    """A reverse proxy for one upstream, applying one profile at a time."""

    def __init__(
        self,
        upstream: str,
        profile: Profile,
        *,
        seed: int | None = None,
        recorder: Recorder | None = None,
        insecure: bool = False,
        ca_file: str | None = None,
        clock: Clock | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        upstream_head_timeout_s: float | None = UPSTREAM_HEAD_TIMEOUT_S,
        max_scopes: int = MAX_SCOPES,
        cassette: CassetteTap | None = None,
        backlog: int = LISTEN_BACKLOG,
        own_front: bool = True,
    ) -> None:
        self.upstream = URL(upstream.rstrip("/"))
        self.backlog = backlog
        #: Plain requests are served by the proxy's own HTTP/1.1 front (proxy/front.py);
        #: False (or a middleware on :attr:`app`) leaves every request to aiohttp's.
        self.own_front = own_front
        self._front: Front | None = None
        self._listener: asyncio.Server | None = None
        if self.upstream.scheme not in ("http", "https") or not self.upstream.host:
            raise ValueError(f"upstream must be an http:// or https:// URL, got {upstream!r}")
        self.max_event_bytes = max_event_bytes
        self.idle_timeout_s = idle_timeout_s
        self.upstream_head_timeout_s = upstream_head_timeout_s
        self.clock = clock or SystemClock()
        self.recorder = recorder or Recorder()
        #: Records exchanges to a cassette file (``--cassette``); None records none.
        self.cassette = cassette
        self.fault_log: list[FaultEvent] = []
        self.state = ProxyState(profile, seed, self.clock, self._log_fault)
        #: Per-scope states (``/~/<scope>/...`` or the X-Chaosstream-Scope header). A new
        #: scope starts from the proxy's profile as it is then, and ``seed`` when given.
        self.scopes = Scopes(
            lambda: self.state.profile,
            self.clock,
            cap=max_scopes,
            base_seed=seed,
            body_limit=self.recorder.body_limit,
        )
        if insecure:
            self._ssl: ssl.SSLContext | bool = False
        else:
            self._ssl = ssl.create_default_context(cafile=ca_file)
        #: The data path's upstream connections (proxy/upstream.py); WebSocket
        #: handshakes go through aiohttp's client (``_session``).
        self._pool: Pool | None = None
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.app.on_startup.append(self._open_session)
        self.app.on_cleanup.append(self._close_session)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------

    async def _open_session(self, _app: web.Application) -> None:
        # A warm pool (issue 17): no cap on connections, and a finished body returns its
        # connection for 15 s, so streams one after another reuse it. Every read is
        # stamped with its arrival at the socket (timing faults count from there).
        self._pool = Pool(ssl=self._ssl, connect_timeout_s=10.0, now=self.clock.now)
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit=0, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def _close_session(self, _app: web.Application) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._session is not None:
            await self._session.close()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port) and return the base URL."""
        # handler_cancellation: a client that goes away cancels its handler,
        # which is what closes the upstream request at once.
        self._runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            access_log=None,
            # Open streams (a stall never ends by itself) are cancelled this soon on close.
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            # Closes connections that never complete a request head; a handler
            # busy with a response (a stall fault's silence too) is never cut.
            keepalive_timeout=self.idle_timeout_s,
        )
        await self._runner.setup()
        if self.own_front and not self.app.middlewares:
            # The fronts that route requests (intercept, workers) do it in middlewares of
            # aiohttp's app: their proxies stay on aiohttp's server.
            server = self._runner.server
            assert server is not None
            self._front = Front(
                self.serve,
                server,
                idle_timeout_s=self.idle_timeout_s,
                max_body_bytes=MAX_REQUEST_BYTES,
            )
            loop = asyncio.get_running_loop()
            self._listener = await loop.create_server(
                self._front, host, port, backlog=self.backlog, reuse_address=True
            )
            sock = self._listener.sockets[0]
        else:
            site = web.TCPSite(self._runner, host, port, backlog=self.backlog)
            await site.start()
            sock = site._server.sockets[0]  # type: ignore[union-attr]
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()  # no new connections; open ones finish or are cancelled
            self._listener = None
        if self._front is not None:
            await self._front.shutdown(SHUTDOWN_TIMEOUT_S)
            self._front = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.cassette is not None:
            # Cleanup finished the open exchanges; their cassette writes run in a thread.
            await self.cassette.drain()

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- control -------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self.state.seed

    @property
    def profile(self) -> Profile:
        return self.state.profile

    def set_profile(self, profile: Profile, seed: int | None = None) -> None:
        """Switch profile; request counters and the window clock start over."""
        self.state = ProxyState(profile, seed, self.clock, self._log_fault)

    def reset(self, seed: int | None = None) -> None:
        """Start request counters, windows and (optionally) the seed over."""
        self.state.injector.reset(seed)
        if seed is not None:
            self.state.seed = seed
        self.fault_log.clear()

    def _log_fault(self, event: FaultEvent) -> None:
        # The exchange's own record got the event already (``arm``'s record list): its
        # number restarts with the profile, so it cannot find the exchange here.
        self.fault_log.append(event)
        log.info("fault", seed=self.state.seed, **event.as_dict())

    # -- the exchange ----------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp's way in: a WebSocket upgrade is relayed here; every other request
        goes to :meth:`serve`, as the proxy's own front sends its plain requests."""
        side = AiohttpSide(request)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, side)
        incoming = Incoming(
            method=request.method,
            raw_path=request.raw_path,
            path=request.path,
            query_string=request.query_string,
            headers=request.headers,
            body=await request.read(),
            version=(request.version.major, request.version.minor),
            keep_alive=request.keep_alive,
        )
        route = request.get(ROUTE)
        if route is not None:
            incoming.extra["route"] = route
        await self.serve(incoming, side)
        assert side.response is not None  # serve() always answers or prepares
        return side.response

    async def _websocket(self, request: web.Request, side: AiohttpSide) -> web.StreamResponse:
        from chaosstream.proxy.websocket import Relay, proxy_websocket

        scope: Scope | None = None
        if not request.raw_path.startswith("/"):
            await _client_error(side, _absolute_form(request.raw_path))
        elif request.raw_path.startswith(SCOPE_PREFIX) or SCOPE_HEADER in request.headers:
            try:
                scope, request = self._scoped_websocket(request)
            except ScopeError as e:
                await _client_error(side, str(e), e.status)
        if side.response is not None:
            return side.response
        state = self.state if scope is None else scope.state
        recorder = self.recorder if scope is None else scope.recorder
        assert self._session is not None
        route = request.get(ROUTE)
        base = self.upstream if route is None else route.upstream
        relay = Relay(base, self.clock, recorder, state.injector)
        return await proxy_websocket(relay, self._session, request)

    async def serve(self, request: Incoming, down: Downstream) -> None:
        """One exchange: ``request`` through the faults to upstream and back to ``down``."""
        if not request.raw_path.startswith("/"):
            return await _client_error(down, _absolute_form(request.raw_path))
        scope: Scope | None = None
        # Per request, never per chunk: an unscoped request pays two look-ups here.
        if request.raw_path.startswith(SCOPE_PREFIX) or SCOPE_HEADER in request.headers:
            try:
                scope, request = self._scoped(request)
            except ScopeError as e:
                return await _client_error(down, str(e), e.status)
        state = self.state if scope is None else scope.state
        recorder = self.recorder if scope is None else scope.recorder
        injector = state.injector
        body = request.body
        info = request_info(request, body)
        route: Route | None = request.extra.get("route")
        info.host = (self.upstream.host or "") if route is None else route.host
        exchange_id = injector.next_exchange()
        started = self.clock.now()
        ex = Exchange(
            id=exchange_id,
            method=request.method,
            path=request.path,
            query=request.query_string,
            provider=info.provider,
            stream=info.stream,
            started=started,
            request_body=body,
            last_event_id=request.headers.get("Last-Event-ID"),
            traceparent=request.headers.get("traceparent"),
            tracestate=request.headers.get("tracestate"),
        )
        recorder.begin(ex)
        tap = self.cassette
        if tap is not None:
            tap.begin(ex, request.headers)
        armed = injector.arm(exchange_id, info, started, ex.faults)
        requested_stream = info.stream

        def on_head(stream: bool) -> bool:
            """Once the head is in: a stream by its content type is one, whatever the
            request said; faults whose ``match.stream`` waited on it are decided."""
            if stream and not info.stream:
                info.stream = ex.stream = True
            if not requested_stream:
                injector.arm_on_response(exchange_id, info, started, armed, ex.faults)
            # Every trigger is decided: the parsed body (about twice its size) need not
            # live as long as the stream (the exchange keeps the bytes).
            info.json = None
            return stream

        # A fault that reads frames cannot read them compressed: ask for identity when
        # one is armed or may arm on the head (clean exchanges keep the client's header).
        identity = any(a.fault.acts_on_stream and a.fault.needs_events for a in armed) or (
            not requested_stream and injector.may_arm_on_response(info)
        )
        try:
            await self._exchange(
                request, down, info, ex, armed, on_head, identity, recorder=recorder
            )
        except asyncio.CancelledError:
            if ex.outcome == "pending":
                ex.outcome = "client_gone"
            raise
        finally:
            ex.ended = self.clock.now()
            if ex.outcome == "pending":
                ex.outcome = "complete"
            # Each step on its own: one that raises (a fault's release, the cassette) must
            # not keep the others from running, the record above all (else it stays open).
            for a in armed:
                if a.refuses:
                    _guarded("fault_release_failed", ex, a.release)
            if tap is not None:
                _guarded("cassette_failed", ex, tap.finish, ex)
            recorder.finish(ex)
            if scope is None:
                log.info("exchange", seed=state.seed, **ex.summary())
            else:
                log.info("exchange", scope=scope.name, seed=state.seed, **ex.summary())

    def _scoped(self, request: Incoming) -> tuple[Scope, Incoming]:
        """The request's scope, and the request as upstream must see it: the path
        prefix stripped, the scope header removed."""
        header = request.headers.get(SCOPE_HEADER)
        scope, target = self._scope_of(request.raw_path, header)
        url = URL(target, encoded=True)
        headers = request.headers
        if header is not None:
            copy = CIMultiDict(headers)
            del copy[SCOPE_HEADER]  # the scope is the proxy's business, never upstream's
            headers = CIMultiDictProxy(copy)
        scoped = dataclasses.replace(
            request, raw_path=target, path=url.path, query_string=url.query_string,
            headers=headers,
        )  # fmt: skip
        return scope, scoped

    def _scope_of(self, raw_path: str, header: str | None) -> tuple[Scope, str]:
        """The scope a request names (path prefix or header) and its target without it."""
        name, profile_name, target = split_scope(raw_path, header)
        assert name is not None
        return self.scopes.use(name, profile_name), target

    def _scoped_websocket(self, request: web.Request) -> tuple[Scope, web.Request]:
        """:meth:`_scoped` for a WebSocket handshake, which aiohttp's server carries."""
        header = request.headers.get(SCOPE_HEADER)
        scope, target = self._scope_of(request.raw_path, header)
        url = URL(target, encoded=True)
        if header is None:
            # clone() shares the transport and the unread body: only the target changes.
            return scope, request.clone(rel_url=url)
        headers = CIMultiDict(request.headers)
        del headers[SCOPE_HEADER]
        try:
            return scope, request.clone(rel_url=url, headers=headers)
        except UnicodeEncodeError:  # clone() re-encodes the head as UTF-8
            raise ScopeError("request headers: not UTF-8, cannot strip the scope header") from None

    async def _exchange(
        self,
        request: Incoming,
        down: Downstream,
        info: RequestInfo,
        ex: Exchange,
        armed: list[Armed],
        on_head: Callable[[bool], bool] | None = None,
        identity: bool = False,
        *,
        recorder: Recorder,
    ) -> None:
        """``recorder`` is the one the exchange is recorded by (its scope's, if any)."""
        for a in armed:
            # Asked only of a fault that can refuse: a coroutine per fault is not free.
            refusal = await a.refuse() if a.refuses else None
            if refusal is not None:
                refused(ex, a.ctx, refusal, self.clock.now())
                answer = {**refusal.headers, "Content-Type": refusal.content_type}
                if "origin" in info.headers:
                    # The providers answer browsers with CORS on errors too, so a page can
                    # read the status and Retry-After instead of a bare "Failed to fetch".
                    answer.update(CORS_ERROR_HEADERS)
                return await down.answer(refusal.status, refusal.body, answer)

        assert self._pool is not None
        headers = end_to_end(request.headers, drop=("Host", "Content-Length"))
        if identity:
            # RFC 9110 12.5.3: identity alone; a server may still compress (decoded below).
            headers["Accept-Encoding"] = "identity"
        uploads = [a for a in armed if a.uploads]
        data: bytes | AsyncIterator[bytes] | None = info.body or None
        if uploads and info.body:
            data = self._upload(info.body, uploads)
            headers["Content-Length"] = str(len(info.body))
        elif uploads:
            # No body to shape: sent as the client sent it (no Transfer-Encoding: chunked
            # on a GET), and only the link's one-way delay holds the request head.
            await self._delay_request_head(uploads)
        route: Route | None = request.extra.get("route")
        base = self.upstream if route is None else route.upstream
        if self.cassette is not None:  # new_episodes: what the cassette answers is replayed
            base = self.cassette.route(ex, info, headers) or base
        url = URL(str(base) + request.raw_path, encoded=True)
        try:
            head = self._pool.request(
                request.method, url, headers.items(), data, kernel_stamps=_holds_start(armed)
            )
            # The request returns once the response head is in: the timeout bounds the
            # wait for it, never the body (a stream may be long). A timeout context where
            # there is one (3.11+): wait_for would run the request in a task of its own.
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(self.upstream_head_timeout_s):
                    upstream = await head
            else:
                upstream = await asyncio.wait_for(head, self.upstream_head_timeout_s)
        except asyncio.TimeoutError:  # before UpstreamError: the head timeout is ours
            return await self._gateway_timeout(down, ex, info)
        except UpstreamError as e:
            message = f"cannot reach upstream {base}: {_describe(e)}"
            return await self._bad_gateway(down, ex, message)

        try:
            await self._respond(down, upstream, ex, armed, on_head, recorder)
        finally:
            # Closing drops the upstream connection unless the body was read to the end:
            # a client that left closes upstream too.
            ex.upstream_closed_early |= not upstream.at_eof()
            upstream.close()

    async def _delay_request_head(self, uploads: list[Armed]) -> None:
        """A bodyless request's head crosses the link too: it leaves after the one-way delay
        (no jitter, like the response head: see LinkDelay.head_delay_ms)."""
        total = 0.0
        for a in uploads:
            if isinstance(a.fault, LinkDelay):
                ms = a.fault.head_delay_ms(a.ctx)
                if ms > 0:
                    total += ms
                    a.ctx.fired("delay_upload", detail=f"{ms:g} ms, request head")
        await self.clock.sleep(total / 1000.0)

    async def _upload(self, body: bytes, uploads: list[Armed]) -> AsyncIterator[bytes]:
        async def source() -> AsyncIterator[Chunk]:
            for i in range(0, len(body), 65536):
                yield Chunk(body[i : i + 65536], self.clock.now())

        stream: AsyncIterator[Chunk] = source()
        for a in uploads:
            stream = a.fault.apply_upload(stream, a.ctx)  # type: ignore[attr-defined]
        async for chunk in stream:
            yield chunk.data

    async def _bad_gateway(self, down: Downstream, ex: Exchange, message: str) -> None:
        ex.outcome = "upstream_error"
        ex.status = 502
        ex.error = message
        body = json.dumps({"error": {"type": "bad_gateway", "message": message}}).encode()
        ex.bytes_out = len(body)
        await down.answer(502, body, JSON)

    async def _gateway_timeout(self, down: Downstream, ex: Exchange, info: RequestInfo) -> None:
        message = f"upstream sent no response head within {self.upstream_head_timeout_s} s"
        ex.outcome = "upstream_error"
        ex.status = 504
        ex.error = message
        body = error_body(info.provider, 504, f"chaosstream: {message}")
        ex.bytes_out = len(body)
        await down.answer(504, body, JSON)

    async def _respond(
        self,
        down: Downstream,
        upstream: Response,
        ex: Exchange,
        armed: list[Armed],
        on_head: Callable[[bool], bool] | None,
        recorder: Recorder,
    ) -> None:
        # When upstream's head reached the socket: the head's hold counts from there.
        head_at = upstream.head_at
        ex.status = upstream.status
        ex.content_type = upstream.headers.get("Content-Type")
        ex.retry_after = upstream.headers.get("Retry-After")
        ex.retry_after_ms = upstream.headers.get("retry-after-ms")
        ex.should_retry = upstream.headers.get("x-should-retry")
        if ex.provider == "sse" or get(ex.provider).framing != "sse":
            # A path that named no format may still answer in one its headers show
            # (the AI SDK UI stream of an app's own chat route); so may Ollama's
            # /api/chat, useChat's default route (registry.format_for_response).
            headers = {k.lower(): v for k, v in upstream.headers.items()}
            fmt = format_for_response(get(ex.provider), ex.content_type, headers)
            ex.provider = fmt.name
            for a in armed:
                a.ctx.request.provider = fmt.name
        if on_head is not None:
            on_head(is_stream_body(ex.provider, ex.content_type))
        chain = [a for a in armed if a.fault.acts_on_stream]
        # A fault may change the body's length, so the proxy re-frames it as chunked.
        drop: tuple[str, ...] = ("Content-Length",) if chain else ()
        coding = upstream.headers.get("Content-Encoding")
        decoder: Decoder | None = None
        if is_encoded(coding):
            if chain and any(a.fault.needs_events for a in chain):
                decoder = decoder_for(coding)
            if decoder is not None:
                # Upstream compressed though asked for identity: the faults see decoded
                # frames and the client gets identity, which every client accepts
                # (RFC 9110 12.5.3) -- re-encoding would need a sync flush per event, and a
                # byte-level fault (split, invalid_utf8) would hit the gzip framing instead
                # of the text the profile meant.
                drop = (*drop, "Content-Encoding")
            else:
                # Recorded as sent; the recorder decodes it when its text is asked for.
                ex.content_encoding = coding
                if chain and any(a.fault.needs_events for a in chain):
                    ex.error = (
                        f"cannot decode Content-Encoding {coding!r}: the faults that need "
                        "events saw the encoded bytes"
                    )
        down.status, down.reason = upstream.status, upstream.reason
        down.headers.extend(end_to_end(upstream.headers, drop=drop))
        for a in chain:  # a fault may recast the head (gzip: Content-Encoding)
            a.fault.response_headers(down.headers, a.ctx)
        if any(a.fault.closes_connection for a in chain):
            # Announce the close now: a FIN the headers did not promise would
            # break the client's next request on this connection as well.
            down.force_close()
        # Binary stream framings (Bedrock's event stream) are recorded too: the recorder
        # rebuilds their text.
        keep = _is_text(ex.content_type) or is_stream_body(ex.provider, ex.content_type)
        if self.cassette is not None:
            self.cassette.response(ex, upstream.headers)
            keep = True  # a cassette keeps every body, binary ones too
        head_s = self._head_delay_s(armed)
        if head_s > 0:
            # As a chunk's delay does (Toxiproxy's delay - time.Since(c.Timestamp)).
            head_s = max(0.0, head_s - (self.clock.now() - head_at))
        head: asyncio.Future[None] | None = None
        try:
            if head_s > 0 and chain:
                # The head is held while the body is already read (and stamped as it
                # arrives): on a link both cross at once, so their delays overlap.
                head = asyncio.ensure_future(self._prepare_after(down, head_s))
            else:
                await self.clock.sleep(head_s)
                await down.prepare()
            if not chain:
                await relay(upstream, down, ex, keep, self.clock.now)
            elif head is not None or decoder is not None or recorder.stamps:
                ahead = self._ahead(chain, ex.provider)
                await self._pump_faults(
                    upstream, down, ex, chain, keep, recorder, head, decoder, ahead
                )
            elif (hold := self._first_byte_hold(chain)) is not None:
                await relay(upstream, down, ex, keep, self.clock.now, hold=hold)
            elif (ahead := self._ahead(chain, ex.provider)) is None:
                await self._pump_faults(upstream, down, ex, chain, keep, recorder)
            else:
                # Every fault is far from acting, the head left, the body needs no decoding
                # and no write is stamped: the clean relay passes the reads through the
                # gate (_pass_ahead's tap), and the chain (its closures, generators and
                # frames) is built only once a fault comes near. Issue 17: an armed
                # stream's objects, live as long as it is, cost collections.
                await self._pass_ahead(upstream, down, upstream.read, down.write, ex, keep, ahead)
                if ahead.framing.overflow is not None:
                    overflow = ahead.framing.overflow
                    await self._pass_unframed(upstream.read, down, ex, overflow, keep)
                elif ahead.stopped:
                    await self._pump_faults(
                        upstream, down, ex, chain, keep, recorder, ahead=ahead, passed=True
                    )
            if head is not None:
                await head
            await down.write_eof()
        except StreamEnd as end:
            ex.outcome = "fault"
            ex.upstream_closed_early |= not upstream.at_eof()
            upstream.close()
            # The client may leave while the cut is being staged: nothing to report.
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
                if head is not None:
                    await head
                await self._end(down, end)
            return
        except BodyError as e:
            # Upstream broke mid-body: break the client's body the same way.
            ex.outcome = "upstream_error"
            ex.error = f"upstream ended the body early: {_describe(e)}"
            abort(down.transport)
            return
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            ex.outcome = "client_gone"
        finally:
            if head is not None:
                if not head.done():
                    head.cancel()
                elif not head.cancelled():
                    # Retrieved on every path (the handler cancelled as the client left, the
                    # upstream-error return): a head that failed must not log "Task exception
                    # was never retrieved" at garbage collection.
                    head.exception()

    @staticmethod
    def _head_delay_s(armed: list[Armed]) -> float:
        """The firing faults' hold on the response head (latency's ``headers_ms``, the
        network's one-way delay: the head crosses the link too), in seconds."""
        total = 0.0
        for a in armed:
            ms = a.fault.head_delay_ms(a.ctx)
            if ms > 0:
                total += ms
                a.ctx.fired("delay_headers", detail=f"{ms:g} ms")
        return total / 1000.0

    def _first_byte_hold(self, chain: list[Armed]) -> Callable[[float], Awaitable[None]] | None:
        """When all the chain does to the body is hold its first bytes (``latency``'s
        ``first_byte_ms`` alone, :meth:`Fault.first_byte_hold_ms`), that hold for the
        clean relay; None when the chain must read the body.

        Issue 17: with 1,000 such streams starting together, the rest of each stream
        going through the fault chain (a task step and a generator per read) kept the
        loop busy just when the holds ended, and made them late.
        """
        holds = []
        for a in chain:
            ms = a.fault.first_byte_hold_ms(a.ctx) if a.fault.window is None else None
            if ms is None:
                return None
            holds.append((a, ms))
        clock = self.clock
        total_s = sum(ms for _, ms in holds) / 1000.0

        async def hold(arrived: float) -> None:
            for a, ms in holds:
                if ms:
                    # Logged as the hold begins, as the chain's (latency._FirstByte): a
                    # client that gives up during it has met the fault all the same.
                    a.ctx.fired("delay_first_byte", detail=f"{ms:.1f} ms")
            # From the first bytes' arrival, as Toxiproxy's latency toxic counts
            # (toxics/latency.go: ``t.delay() - time.Since(c.Timestamp)``).
            await clock.sleep(arrived + total_s - clock.now())

        return hold

    async def _prepare_after(self, down: Downstream, delay_s: float) -> None:
        await self.clock.sleep(delay_s)
        await down.prepare()

    async def _pump_faults(
        self,
        upstream: Response,
        down: Downstream,
        ex: Exchange,
        chain: list[Armed],
        keep: bool,
        recorder: Recorder,
        head: asyncio.Future[None] | None = None,
        decoder: Decoder | None = None,
        ahead: Ahead | None = None,
        passed: bool = False,
    ) -> None:
        """The body through the fault chain.

        ``ahead`` (:meth:`_ahead`): the gate that passes reads on ahead of the chain
        until a fault may act; None, the chain reads the body from its first byte.
        ``passed``: the relay's tap passed them already (:meth:`_pass_ahead`) and the
        gate stopped; the chain starts there.
        """
        clock = self.clock
        kept = ex.upstream_chunks

        # When no fault in the chain waits, everything it yields between two
        # upstream reads is held and written at once, just before the next read
        # blocks: one send per read instead of one per event (a quarter of the CPU).
        batch = all(a.fault.prompt and a.fault.window is None for a in chain)

        def arrived() -> float:
            """When the bytes of the last read reached the socket (upstream.py)."""
            return upstream.received

        # The recorder in use makes the body: a scope's caps and stamps, not the proxy's.
        # While the proxy passes reads ahead of the chain the client gets upstream's bytes,
        # so its body is made only once a fault may act -- unless the recorder stamps each
        # write as it leaves (then every write is recorded at once).
        sent: Body | None = None
        if ahead is None or recorder.stamps:
            sent = ex.client_chunks = recorder.body(like=kept)
        held: list[bytes] = []
        write: Callable[[bytes], Awaitable[None]] = down.write
        if head is not None:
            sent_head = head

            async def after_head(data: bytes) -> None:  # the body never overtakes its head
                if not sent_head.done():
                    await sent_head
                    ex.first_byte = clock.now()  # the first byte could leave only now
                await down.write(data)

            write = after_head

        async def flush() -> None:
            if held:
                data = b"".join(held)
                held.clear()
                await write(data)
                ex.bytes_out += len(data)

        read = _decoded(upstream.read, decoder)
        first: list[Chunk] = []
        if ahead is None:
            framer = framer_for(ex.provider) if any(a.fault.needs_events for a in chain) else None
            framing = Framing(None if framer is None else framer.splitter())
        else:
            framer, framing = ahead.framer, ahead.framing
            if not passed:
                await self._pass_ahead(upstream, down, read, write, ex, keep, ahead, tap=False)
                if not ahead.stopped or framing.overflow is not None:
                    # The stream ended short of the nearest horizon, or an event overran
                    # the cap.
                    if framing.overflow is not None:
                        if head is not None:
                            await head
                        await self._pass_unframed(read, down, ex, framing.overflow, keep)
                    return
            first, passed_events, passed_bytes = ahead.first, ahead.events, ahead.nbytes
            for a in chain:
                a.ctx.passed_events, a.ctx.passed_bytes = passed_events, passed_bytes
            if sent is None:
                sent = ex.client_chunks = recorder.body(like=kept)
                if keep and passed_bytes:
                    prefix = _prefix(kept, passed_bytes)
                    sent.append(prefix)
                    # Past the cap the rest was left out, as appending as it went would have.
                    sent.truncated |= len(prefix) < passed_bytes
        assert sent is not None  # made above on every path
        client = sent

        async def source() -> AsyncIterator[Chunk]:
            if framer is None:
                for chunk in first:
                    yield chunk
            while True:
                # The chain is prompt, so nothing it made from the last read is
                # still inside it: send it all before waiting for more.
                await flush()
                data = await read()
                if not data:
                    return
                if keep:
                    kept.append(data)
                yield Chunk(data, arrived())

        raw = source()
        stream: AsyncIterator[Chunk] = raw
        if framer is not None:
            stream = frame_events(stream, self.max_event_bytes, framing, framer, first)
        for a in chain:
            stream = a.apply(stream)
        try:
            async for chunk in stream:
                data = chunk.data
                if not data:
                    continue
                if ex.first_byte is None:
                    ex.first_byte = clock.now()
                if keep:
                    client.append(data)
                if batch:
                    held.append(data)
                else:
                    await write(data)
                    ex.bytes_out += len(data)
            await flush()
        except StreamEnd:
            await flush()  # what the fault let through reaches the client before the cut
            raise
        finally:
            # Each stage closes the one it reads (faults/_feed.py closing): closing the
            # outermost closes the chain down to source(), read-ahead tasks first.
            await _aclose(stream)
        if framing.overflow is not None:
            if head is not None:
                await head
            await self._pass_unframed(read, down, ex, framing.overflow, keep)

    def _ahead(self, chain: list[Armed], provider: str) -> Ahead | None:
        """The gate that passes reads ahead of ``chain`` while no fault of it may act on
        them; None when a fault waits (a timer beside the stream, a window) or gives no
        horizon (:meth:`Fault.horizon`)."""
        if not all(a.fault.prompt and a.fault.window is None for a in chain):
            return None
        horizon = _nearest(chain)
        if horizon is None:
            return None
        framer = framer_for(provider) if any(a.fault.needs_events for a in chain) else None
        framing = Framing(None if framer is None else framer.splitter())
        return Ahead(horizon, framer, framing, self.max_event_bytes, self.clock.now)

    async def _pass_ahead(
        self,
        upstream: Response,
        down: Downstream,
        read: Callable[[], Awaitable[bytes]],
        write: Callable[[bytes], Awaitable[None]],
        ex: Exchange,
        keep: bool,
        ahead: Ahead,
        tap: bool = True,
    ) -> None:
        """Pass upstream's reads on while every fault of the chain promises to pass them
        untouched (:meth:`Fault.horizon`): no chunk objects, no generator chain, one write
        per read, only the frames counted. Ends when ``ahead`` stops (a fault may act
        now: ``ahead.first``) or the body does.

        With ``tap``, once the head has left with the first bytes
        the rest goes through the clean path's relay (proxy/relay.py), ``ahead`` deciding
        what of each read leaves: an armed fault far from its trigger then costs what a
        clean stream does, plus the counting.
        """
        kept, sent = ex.upstream_chunks, ex.client_chunks
        while not ahead.stopped:
            data = await read()
            if data and keep:
                kept.append(data)
            out = ahead(data)
            # A whole short answer in this read: its end leaves with it, as the relay's
            # sink sends a streamed body's end with its last bytes.
            end = tap and bool(data) and not ahead.stopped and upstream.at_eof()
            if end:
                out += ahead(b"")
                end = not ahead.stopped
            if out:
                if ex.first_byte is None:
                    ex.first_byte = self.clock.now()
                if keep and sent is not None:
                    sent.append(out)
                if end:  # tap: no head to wait for, write is down.write
                    await down.write(out, last=True)
                    ex.bytes_out += len(out)
                    return
                await write(out)
                ex.bytes_out += len(out)
            if not data:
                return
            if tap and ex.bytes_out and not ahead.stopped:
                await relay(upstream, down, ex, keep, self.clock.now, gate=ahead)
                return

    async def _pass_unframed(
        self,
        read: Callable[[], Awaitable[bytes]],
        down: Downstream,
        ex: Exchange,
        data: bytes,
        keep: bool,
    ) -> None:
        """An event overran max_event_bytes: the rest of the body goes on as read, no faults."""
        ex.error = (
            f"an SSE event passed {self.max_event_bytes} bytes: the rest of the body was "
            "passed on unframed and faults stopped acting on it"
        )
        log.warning("event_too_large", exchange=ex.id, max_event_bytes=self.max_event_bytes)
        sent = ex.client_chunks
        first = True
        while data:
            if keep:
                if not first:
                    ex.upstream_chunks.append(data)
                if sent is not None:
                    sent.append(data)
            first = False
            await down.write(data)
            ex.bytes_out += len(data)
            data = await read()

    async def _end(self, down: Downstream, end: StreamEnd) -> None:
        if end.mode == "close":
            await down.write_eof()
            if not end.keep_alive:
                down.force_close()
                # FIN right behind the last chunk (the headers said Connection: close).
                if down.transport is not None:
                    down.transport.close()
        elif end.mode == "reset":
            await drained(down.transport)
            await asyncio.sleep(RESET_GRACE_S)
            abort(down.transport, rst=True)
        else:  # stall: the socket stays open and silent until the client leaves
            await asyncio.Event().wait()


class Framing:
    """The framing of one body: its splitter, and what :func:`frame_events` tells its
    caller once it gave up framing."""

    __slots__ = ("overflow", "splitter")

    def __init__(self, splitter: Splitter | None = None) -> None:
        #: The held bytes of an event that overran the cap; None while framing.
        self.overflow: bytes | None = None
        #: The splitter the body is framed with; None: frame_events makes one.
        self.splitter = splitter


def frame_events(
    chunks: AsyncIterator[Chunk],
    max_event_bytes: int | None = None,
    state: Framing | None = None,
    framer: Framer = SSE_FRAMER,
    first: list[Chunk] | None = None,
) -> AsyncIterator[Chunk]:
    """Re-cut a byte stream so each chunk holds exactly one raw frame of ``framer``
    (an SSE event by default; an NDJSON line for Ollama).

    Bytes after the last complete event are passed on at the end, so nothing
    read is lost.

    When an unfinished event holds more than ``max_event_bytes``, framing stops:
    the framed stream ends there (the faults see an end of input and let out
    what they hold), the held bytes go to ``state.overflow``, and the caller
    passes them and the rest of the body on as read. We pick that over ending
    the exchange as ``upstream_error`` because it keeps the tool honest both
    ways: the client gets upstream's bytes intact (no failure the profile did
    not ask for), and a fault that could no longer act is not reported as fired.
    Memory never grows past the cap plus one read.

    A body framed in part already (the proxy passed its start on itself, see
    ``ChaosProxy._pass_ahead``) goes on with ``state.splitter``, which holds the
    unfinished event, and ``first``: frames already cut from the last read.
    """

    async def framed() -> AsyncIterator[Chunk]:
        splitter = state.splitter if state is not None else None
        if splitter is None:
            splitter = framer.splitter()
        received = 0.0
        try:
            if first:
                for chunk in first:
                    yield chunk
                received = first[-1].received
                if max_event_bytes is not None and splitter.pending > max_event_bytes:
                    if state is None:
                        raise ValueError(f"an SSE event passed {max_event_bytes} bytes")
                    state.overflow = splitter.flush()
                    return
            async for chunk in chunks:
                received = chunk.received
                for block in splitter.feed(chunk.data):
                    yield Chunk(block, received)
                if max_event_bytes is not None and splitter.pending > max_event_bytes:
                    if state is None:
                        raise ValueError(f"an SSE event passed {max_event_bytes} bytes")
                    state.overflow = splitter.flush()
                    return
            rest = splitter.flush()
            if rest:
                yield Chunk(rest, received)
        finally:
            # Like every stage of the chain: closing this one closes the one it reads.
            await _aclose(chunks)

    return framed()


class Ahead:
    """What of each read leaves ahead of the fault chain (``ChaosProxy._pass_ahead``).

    Called with each read (b"" at the body's end), it returns the whole frames that
    keep every fault short of the nearest horizon; the frame a fault may act on and
    the rest of its read go to :attr:`first`, and :attr:`stopped` is set: the chain
    takes over from there, told :attr:`events` and :attr:`nbytes`. An event that
    overruns ``max_event_bytes`` stops it too, with ``framing.overflow`` set as
    :func:`frame_events` sets it. Without a framer every read is one frame.
    """

    __slots__ = (
        "_cap",
        "_dispatches",
        "_held",
        "_max_bytes",
        "_max_events",
        "_now",
        "_splitter",
        "_whole",
        "events",
        "first",
        "framer",
        "framing",
        "nbytes",
        "stopped",
    )

    def __init__(
        self,
        horizon: Horizon,
        framer: Framer | None,
        framing: Framing,
        max_event_bytes: int,
        now: Callable[[], float],
    ) -> None:
        self._max_events = sys.maxsize if horizon.events is None else horizon.events
        self._max_bytes = sys.maxsize if horizon.nbytes is None else horizon.nbytes
        self._dispatches = None if framer is None else framer.dispatches
        #: The body's framer (None: every read is one frame) and framing, which the
        #: chain goes on with once stopped.
        self.framer = framer
        self.framing = framing
        self._splitter = framing.splitter
        # A framer may tell at a glance that a read is whole frames (SseFramer.whole);
        # that takes a splitter holding nothing (_held: it may hold bytes).
        whole = getattr(framer, "whole", None) if framing.splitter is not None else None
        self._whole: Callable[[bytes], int | None] | None = whole
        self._held = False
        self._cap = max_event_bytes
        self._now = now
        #: Data events and bytes passed on so far.
        self.events = self.nbytes = 0
        #: The frames the chain starts with, once stopped.
        self.first: list[Chunk] = []
        self.stopped = False

    def __call__(self, data: bytes) -> bytes:
        if not self._held:
            if not data:
                return b""  # the body's end, and no unfinished event held: nothing to let out
            whole = self._whole
            if whole is not None:
                # The common read, whole events, passes without being split.
                k = whole(data)
                if k is not None:
                    events = self.events + k
                    nbytes = self.nbytes + len(data)
                    if events < self._max_events and nbytes < self._max_bytes:
                        self.events = events
                        self.nbytes = nbytes
                        return data
        return self._split(data)

    def _split(self, data: bytes) -> bytes:
        splitter = self._splitter
        if data:
            blocks = [data] if splitter is None else splitter.feed(data)
        else:
            rest = b"" if splitter is None else splitter.flush()
            blocks = [rest] if rest else []
        dispatches, events, nbytes = self._dispatches, self.events, self.nbytes
        taken = 0
        for block in blocks:
            n = events + 1 if dispatches is not None and dispatches(block) else events
            b = nbytes + len(block)
            if n >= self._max_events or b >= self._max_bytes:
                received = self._now()
                self.first = [Chunk(block, received) for block in blocks[taken:]]
                self.stopped = True
                break
            events, nbytes = n, b
            taken += 1
        self.events, self.nbytes = events, nbytes
        if splitter is not None:
            held = splitter.pending
            self._held = held > 0
            if not self.stopped and held > self._cap:
                self.framing.overflow = splitter.flush()
                self.stopped = True
        if taken == 1:
            return blocks[0]
        return b"".join(blocks[:taken]) if taken else b""


def _prefix(body: Body, n: int) -> bytes:
    """The first ``n`` bytes ``body`` was given (it may have kept fewer: its cap)."""
    whole = bytes(body)
    return whole if len(whole) <= n else whole[:n]


def _holds_start(armed: list[Armed]) -> bool:
    """A fault holds the response head or its first bytes a set time from their arrival:
    then they are stamped with the kernel's arrival time (``Pool.request``)."""
    return bool(armed) and any(  # a clean exchange makes no generator
        a.fault.head_delay_ms(a.ctx) > 0 or a.fault.first_byte_hold_ms(a.ctx) for a in armed
    )


def _nearest(chain: list[Armed]) -> Horizon | None:
    """The nearest of the chain's horizons; None unless every fault in it gives one."""
    events: int | None = None
    nbytes: int | None = None
    for a in chain:
        h = a.fault.horizon(a.ctx)
        if h is None:
            return None
        if h.events is not None:
            events = h.events if events is None else min(events, h.events)
        if h.nbytes is not None:
            nbytes = h.nbytes if nbytes is None else min(nbytes, h.nbytes)
    return Horizon(events, nbytes)


def _decoded(
    read: Callable[[], Awaitable[bytes]], decoder: Decoder | None
) -> Callable[[], Awaitable[bytes]]:
    """``read`` with the body's content coding undone; b"" still means the end.

    Each read is decoded at once (zlib/brotli emit what a read completes), so a
    compressed stream is never held whole: an event leaves as soon as its bytes do.
    """
    if decoder is None:
        return read
    done = False

    async def decoded() -> bytes:
        nonlocal done
        while not done:
            data = await read()
            if not data:
                done = True
                return decoder.flush()
            out = decoder.decompress(data)
            if out:
                return out
        return b""

    return decoded


async def _aclose(stream: AsyncIterator[Chunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _client_error(down: Downstream, message: str, status: int = 400) -> None:
    body = json.dumps({"error": {"type": "invalid_request", "message": message}}).encode()
    await down.answer(status, body, JSON)


def _absolute_form(target: str) -> str:
    # RFC 9112 3.2.2: absolute-form is for forward proxies; this is a reverse proxy, so
    # the target must be origin-form (/path).
    return (
        "absolute-form request target: chaosstream is a reverse proxy, "
        f"send origin-form (/path), not {target[:80]!r}"
    )


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct.startswith("text/") or ct.endswith("json") or ct.endswith("+json")


def _guarded(event: str, ex: Exchange, step: Callable[..., object], *args: object) -> None:
    """Run one step of an exchange's end; log (never raise) what it raises."""
    try:
        step(*args)
    except Exception:
        log.exception(event, exchange=ex.id)


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:300]
