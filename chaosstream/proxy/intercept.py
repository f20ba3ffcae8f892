"""The intercepting front: an HTTP forward proxy (``HTTPS_PROXY``) before the chaos proxy.

A client that cannot be pointed at a base URL (a mobile app, a desktop app, a
CLI with a hard-coded endpoint, a page calling a provider directly) is pointed
at this front as its proxy instead. Per client connection it reads one request
head and then:

* ``CONNECT host:port`` for a host it intercepts: answers 200, terminates TLS
  with a certificate for ``host`` minted from the local CA
  (:mod:`chaosstream.proxy.ca`), and hands the decrypted connection to the
  :class:`~chaosstream.proxy.server.ChaosProxy`'s own aiohttp server, so the
  profile, the format modules, the recorder and the verifier see the exchange
  exactly as in reverse mode. Where it goes is the request's
  :data:`~chaosstream.proxy.server.ROUTE`: the embedded mock (default: no
  DNS, no network, no key) or the real host (verified as in reverse mode).
* ``CONNECT`` for any other host: a raw TCP relay, TLS untouched (the client
  sees the origin's certificate), no faults, nothing recorded.
* an absolute-form request (``GET http://host/path``, RFC 9112 3.2.2): the same
  decision per request, over plain HTTP.
* an origin-form request (``/v1/...``): the chaos proxy in reverse mode, as ever.

Like the control API, it listens on loopback unless given a token, which a
client then sends as its proxy password (``http://chaosstream:TOKEN@host:port``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import hmac
import ipaddress
import json
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from chaosstream.faults.profile import Profile
from chaosstream.proxy.ca import CertificateAuthority
from chaosstream.proxy.headers import end_to_end
from chaosstream.proxy.server import ROUTE, SHUTDOWN_TIMEOUT_S, ChaosProxy, Route

__all__ = [
    "DEFAULT_INTERCEPT_HOSTS",
    "NOWHERE",
    "InterceptError",
    "InterceptProxy",
    "hosts_of",
    "is_loopback",
    "profile_hosts",
]

log = structlog.get_logger("chaosstream.proxy.intercept")

DEFAULT_INTERCEPT_HOSTS: tuple[str, ...] = (
    "api.openai.com",
    "*.openai.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "*-aiplatform.googleapis.com",
    "bedrock-runtime.*.amazonaws.com",
    "api.mistral.ai",
    "api.groq.com",
    "api.cohere.com",
    "api.cohere.ai",
    "api.deepseek.com",
    "api.x.ai",
    "api.together.xyz",
    "api.together.ai",
    "api.fireworks.ai",
    "api.perplexity.ai",
    "openrouter.ai",
)
"""The AI API hosts intercepted when no ``--intercept-hosts`` are given (globs)."""

NOWHERE = "https://chaosstream.invalid"
"""The chaos proxy's own upstream when every request goes to the host it names: never
resolvable (RFC 6761 .invalid), so nothing is sent there by mistake."""

# A request head larger than this is refused (431), like aiohttp's own 8 KiB line limit.
MAX_HEAD_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
TLS_HANDSHAKE_TIMEOUT_S = 10.0
# Hop-by-hop headers a forward proxy consumes (RFC 9110 7.6.1, 11.7.2; Proxy-Connection is
# the pre-standard one curl and old browsers still send).
PROXY_HEADERS = ("Proxy-Authorization", "Proxy-Connection")


class InterceptError(Exception):
    """The front cannot start as asked (message names the problem)."""


def is_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class InterceptProxy:
    """An HTTP forward proxy that sends the hosts it intercepts through ``proxy``.

    ``upstream`` is where intercepted requests go: a base URL (the embedded mock:
    it answers every provider's paths, so no DNS and no network are needed), or
    None for the host the client asked for. ``hosts`` are the globs of the hosts
    to intercept; ``token``, when given, is the password every client must send.
    """

    def __init__(
        self,
        proxy: ChaosProxy,
        ca: CertificateAuthority,
        *,
        upstream: str | None,
        hosts: Iterable[str] = DEFAULT_INTERCEPT_HOSTS,
        token: str | None = None,
    ) -> None:
        self.proxy = proxy
        self.ca = ca
        self.upstream = URL(upstream.rstrip("/")) if upstream else None
        self.hosts = tuple(h.lower() for h in hosts)
        self.token = token or None
        self.url = ""
        # The TLS connections the front handed over: aiohttp's protocol -> the CONNECT target
        # (aiohttp's protocol takes no weak reference: closed ones are swept as new ones come).
        self._tunnels: dict[Any, tuple[str, int]] = {}
        self._sweep_at = 64
        self._relays: set[_Pipe] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        proxy.app.middlewares.append(self._route)

    # -- lifecycle -----------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port); return the proxy URL (no token in it)."""
        if self.token is None and not is_loopback(host):
            raise InterceptError(
                f"an intercepting proxy on {host} would let anyone who reaches it use it: "
                "set --token, or listen on 127.0.0.1"
            )
        # The same settings as ChaosProxy.start: handler cancellation closes upstream when a
        # client leaves; the keep-alive timer closes idle connections.
        self._runner = web.AppRunner(
            self.proxy.app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            keepalive_timeout=self.proxy.idle_timeout_s,
        )
        await self._runner.setup()
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Front(self), host, port)
        except OSError:
            await self.close()
            raise
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    @property
    def proxy_url(self) -> str:
        """The URL for ``HTTPS_PROXY``: with the token as the password when there is one."""
        if self.token is None:
            return self.url
        url = URL(self.url)
        return str(url.with_user("chaosstream").with_password(self.token))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._relays):
            pipe.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._server is not None:
            # Python 3.12+ waits here for every connection; all were closed above.
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> InterceptProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- decisions -------------------------------------------------------------

    def intercepts(self, host: str) -> bool:
        """True when ``host`` matches one of the interception globs."""
        host = host.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(host, glob) for glob in self.hosts)

    def authorized(self, value: str | None) -> bool:
        """Does a ``Proxy-Authorization`` value carry the token (Basic password or Bearer)?"""
        if self.token is None:
            return True
        if not value:
            return False
        scheme, _, cred = value.partition(" ")
        secret = cred.strip()
        if scheme.lower() == "basic":
            try:
                secret = base64.b64decode(secret, validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(secret.encode(), self.token.encode())

    def route(self, host: str, port: int, scheme: str) -> Route:
        """Where an intercepted request for ``scheme://host:port`` goes."""
        if self.upstream is not None:
            return Route(self.upstream, host)
        default = 443 if scheme == "https" else 80
        netloc = f"[{host}]" if ":" in host else host
        if port != default:
            netloc = f"{netloc}:{port}"
        return Route(URL(f"{scheme}://{netloc}"), host)

    # -- requests the aiohttp server gets ---------------------------------------

    @web.middleware
    async def _route(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        target = self._tunnels.get(request.protocol)
        if target is not None:  # inside a CONNECT the front terminated: origin-form
            host, port = target
            request[ROUTE] = self.route(host, port, "https")
            return await handler(request)
        if request.raw_path.startswith("/"):
            if self.upstream is None:
                return _error(
                    400,
                    "this is an intercepting proxy: set HTTPS_PROXY to it and call the "
                    "provider's own URL",
                )
            return await handler(request)  # reverse mode on the same port
        if not self.authorized(request.headers.get("Proxy-Authorization")):
            return _auth_required()
        url = URL(request.raw_path, encoded=True)
        if url.scheme != "http" or not url.host:
            return _error(
                400, f"a forward proxy takes http:// targets, not {request.raw_path[:80]!r}"
            )
        headers = CIMultiDict(request.headers)
        for name in PROXY_HEADERS:
            headers.popall(name, None)
        origin = URL.build(
            path=url.raw_path or "/", query_string=url.raw_query_string, encoded=True
        )
        if not self.intercepts(url.host):
            return await self._pass(request, url, headers)
        routed = request.clone(rel_url=origin, headers=headers)
        routed[ROUTE] = self.route(url.host, url.port or 80, "http")
        return await handler(routed)

    async def _pass(
        self, request: web.Request, url: URL, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        """Forward a plain-HTTP request for a host not intercepted: no faults, not recorded."""
        assert self._session is not None
        body = await request.read()
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=end_to_end(headers, drop=("Host", "Content-Length")),
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            )
        except (aiohttp.ClientError, OSError) as e:
            return _error(502, f"cannot reach {url.host}: {str(e) or type(e).__name__}"[:300])
        try:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            resp.headers.extend(end_to_end(upstream.headers))
            await resp.prepare(request)
            async for data in upstream.content.iter_any():
                await resp.write(data)
            await resp.write_eof()
            return resp
        finally:
            upstream.close()

    # -- connections the front reads -------------------------------------------

    def _dispatch(self, front: _Front, head: bytes, rest: bytes) -> None:
        task = asyncio.ensure_future(self._serve(front, head, rest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, front: _Front, head: bytes, rest: bytes) -> None:
        transport = front.transport
        assert transport is not None
        try:
            method, target, headers = _parse_head(head)
        except ValueError as e:
            _reply(transport, 400, str(e))
            return
        if method != "CONNECT":
            self._hand_over(transport, head + rest)
            return
        if not self.authorized(headers.get("proxy-authorization")):
            transport.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="chaosstream"\r\n'
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            transport.close()
            return
        try:
            host, port = _authority(target)
        except ValueError as e:
            _reply(transport, 400, str(e))
            return
        if self.intercepts(host):
            await self._terminate(transport, host, port, rest)
        else:
            await self._tunnel(transport, host, port, rest)

    def _hand_over(self, transport: asyncio.Transport, data: bytes) -> None:
        """Give a plain-HTTP connection to the chaos proxy's aiohttp server."""
        assert self._runner is not None and self._runner.server is not None
        handler = self._runner.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)
        transport.resume_reading()

    async def _terminate(
        self, transport: asyncio.Transport, host: str, port: int, rest: bytes
    ) -> None:
        """Answer the CONNECT, speak TLS as ``host``, and hand the plaintext to aiohttp."""
        if rest:
            # RFC 9110 9.3.6: a client may send before the 2xx only at its own risk; the
            # TLS layer cannot be handed bytes read before it started.
            _reply(transport, 400, "data sent before the CONNECT was answered")
            return
        loop = asyncio.get_running_loop()
        try:
            ctx = await loop.run_in_executor(None, self.ca.context_for, host)
        except ValueError as e:  # a name cryptography refuses for a SAN
            _reply(transport, 400, f"cannot make a certificate for {host[:80]!r}: {e}")
            return
        transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        waiting = _Waiting()
        try:
            tls = await loop.start_tls(
                transport,
                waiting,
                ctx,
                server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S,
            )
        except (ssl.SSLError, OSError, asyncio.TimeoutError) as e:
            # The usual cause: the client does not trust the CA. Only the reason is
            # logged, never a key or a certificate.
            log.warning(
                "tls_refused",
                host=host,
                reason=str(e)[:200] or type(e).__name__,
                hint="trust the CA: chaosstream ca trust-hints",
            )
            transport.abort()
            return
        if tls is None:  # the client left during the handshake
            return
        assert self._runner is not None and self._runner.server is not None
        handler = self._runner.server()
        self._remember(handler, host, port)
        tls.set_protocol(handler)
        handler.connection_made(tls)
        waiting.hand_to(handler)

    def _remember(self, handler: Any, host: str, port: int) -> None:
        self._tunnels[handler] = (host, port)
        if len(self._tunnels) >= self._sweep_at:
            # aiohttp drops a handler's transport when its connection is lost.
            for h in [h for h in self._tunnels if h.transport is None]:
                del self._tunnels[h]
            self._sweep_at = max(64, 2 * len(self._tunnels))

    async def _tunnel(
        self, transport: asyncio.Transport, host: str, port: int, rest: bytes
    ) -> None:
        """A raw TCP relay to ``host:port``: bytes both ways, untouched."""
        loop = asyncio.get_running_loop()
        client = _Pipe(self._relays)
        client.transport = transport
        try:
            _, origin = await asyncio.wait_for(
                loop.create_connection(lambda: _Pipe(self._relays), host, port),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, asyncio.TimeoutError) as e:
            _reply(transport, 502, f"cannot reach {host}:{port}: {str(e) or type(e).__name__}")
            return
        if transport.is_closing():
            origin.abort()
            return
        client.link(origin)
        transport.set_protocol(client)
        transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            assert origin.transport is not None
            origin.transport.write(rest)
        transport.resume_reading()


class _Front(asyncio.Protocol):
    """Reads one request head from a new client connection, then lets the owner decide."""

    def __init__(self, owner: InterceptProxy) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        # Like the chaos proxy's idle timeout: a connection that never sends a head goes.
        self.timer = asyncio.get_running_loop().call_later(
            self.owner.proxy.idle_timeout_s, transport.close
        )

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._finish()
                assert self.transport is not None
                _reply(self.transport, 431, "request head too large")
            return
        self._finish()
        assert self.transport is not None
        self.transport.pause_reading()
        head, rest = bytes(self.buffer[: end + 4]), bytes(self.buffer[end + 4 :])
        self.buffer.clear()
        self.owner._dispatch(self, head, rest)

    def _finish(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class _Waiting(asyncio.Protocol):
    """Holds what arrives over TLS between the handshake and aiohttp taking the connection
    (a TLS 1.3 client may send its request in the same flight as its Finished)."""

    def __init__(self) -> None:
        self.held: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.held.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)

    def hand_to(self, handler: asyncio.Protocol) -> None:
        for data in self.held:
            handler.data_received(data)
        if self.eof:
            handler.eof_received()
        if self.lost is not None:
            handler.connection_lost(self.lost[0])


class _Pipe(asyncio.Protocol):
    """One end of a tunnel: what arrives is written to the other end, with back-pressure."""

    def __init__(self, registry: set[_Pipe]) -> None:
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.eof = False

    def link(self, other: _Pipe) -> None:
        self.peer, other.peer = other, self
        self.registry.add(self)
        self.registry.add(other)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        # A half-close passes on as a half-close (TLS close_notify is data, not this).
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None:
            return False
        if peer.eof:
            peer.transport.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            # An RST on one side is an RST on the other; a close, a close.
            if exc is not None:
                peer.transport.abort()
            else:
                peer.transport.close()

    def pause_writing(self) -> None:
        # Our side's buffer is full: stop reading the side that fills it.
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, target and lower-cased headers of a request head (RFC 9112 3, 5)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise ValueError("request head is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"bad request line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"bad header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], headers


def _authority(target: str) -> tuple[str, int]:
    """``host:port`` of a CONNECT (RFC 9110 9.3.6: authority-form, the port required)."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"CONNECT needs host:port, got {target[:80]!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.lower(), int(port)


def _reply(transport: asyncio.Transport, status: int, message: str) -> None:
    body = json.dumps({"error": {"type": "proxy_error", "message": message}}).encode()
    reason = {400: "Bad Request", 431: "Request Header Fields Too Large", 502: "Bad Gateway"}
    transport.write(
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    transport.close()


def _error(status: int, message: str) -> web.Response:
    body = json.dumps({"error": {"type": "proxy_error", "message": message}}).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def _auth_required() -> web.Response:
    resp = _error(407, "proxy authentication required: use http://chaosstream:TOKEN@host:port")
    resp.headers["Proxy-Authenticate"] = 'Basic realm="chaosstream"'
    return resp


def hosts_of(globs: Sequence[str]) -> tuple[str, ...]:
    """Globs from comma-separated lists given on the command line, lower-cased, no blanks."""
    return tuple(g.strip().lower() for part in globs for g in part.split(",") if g.strip())


def profile_hosts(profile: Profile) -> tuple[str, ...]:
    """The ``match.host`` globs of a profile's faults: hosts it means to act on."""
    return tuple(
        f.match.host.lower() for f in profile.all_faults() if f.match is not None and f.match.host
    )
