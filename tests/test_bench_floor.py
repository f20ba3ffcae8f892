"""bench/floor_proxy.py: the python-floor contender relays the upstream's bytes as they are."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.__main__ import ROOT, Load, client, free_port, proxy_cmd, wait_port

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
# A chunk extension and odd chunk sizes: a proxy that re-framed the body would lose them.
CHUNKS = [b"7;ext=1\r\ndata: a", b"\r\na\r\ndata: bc\n\n\r\n", b"0\r\n\r\n"]
RESPONSE = HEAD + b"".join(CHUNKS)


class FixedUpstream:
    """A loopback upstream that answers every request with RESPONSE in pieces, recording heads."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.closed_by_peer: list[bool] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(HEAD)
                for chunk in CHUNKS:
                    time.sleep(0.02)  # separate reads on the proxy's side
                    conn.sendall(chunk)
                # The proxy ends the upstream connection once the response is complete.
                self.closed_by_peer.append(conn.recv(1) == b"")


@contextmanager
def running(cmd: list[str], port: int) -> Iterator[None]:
    """A server process listening on ``port`` for the block; terminated and reaped after."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_port(port, proc)
        yield
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # also closes the pipes


@pytest.fixture
def fixed_upstream() -> Iterator[FixedUpstream]:
    upstream = FixedUpstream()
    yield upstream
    upstream.sock.close()


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n and (chunk := sock.recv(65536)):
        data += chunk
    return data


def test_floor_relays_bytes_verbatim_keeps_the_client_and_closes_the_upstream(
    fixed_upstream: FixedUpstream,
) -> None:
    """Two requests on one client connection: each answer byte-exact, each on a new upstream
    connection the proxy closes, Host rewritten, hop-by-hop fields (and those named by
    Connection) dropped, the body re-framed with Content-Length."""
    port = free_port()
    cmd = proxy_cmd("python-floor", f"http://127.0.0.1:{fixed_upstream.port}", port, "{}")
    assert cmd is not None
    with running(cmd, port), socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: example\r\n"
            b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        )
        assert read_exactly(s, len(RESPONSE)) == RESPONSE
        s.sendall(b"GET /second HTTP/1.1\r\nHost: example\r\n\r\n")
        assert read_exactly(s, len(RESPONSE)) == RESPONSE
    first, second = fixed_upstream.requests
    assert first == (
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{fixed_upstream.port}\r\n".encode()
        + b"X-Keep: 2\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert second.startswith(b"GET /second HTTP/1.1\r\n")
    assert b"content-length" not in second.lower()
    assert fixed_upstream.closed_by_peer == [True, True]


def test_floor_streams_every_event_of_the_bench_upstream() -> None:
    """bench.client through python-floor in front of bench.upstream: 5 x 20 paced events, all
    counted, no errors."""
    up_port = free_port()
    port = free_port()
    cmd = proxy_cmd("python-floor", f"http://127.0.0.1:{up_port}", port, "{}")
    assert cmd is not None
    with (
        running([sys.executable, "-m", "bench.upstream", "--port", str(up_port)], up_port),
        running(cmd, port),
    ):
        got = client(f"http://127.0.0.1:{port}", Load("floor", 5, 20, rate=50.0), 60)
    assert got["errors"] == {}
    assert got["counts"] == {"20": 5}
    assert got["events"] == 100


def test_floor_refuses_an_upstream_it_cannot_speak_to() -> None:
    """An https:// upstream is a usage error (exit 2) naming the cause, not a traceback."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.floor_proxy", "--upstream", "https://x", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert b"only http:// upstreams" in out.stderr
    assert b"Traceback" not in out.stderr
