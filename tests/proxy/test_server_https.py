"""HTTPS upstreams: real certificate verification by default, --insecure / --ca-file to relax it."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from tests.conftest import ProxyFactory


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def https_upstream(ca: trustme.CA) -> AsyncIterator[str]:
    """A TLS server on 127.0.0.1 whose certificate only the test CA vouches for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"tls": request.secure, "path": request.path})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


async def get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, json.loads(await resp.read())


async def test_unknown_certificate_is_refused_by_default(
    https_upstream: str, proxy_factory: ProxyFactory
) -> None:
    """Without the CA, the proxy refuses the upstream and says why in a 502."""
    proxy = await proxy_factory(https_upstream)
    status, body = await get(proxy.url + "/hello")
    assert status == 502
    assert "certificate" in json.dumps(body).lower()


async def test_ca_file_makes_the_upstream_trusted(
    https_upstream: str, proxy_factory: ProxyFactory, ca: trustme.CA, tmp_path: Path
) -> None:
    """With --ca-file naming the CA, the HTTPS upstream is reached and verified."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    proxy = await proxy_factory(https_upstream, ca_file=str(bundle))
    assert await get(proxy.url + "/hello") == (200, {"tls": True, "path": "/hello"})


async def test_insecure_skips_verification(
    https_upstream: str, proxy_factory: ProxyFactory
) -> None:
    """--insecure reaches an upstream whose certificate cannot be verified."""
    proxy = await proxy_factory(https_upstream, insecure=True)
    assert await get(proxy.url + "/hello") == (200, {"tls": True, "path": "/hello"})
