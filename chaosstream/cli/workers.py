"""``chaosstream proxy --workers N``: N proxy processes behind one port, each scope on one worker.

Why a front and not plain ``SO_REUSEPORT``: the kernel balances a reused port by
connection (a hash of the 4-tuple), so two connections of one scope would land
on two workers, each with its own request counters, and ``requests: [1]`` would
fire twice. Here one front process owns the listening socket. Per accepted
connection it *peeks* (``MSG_PEEK``) at the first request head, takes the scope
from the ``/~/<scope>/`` prefix or the ``X-Chaosstream-Scope`` header, and hands
the socket itself to the worker ``crc32(scope) % N`` over a Unix socket
(``SCM_RIGHTS``). The worker's aiohttp server then owns the connection: the front
never touches a byte of the stream, so it costs one peek per connection, not a
copy per chunk, and every fault (RST, FIN, stall) reaches the client as the
worker makes it.

Unscoped requests all go to worker 0: the unscoped proxy has one set of request
counters and one fault log (its contract, "the unscoped proxy behaves as
today"), so spreading them would change what ``requests: [1]`` means. Traffic that
wants many cores names scopes.

A keep-alive connection may name another scope on a later request. Its worker
then forwards that request over loopback to the worker that holds the scope (an
extra hop, same faults and same records), so scope state is never split.

``GET /~health`` on the proxy port is answered by the front itself (never
forwarded): 200 while every worker runs, 503 otherwise -- readiness and liveness
for Kubernetes. The control port is served by the front too: ``/chaos/scopes/{id}``
calls go to the scope's worker, other native and Toxiproxy calls to worker 0,
and ``GET /metrics`` and ``GET /chaos/scopes`` merge every worker's answer.

SIGTERM or SIGINT stops the workers (SIGTERM, then SIGKILL after
:data:`STOP_TIMEOUT_S`); a worker whose front is gone (its link closes) stops by
itself, so no worker outlives the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from chaosstream.proxy.scopes import SCOPE_HEADER, SCOPE_PREFIX, ScopeError, split_scope

if TYPE_CHECKING:
    from aiohttp import ClientSession, web

    from chaosstream.proxy.server import ChaosProxy

__all__ = [
    "HEALTH_PATH",
    "Front",
    "WorkerLink",
    "control_owner",
    "merge_metrics",
    "owner",
    "route_head",
    "serve_health",
    "serve_workers",
    "worker_args",
]

HEALTH_PATH = "/~health"
"""Answered on the proxy port by chaosstream itself, never forwarded upstream."""
HEAD_LIMIT = 64 * 1024
"""Bytes of a request head the front peeks at; a longer head goes to worker 0 (which refuses it)."""
HEAD_WAIT_S = 5.0
"""A connection that sends no complete head this soon goes to worker 0 (its idle timeout rules)."""
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_HEADER_LINE = re.compile(rb"\r\nx-chaosstream-scope:[ \t]*([^\r\n]*)", re.IGNORECASE)
_SCOPE_ROUTE = re.compile(r"/chaos/scopes/([^/]+)(?:/|$)")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def owner(scope: str | None, workers: int) -> int:
    """The worker that holds ``scope``: CRC-32 of its name mod N (stable across runs and
    processes, unlike ``hash()``); unscoped traffic is worker 0's."""
    if scope is None or workers <= 1:
        return 0
    return zlib.crc32(scope.encode()) % workers


def route_head(head: bytes, workers: int) -> int | None:
    """The worker for a request head; None for ``GET /~health`` (the front answers it).

    A head that names a scope badly goes to worker 0, whose proxy answers the 400.
    """
    line, _, _ = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3:
        return 0
    target = parts[1].decode("latin-1")
    if target == HEALTH_PATH or target.startswith(HEALTH_PATH + "?"):
        return None
    found = _HEADER_LINE.search(head)
    header = found.group(1).decode("latin-1") if found else None
    if header is None and not target.startswith(SCOPE_PREFIX):
        return 0
    try:
        scope, _, _ = split_scope(target, header)
    except ScopeError:
        return 0
    return owner(scope, workers)


def control_owner(path: str, workers: int) -> int:
    """The worker a control call goes to: a scope's own routes to its worker, the rest to 0."""
    found = _SCOPE_ROUTE.match(path)
    return owner(found.group(1) if found else None, workers)


