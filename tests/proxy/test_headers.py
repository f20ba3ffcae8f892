"""Hop-by-hop header rules (RFC 9110 7.6.1): the function itself, and the proxy applying it
both ways on real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from chaosstream.proxy.headers import HOP_BY_HOP, end_to_end
from tests.conftest import ProxyFactory


def test_hop_by_hop_names_are_rfc_9110s_plus_http1_framing() -> None:
    """The fixed list is RFC 9110 7.6.1's connection fields plus HTTP/1.1 framing fields."""
    assert {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    } == HOP_BY_HOP


def test_end_to_end_drops_hop_by_hop_and_keeps_order_and_repeats() -> None:
    """Hop-by-hop fields go whatever their case; the rest keep their order, case and repeats."""
    headers = CIMultiDict(
        [
            ("Set-Cookie", "a=1"),
            ("TRANSFER-ENCODING", "chunked"),
            ("X-Trace", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Set-Cookie", "b=2"),
            ("te", "trailers"),
            ("Content-Type", "text/event-stream"),
        ]
    )
    out = end_to_end(headers)
    assert list(out.items()) == [
        ("Set-Cookie", "a=1"),
        ("X-Trace", "1"),
        ("Set-Cookie", "b=2"),
        ("Content-Type", "text/event-stream"),
    ]
    assert len(headers) == 7  # the input is left alone


def test_fields_named_in_connection_are_hop_by_hop_too() -> None:
    """Names listed in every Connection header (any case, spaces, empty items) are dropped."""
    headers = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Connection", "close, X-Private ,,"),
                ("connection", "x-other"),
                ("X-Private", "secret"),
                ("X-Other", "also"),
                ("X-Public", "kept"),
                ("Close", "a field named like the token"),
            ]
        )
    )
    assert list(end_to_end(headers).items()) == [("X-Public", "kept")]


def test_drop_removes_more_names_case_blind() -> None:
    """``drop`` names further fields to leave out, matched without regard to case."""
    headers = CIMultiDict([("Host", "a"), ("Content-Length", "3"), ("Accept", "*/*")])
    assert list(end_to_end(headers, drop=("host", "CONTENT-LENGTH")).items()) == [("Accept", "*/*")]


async def headers_upstream(request: web.Request) -> web.Response:
    return web.json_response(
        {"headers": [[k, v] for k, v in request.headers.items()], "host": request.host},
        headers={
            "X-End-To-End": "kept",
            "Connection": "close, X-Drop-Me",
            "X-Drop-Me": "hop-by-hop",
            "Keep-Alive": "timeout=5",
            "Set-Cookie": "a=1",
        },
    )


async def cookies_upstream(request: web.Request) -> web.Response:
    resp = web.Response(text="ok")
    for value in ("first=1", "second=2", "third=3"):
        resp.headers.add("Set-Cookie", value)
    resp.headers.add("Vary", "Accept")
    resp.headers.add("Vary", "Origin")
    return resp


@pytest.fixture
async def raw_upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/headers", headers_upstream)
    app.router.add_get("/cookies", cookies_upstream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def fetch(url: str, **kwargs: object) -> tuple[int, bytes, CIMultiDictProxy[str]]:
    method = str(kwargs.pop("method", "GET"))
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.request(method, url, **kwargs) as r,  # type: ignore[arg-type]
    ):
        return r.status, await r.read(), r.headers


async def test_headers_end_to_end_kept_hop_by_hop_dropped(
    raw_upstream: str, proxy_factory: ProxyFactory
) -> None:
    """End-to-end headers pass both ways, hop-by-hop ones do not; Host is the upstream's."""
    proxy = await proxy_factory(raw_upstream)
    _, body, headers = await fetch(
        proxy.url + "/headers",
        headers={
            "X-Client": "c1",
            "Authorization": "Bearer k",
            "Connection": "X-Private",
            "X-Private": "secret",
            "TE": "trailers",
            "Proxy-Authorization": "Basic x",
        },
    )
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert seen["x-client"] == "c1"
    assert seen["authorization"] == "Bearer k"
    for hop in ("x-private", "te", "proxy-authorization"):
        assert hop not in seen
    assert json.loads(body)["host"] == raw_upstream.removeprefix("http://")
    assert headers["X-End-To-End"] == "kept"
    assert headers["Set-Cookie"] == "a=1"
    assert "X-Drop-Me" not in headers
    assert "Keep-Alive" not in headers


async def test_repeated_response_headers_arrive_all_and_in_order(
    raw_upstream: str, proxy_factory: ProxyFactory
) -> None:
    """Three Set-Cookie and two Vary lines from upstream reach the client as sent."""
    proxy = await proxy_factory(raw_upstream)
    direct = await fetch(raw_upstream + "/cookies")
    status, body, headers = await fetch(proxy.url + "/cookies")
    assert (status, body) == (200, b"ok")
    assert headers.getall("Set-Cookie") == ["first=1", "second=2", "third=3"]
    assert headers.getall("Vary") == direct[2].getall("Vary") == ["Accept", "Origin"]


@pytest.mark.parametrize(
    "sent",
    [(), ("Accept: */*", "User-Agent: raw/1"), ("Accept: */*", "Accept-Encoding: br")],
)
async def test_the_proxy_adds_no_request_header_of_its_own(
    raw_upstream: str, proxy_factory: ProxyFactory, sent: tuple[str, ...]
) -> None:
    """Accept, Accept-Encoding, User-Agent and Content-Type reach upstream only when sent."""
    proxy = await proxy_factory(raw_upstream)
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = "\r\n".join(["GET /headers HTTP/1.1", f"Host: {host}", "Connection: close", *sent])
    writer.write(head.encode() + b"\r\n\r\n")
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    seen = {k.lower(): v for k, v in json.loads(answer.split(b"\r\n\r\n", 1)[1])["headers"]}
    defaults = {"accept", "accept-encoding", "user-agent", "content-type"}
    assert defaults & set(seen) == {line.split(":")[0].lower() for line in sent}
