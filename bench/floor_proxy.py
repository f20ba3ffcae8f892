"""The floor: the smallest honest HTTP/1.1 streaming reverse proxy on raw asyncio protocols.

Not a product, and not a way to run chaosstream: a yardstick for issue 17's "flat"
goal. It does what every streaming reverse proxy must do and nothing more, so its CPU
per event is close to the least a Python proxy on asyncio can pay:

- per connection: accept, parse the request (httptools, i.e. llhttp in C), open a new
  upstream connection, write the request head (hop-by-hop fields dropped, ``Host``
  rewritten) and body, close the upstream at the end of the response, keep the client's
  connection for its next request (or close it);
- per chunk: one response-parser feed (only to find where the message ends) and one
  write of the upstream's bytes as they are, its own framing kept.

No faults, no recording, no logging, no timeouts, no TLS, no connection pool. The
liberties it takes are fine for :mod:`bench.upstream` and would not be on the open
internet: the response head is relayed verbatim (the upstream's own hop-by-hop fields
included; the request goes up in the client's HTTP version so the framing suits it), and
the request body is buffered whole, then sent with ``Content-Length``.
An ``Upgrade`` is ignored (RFC 9110 §7.8 lets a server do that) and the connection
closes after its answer.

Run: ``python -m bench.floor_proxy --upstream http://127.0.0.1:8001 --port N [--uvloop]``
(prints ``port N`` when listening; give the upstream as a numeric address, or every
connection pays a name look-up).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from bench._loop import run

#: RFC 9110 §7.6.1's hop-by-hop fields, plus those this proxy sets itself (``Host``,
#: ``Content-Length`` for the re-framed body) or answers itself (``Expect``).
DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Target:
    """Where requests go: the address to connect to and what goes in the request head."""

    host: str
    port: int
    authority: bytes
    """The ``Host`` field sent upstream."""
    prefix: bytes
    """The upstream URL's path, put before every request target."""