def merge_metrics(texts: Sequence[str]) -> bytes:
    """Several workers' Prometheus text as one: samples with the same name and labels add
    up; ``*_created`` keeps the earliest; the interruption ratio is recomputed from the
    summed counters (a sum of ratios means nothing)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
            into = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key not in into:
                    into[key] = s.value
                elif s.name.endswith("_created"):
                    into[key] = min(into[key], s.value)
                else:
                    into[key] += s.value
    ratio = values.get("chaosstream_stream_interruption_ratio")
    if ratio is not None:
        streams = values.get("chaosstream_streams", {})
        cuts = values.get("chaosstream_stream_interruptions", {})
        for key in ratio:
            n = streams.get(("chaosstream_streams_total", key[1]), 0.0)
            cut = cuts.get(("chaosstream_stream_interruptions_total", key[1]), 0.0)
            ratio[key] = cut / n if n else 0.0
    for name, fam in families.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)

    class _Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


# -- the worker's side ------------------------------------------------------------


def _json_response(data: object, status: int = 200) -> web.Response:
    from aiohttp import web

    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d) + "\n")


def _health_middleware(status: Callable[[], dict[str, Any]]) -> Any:
    from aiohttp import web

    @web.middleware
    async def health(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # One string compare per request, nothing per chunk.
        if request.path == HEALTH_PATH:
            return _json_response(status())
        return await handler(request)

    return health


async def serve_health(proxy: ChaosProxy, host: str, port: int) -> str:
    """Start ``proxy`` on ``host:port`` answering ``GET /~health`` itself; its base URL."""
    proxy.app.middlewares.append(
        _health_middleware(lambda: {"status": "ok", "workers": 1, "scopes": len(proxy.scopes)})
    )
    return await proxy.start(host, port)


@dataclass
class WorkerLink:
    """One worker's end of the front's Unix socket (``--worker-link FD:INDEX:N``).

    The worker serves the connections the front hands it, and forwards a request
    whose scope another worker holds (a keep-alive connection that changed scope).
    """

    fd: int
    index: int
    workers: int
    proxy_urls: list[str] = field(default_factory=list)
    _runner: Any = None
    _session: ClientSession | None = None
    _link: socket.socket | None = None
    _tasks: set[asyncio.Future[Any]] = field(default_factory=set)

    @classmethod
    def parse(cls, text: str) -> WorkerLink:
        fd, index, workers = (int(x) for x in text.split(":"))
        return cls(fd, index, workers)

    async def start(self, proxy: ChaosProxy) -> str:
        """Serve ``proxy`` on a private loopback port (siblings forward to it) and get
        ready to adopt the front's connections; the private base URL."""
        import aiohttp
        from aiohttp import web

        from chaosstream.proxy.server import SHUTDOWN_TIMEOUT_S

        proxy.app.middlewares.append(
            _health_middleware(
                lambda: {"status": "ok", "worker": self.index, "scopes": len(proxy.scopes)}
            )
        )
        route = self._route

        @web.middleware
        async def by_scope(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            return await route(request, handler)

        proxy.app.middlewares.append(by_scope)
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # The runner ChaosProxy.start() would make (same settings), kept here because
        # connections handed over by the front are adopted into its server.
        self._runner = web.AppRunner(
            proxy.app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            keepalive_timeout=proxy.idle_timeout_s,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        proxy.url = f"http://{host}:{port}"
        return proxy.url

    async def ready(self, url: str, control_url: str | None, stop: asyncio.Event) -> None:
        """Tell the front where this worker listens, learn where its siblings do, then
        adopt every connection the front sends; ``stop`` is set when the front goes."""
        loop = asyncio.get_running_loop()
        link = socket.socket(fileno=self.fd)
        link.setblocking(False)
        self._link = link
        await loop.sock_sendall(link, json.dumps({"proxy": url, "control": control_url}).encode())
        table = json.loads(await loop.sock_recv(link, 1 << 20) or b"{}")
        if not table:
            stop.set()
            return
        self.proxy_urls = list(table["proxy"])
        loop.add_reader(link.fileno(), self._adopt, link, stop)

    def _adopt(self, link: socket.socket, stop: asyncio.Event) -> None:
        try:
            msg, fds, _, _ = socket.recv_fds(link, 16, 8)
        except BlockingIOError:
            return
        except OSError:
            msg, fds = b"", []
        if not msg and not fds:  # the front is gone: so is this worker
            asyncio.get_running_loop().remove_reader(link.fileno())
            stop.set()
            return
        loop = asyncio.get_running_loop()
        for fd in fds:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            task = asyncio.ensure_future(loop.connect_accepted_socket(self._runner.server, sock))
            self._tasks.add(task)
            task.add_done_callback(self._adopted(sock))

    def _adopted(self, sock: socket.socket) -> Callable[[asyncio.Future[Any]], None]:
        def done(task: asyncio.Future[Any]) -> None:
            self._tasks.discard(task)
            if task.cancelled() or task.exception() is not None:
                sock.close()  # the client left before the worker took it

        return done

    async def close(self) -> None:
        if self._link is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._link.fileno())
            self._link.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _route(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = request.raw_path
        # Unscoped: two look-ups, as in ChaosProxy._handle; nothing else on the hot path.
        if not raw.startswith(SCOPE_PREFIX) and SCOPE_HEADER not in request.headers:
            target = 0
        else:
            try:
                name, _, _ = split_scope(raw, request.headers.get(SCOPE_HEADER))
            except ScopeError:
                return await handler(request)  # the proxy answers the 400
            target = owner(name, self.workers)
        if target == self.index or not self.proxy_urls:
            return await handler(request)
        return await self._forward(request, self.proxy_urls[target])

    async def _forward(self, request: web.Request, base: str) -> web.StreamResponse:
        """Relay one request to the worker that holds its scope, byte for byte."""
        import aiohttp
        from aiohttp import web
        from yarl import URL

        from chaosstream.proxy.exchange import abort
        from chaosstream.proxy.headers import end_to_end

        if request.headers.get("Upgrade", "").lower() == "websocket":
            # RFC 9110 15.5.20: 421, "may retry over a different connection" -- a new
            # connection reaches the right worker through the front.
            return _json_response(
                {
                    "error": {
                        "type": "misdirected",
                        "message": "open a new connection for a WebSocket in another scope",
                    }
                },
                421,
            )
        assert self._session is not None
        body = await request.read()
        headers = end_to_end(request.headers, drop=("Host", "Content-Length"))
        try:
            upstream = await self._session.request(
                request.method,
                URL(base + request.raw_path, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                # Only the client's headers go on: none of aiohttp's defaults.
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                compress=None,
            )
        except (aiohttp.ClientError, OSError) as e:
            return _json_response({"error": {"type": "bad_gateway", "message": str(e)}}, 502)
        try:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            resp.headers.extend(end_to_end(upstream.headers))
            if not upstream.headers.get("Content-Length"):
                resp.headers.popall("Content-Length", None)
            if "close" in upstream.headers.get("Connection", "").lower():
                resp.force_close()
            await resp.prepare(request)
            while chunk := await upstream.content.readany():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            # The holder cut the stream (a reset fault): the client sees a cut too.
            abort(request, rst=True)
            return resp
        finally:
            upstream.close()


# -- the front ----------------------------------------------------------------------


@dataclass
class _Worker:
    proc: asyncio.subprocess.Process
    link: socket.socket
    proxy_url: str = ""
    control_url: str | None = None


class Front:
    """The process that owns the public sockets and hands each connection to its worker."""

    def __init__(self, listen: socket.socket, workers: list[_Worker]) -> None:
        self.listen = listen
        self.workers = workers
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections handed to each worker since start.
        self.handed = [0] * len(workers)

    @property
    def alive(self) -> int:
        return sum(1 for w in self.workers if w.proc.returncode is None)

    async def accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.listen)
            conn.setblocking(False)
            task = asyncio.ensure_future(self._route(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _route(self, conn: socket.socket) -> None:
        try:
            head = await _peek_head(conn)
            if head is None:
                return
            index = route_head(head, len(self.workers))
            if index is None:
                await self._health(conn, head)
                return
            await _send_fd(self.workers[index].link, conn)
            self.handed[index] += 1
        except OSError:
            pass
        finally:
            conn.close()  # the worker holds its own copy now

    async def _health(self, conn: socket.socket, head: bytes) -> None:
        loop = asyncio.get_running_loop()
        end = head.find(b"\r\n\r\n")
        if end >= 0:
            conn.recv(end + 4)  # the head was only peeked at: take it now
        alive = self.alive
        ok = alive == len(self.workers)
        body = json.dumps(
            {
                "status": "ok" if ok else "degraded",
                "workers": len(self.workers),
                "alive": alive,
                "connections": self.handed,
            }
        ).encode()
        status = b"200 OK" if ok else b"503 Service Unavailable"
        reply = (
            b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        )
        if not head.startswith(b"HEAD "):
            reply += body
        await asyncio.wait_for(loop.sock_sendall(conn, reply), 5)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _readable(conn: socket.socket, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(conn.fileno(), _wake, ready)
    try:
        await asyncio.wait_for(ready, timeout)
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(conn.fileno())
    return True


async def _peek_head(conn: socket.socket) -> bytes | None:
    """The request head as far as it came, not consumed (the worker reads it again);
    None when the client closed before sending anything."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEAD_WAIT_S
    seen, pause = -1, 0.001
    data = b""
    while True:
        left = deadline - loop.time()
        if left <= 0 or not await _readable(conn, left):
            return data
        try:
            data = conn.recv(HEAD_LIMIT, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not data:
            return None
        if b"\r\n\r\n" in data or len(data) >= HEAD_LIMIT:
            return data
        if len(data) == seen:
            # Readiness stays on while peeked bytes wait: back off until more arrive.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        seen = len(data)


async def _send_fd(link: socket.socket, conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            socket.send_fds(link, [b"C"], [conn.fileno()])
            return
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_writer(link.fileno(), _wake, ready)
            try:
                await ready
            finally:
                loop.remove_writer(link.fileno())


def _host_of(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value if value.count(":") > 1 else value.partition(":")[0]


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _ControlFront:
    """The control port: each call to the worker that holds its state; merged lists."""

    def __init__(self, workers: list[_Worker], check_host: frozenset[str] | None) -> None:
        from aiohttp import web

        self.workers = workers
        # Set when the control port is a wildcard address: the workers answer to any
        # Host then, so the front keeps the rule ControlServer keeps for a wildcard
        # (any IP literal; names only when loopback or allowed).
        self.check_host = check_host
        self.session: ClientSession | None = None
        self.app = web.Application(client_max_size=2 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> str:
        import aiohttp
        from aiohttp import web

        self.session = aiohttp.ClientSession(auto_decompress=False)
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port).start()
        bound_host, bound_port = self.runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        return f"http://{shown}:{bound_port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    async def _call(
        self, worker: _Worker, request: web.Request, body: bytes
    ) -> tuple[int, Any, bytes]:
        from yarl import URL

        from chaosstream.proxy.headers import end_to_end

        assert self.session is not None and worker.control_url is not None
        async with self.session.request(
            request.method,
            URL(worker.control_url + request.raw_path, encoded=True),
            headers=end_to_end(request.headers, drop=("Content-Length",)),
            data=body or None,
            allow_redirects=False,
        ) as up:
            return up.status, end_to_end(up.headers, drop=("Content-Length",)), await up.read()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        host = _host_of(request.headers.get("Host", ""))
        if self.check_host is not None and not (_is_ip(host) or host in self.check_host):
            return _json_response({"error": f"Host {host[:80]!r} is not allowed"}, 403)
        body = await request.read()
        merged = request.method == "GET" and request.path in ("/metrics", "/chaos/scopes")
        targets = (
            self.workers
            if merged
            else [self.workers[control_owner(request.path, len(self.workers))]]
        )
        answers = await asyncio.gather(*(self._call(w, request, body) for w in targets))
        for status, headers, data in answers:
            if not merged or status != 200:
                return web.Response(status=status, headers=headers, body=data)
        if request.path == "/metrics":
            out = merge_metrics([a[2].decode() for a in answers])
            return web.Response(body=out, headers={"Content-Type": answers[0][1]["Content-Type"]})
        lists = [json.loads(a[2]) for a in answers]
        return _json_response(
            {
                "max_scopes": sum(x["max_scopes"] for x in lists),
                "evicted": sum(x["evicted"] for x in lists),
                "workers": len(lists),
                "scopes": [s for x in lists for s in x["scopes"]],
            }
        )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=4096)
    sock.setblocking(False)
    return sock


async def serve_workers(
    workers: int,
    worker_args: list[str],
    listen: tuple[str, int],
    control: tuple[str, int] | None,
    control_allow_hosts: tuple[str, ...] = (),
) -> int:
    """Run ``workers`` proxy processes (``chaosstream proxy WORKER_ARGS``) behind ``listen``;
    the exit code: 0 when stopped by SIGINT/SIGTERM, 1 when a worker died."""
    from chaosstream.cli.args import BadInput

    try:
        sock = _bind(*listen)
    except OSError as e:
        raise BadInput(f"cannot listen on {listen[0]}:{listen[1]}: {e.strerror or e}") from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    procs: list[_Worker] = []
    control_front: _ControlFront | None = None
    code = 0
    try:
        for i in range(workers):
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            args = [*worker_args, "--worker-link", f"{theirs.fileno()}:{i}:{workers}"]
            if control is not None:
                args += ["--control", "127.0.0.1:0"]
                for name in _worker_hosts(control[0]):
                    args += ["--control-allow-host", name]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "chaosstream", "proxy", *args, pass_fds=(theirs.fileno(),)
            )
            theirs.close()
            mine.setblocking(False)
            procs.append(_Worker(proc, mine))
        for w in procs:
            ready = await _first(loop.sock_recv(w.link, 1 << 16), w.proc.wait(), stop)
            if not isinstance(ready, bytes) or not ready:
                code = w.proc.returncode if w.proc.returncode is not None else 0
                if code:
                    click.echo(f"chaosstream: worker exited with {code} while starting", err=True)
                return code
            info = json.loads(ready)
            w.proxy_url, w.control_url = info["proxy"], info["control"]
        table = json.dumps(
            {"proxy": [w.proxy_url for w in procs], "control": [w.control_url for w in procs]}
        ).encode()
        for w in procs:
            await loop.sock_sendall(w.link, table)
        front = Front(sock, procs)
        shown = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
        url = f"http://{shown}:{sock.getsockname()[1]}"
        if control is not None:
            wildcard = control[0] in ("0.0.0.0", "::", "")
            allowed = _LOOPBACK | {h.lower() for h in control_allow_hosts}
            allowed |= set(os.environ.get("CHAOSSTREAM_CONTROL_ALLOW_HOST", "").split())
            control_front = _ControlFront(procs, frozenset(allowed) if wildcard else None)
            try:
                control_url = await control_front.start(*control)
            except OSError as e:
                raise BadInput(
                    f"cannot listen on {control[0]}:{control[1]}: {e.strerror or e}"
                ) from None
        click.echo(f"chaosstream proxy listening on {url}", err=True)
        click.echo(f"  workers:  {workers} (a scope stays on one; unscoped on worker 0)", err=True)
        click.echo(f"  health:   {url}{HEALTH_PATH}", err=True)
        if control_front is not None:
            click.echo(f"  control:  {control_url}  (metrics: {control_url}/metrics)", err=True)
        accepting = asyncio.ensure_future(front.accept_forever())
        deaths = [asyncio.ensure_future(w.proc.wait()) for w in procs]
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([accepting, stopping, *deaths], return_when="FIRST_COMPLETED")
        accepting.cancel()
        stopping.cancel()
        for d in deaths:
            d.cancel()
        if not stop.is_set():
            dead = next((w for w in procs if w.proc.returncode is not None), None)
            if dead is not None:
                click.echo(
                    f"chaosstream: worker {procs.index(dead)} exited with "
                    f"{dead.proc.returncode}; stopping the others",
                    err=True,
                )
            code = 1
        return code
    finally:
        sock.close()
        if control_front is not None:
            await control_front.close()
        await _stop(procs)


async def _first(*aws: Awaitable[Any] | asyncio.Event) -> Any:
    """The result of whichever finishes first (an Event counts as None), the rest cancelled."""
    tasks = [asyncio.ensure_future(a.wait() if isinstance(a, asyncio.Event) else a) for a in aws]
    try:
        done, _ = await asyncio.wait(
            tasks, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        return next(iter(done)).result() if done else None
    finally:
        for t in tasks:
            t.cancel()


def _worker_hosts(host: str) -> list[str]:
    # The workers' control servers listen on loopback; the Host the client sent is
    # passed on, so they must answer to the front's name as well.
    if host in ("0.0.0.0", "::", ""):
        return ["*"]  # the front checks the Host itself (see _ControlFront)
    return [host.strip("[]")]


# Options the front sets for each worker itself, or passes by environment (a token
# on a command line is visible to every user of the machine in `ps`).
_FRONT_ONLY = frozenset({"workers", "worker_link", "listen", "control", "control_token"})


def worker_args(ctx: click.Context) -> list[str]:
    """The ``chaosstream proxy`` options a worker gets: those given on the command line,
    as the front parsed them, minus the front's own."""
    from click.core import ParameterSource

    args: list[str] = []
    for p in ctx.command.params:
        name = p.name or ""
        if not isinstance(p, click.Option) or name in _FRONT_ONLY:
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue  # a default is the worker's default too; the environment is inherited
        value = ctx.params.get(name)
        if value is None:
            continue
        if p.is_flag:
            if p.secondary_opts:
                args.append(p.opts[0] if value else p.secondary_opts[0])
            elif value:
                args.append(p.opts[0])
        elif p.multiple:
            for v in value:
                args += [p.opts[0], str(v)]
        elif isinstance(value, tuple):
            args += [p.opts[0], ",".join(map(str, value))]
        else:
            args += [p.opts[0], str(value)]
    token = ctx.params.get("control_token")
    if token:
        os.environ["CHAOSSTREAM_CONTROL_TOKEN"] = token  # inherited by the workers
    return args


async def _stop(procs: list[_Worker]) -> None:
    for w in procs:
        w.link.close()  # a worker whose link closes stops too (the front is gone)
        if w.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
    for w in procs:
        try:
            await asyncio.wait_for(w.proc.wait(), STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            await w.proc.wait()