def target_of(url: str) -> Target:
    """Parse ``http://host[:port][/prefix]``; ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// upstreams are supported, got {url!r}")
    try:
        port = parts.port or 80
    except ValueError as e:
        raise ValueError(f"bad port in {url!r}: {e}") from None
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    return Target(parts.hostname, port, parts.netloc.encode(), parts.path.rstrip("/").encode())


@dataclass(frozen=True)
class Request:
    """One parsed client request, ready to be written upstream."""

    data: bytes
    head_only: bool
    """A HEAD: the response ends with its head whatever its framing says (RFC 9110 §9.3.2)."""
    keep_alive: bool


class Upstream(asyncio.Protocol):
    """One upstream connection for one request: writes it, relays the answer's bytes."""

    __slots__ = ("client", "done", "keep_alive", "parser", "relayed", "request", "transport")

    def __init__(self, client: Downstream, request: Request) -> None:
        self.client = client
        self.request = request
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done = False
        self.keep_alive = False
        self.relayed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance here.
        self.transport = transport = cast(asyncio.Transport, transport)
        if self.client.closed:
            transport.close()
            return
        self.client.upstream = self
        if self.client.paused:
            transport.pause_reading()
        transport.write(self.request.data)

    def on_headers_complete(self) -> None:
        if self.request.head_only and self.parser.get_status_code() >= 200:
            self.on_message_complete()

    def on_message_complete(self) -> None:
        # A 1xx is an interim answer: the final one follows on the same connection.
        if self.parser.get_status_code() >= 200:
            self.done = True
            # Here, not after feed_data: llhttp resets the message's flags once it returns.
            self.keep_alive = self.parser.should_keep_alive()

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # No Upgrade goes upstream, so a 101 is as broken as bad framing.
            self.failed()
            return
        self.relayed = True
        self.client.write(data)
        if self.done:
            assert self.transport is not None
            self.transport.close()
            self.client.response_done(self.keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            # A close-delimited body ends here, as does a cut one: either way the client
            # learns the end only from its own connection closing.
            self.failed()

    def failed(self) -> None:
        """The upstream broke the message: a 502 if nothing was relayed yet, else a cut."""
        self.done = True
        if self.transport is not None:
            self.transport.close()
        self.client.upstream = None
        if not self.relayed and not self.client.closed:
            self.client.write(BAD_GATEWAY)
        self.client.close()


class Downstream(asyncio.Protocol):
    """One client connection: parses its requests and answers them one at a time."""

    __slots__ = (
        "body",
        "closed",
        "connecting",
        "framed",
        "head",
        "headers",
        "keep_alive",
        "last",
        "method",
        "parser",
        "paused",
        "queue",
        "target",
        "transport",
        "upstream",
        "url",
        "write",
    )

    def __init__(self, target: Target) -> None:
        self.target = target
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.head = b""
        self.method = b""
        self.keep_alive = True
        self.framed = False
        self.queue: deque[Request] = deque()
        self.upstream: Upstream | None = None
        self.connecting: asyncio.Task[object] | None = None
        self.closed = False
        self.paused = False
        self.last = False
        """No more requests on this connection: close once the queue is answered."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance here.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.write = transport.write

    def data_received(self, data: bytes) -> None:
        if self.last:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.last = True  # the request was queued without its Upgrade field
        except httptools.HttpParserError:
            self.last = True
            if self.busy:
                self.queue.clear()  # answer what is in flight, then close
            else:
                self.write(BAD_REQUEST)
                self.close()

    def eof_received(self) -> bool:
        # A client may half-close after its request and still read the answer.
        self.last = True
        return self.busy

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.queue.clear()
        if self.connecting is not None:
            self.connecting.cancel()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()
        self.upstream = None

    def pause_writing(self) -> None:
        # The client reads slower than the upstream writes: stop reading the upstream.
        self.paused = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # The head is built here so that trailer fields, which httptools also reports
        # through on_header, never reach it.
        parser = self.parser
        self.method = parser.get_method()
        self.keep_alive = parser.should_keep_alive()
        drop = DROP
        framed = expect = False
        for name, value in self.headers:
            name = name.lower()
            if name == b"connection":  # RFC 9110 §7.6.1: the fields it names go too
                drop = drop | {t.strip().lower() for t in value.split(b",")}
            elif name in (b"content-length", b"transfer-encoding"):
                framed = True
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
        target = self.target
        # The client's own version: an HTTP/1.0 client then gets a body the upstream frames
        # for 1.0 (ended by its close), not chunks it cannot read.
        version = parser.get_http_version().encode()
        head = [b"%s %s%s HTTP/%s\r\n" % (self.method, target.prefix, self.url, version)]
        head.append(b"Host: %s\r\n" % target.authority)
        head += [b"%s: %s\r\n" % (n, v) for n, v in self.headers if n.lower() not in drop]
        self.head = b"".join(head)
        self.framed = framed
        if expect and not self.busy:
            # The body is read here before anything goes upstream, so the go-ahead is ours.
            self.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        length = b"Content-Length: %d\r\n" % len(body) if self.framed or body else b""
        data = b"".join((self.head, length, b"\r\n", body))
        pipelined = self.busy
        self.queue.append(Request(data, self.method == b"HEAD", self.keep_alive))
        self.headers = []
        self.body = []
        if not self.keep_alive:
            self.last = True
        if pipelined:
            assert self.transport is not None
            # Pipelined: read no further until the queue drains (bounds what is held).
            self.transport.pause_reading()
        self.next()

    # the relay

    @property
    def busy(self) -> bool:
        """A request is being answered or waits its turn."""
        return bool(self.queue) or self.upstream is not None or self.connecting is not None

    def next(self) -> None:
        """Connect upstream for the first queued request, unless one is being answered."""
        if self.closed or self.upstream is not None or self.connecting is not None:
            return
        if not self.queue:
            return
        request = self.queue.popleft()
        loop = asyncio.get_running_loop()
        target = self.target
        self.connecting = loop.create_task(
            loop.create_connection(lambda: Upstream(self, request), target.host, target.port)
        )
        self.connecting.add_done_callback(self.connected)

    def connected(self, task: asyncio.Task[object]) -> None:
        self.connecting = None
        if task.cancelled() or self.closed:
            return
        if task.exception() is not None:
            self.write(BAD_GATEWAY)
            self.close()
        else:
            self.next()  # the answer may have ended before this callback ran

    def response_done(self, keep_alive: bool) -> None:
        """The upstream's answer ended: next request, or close."""
        self.upstream = None
        if not keep_alive:
            self.last = True
            self.queue.clear()
        if self.queue:
            self.next()
        elif self.last:
            self.close()
        elif self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close the client connection once its buffered bytes are written."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


async def serve(target: Target, port: int) -> None:
    """Listen on 127.0.0.1:port until killed."""
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            lambda: Downstream(target), "127.0.0.1", port, backlog=4096
        )
    except OSError as e:
        print(f"floor_proxy: cannot listen on 127.0.0.1:{port}: {e}", file=sys.stderr)
        sys.exit(2)
    bound = server.sockets[0].getsockname()[1]
    print(f"port {bound}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor_proxy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--upstream", required=True, help="http://host[:port][/prefix]")
    parser.add_argument("--port", type=int, required=True, help="0 = any free port.")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    try:
        target = target_of(args.upstream)
    except ValueError as e:
        parser.error(str(e))
    try:
        run(serve(target, args.port), use_uvloop=args.uvloop)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
