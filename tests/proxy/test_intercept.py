"""The intercepting front: SDKs with their default base URLs reach the mock through
HTTPS_PROXY; CONNECT is terminated for intercepted hosts and tunnelled byte-exact for others."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from chaosstream.faults.profile import Profile, load_profile
from chaosstream.mock import MockServer
from chaosstream.proxy.ca import CertificateAuthority
from chaosstream.proxy.intercept import (
    DEFAULT_INTERCEPT_HOSTS,
    InterceptError,
    InterceptProxy,
    hosts_of,
    profile_hosts,
)
from chaosstream.proxy.server import ChaosProxy
from tests.conftest import make_profile

Front = Callable[..., Awaitable[InterceptProxy]]

# Random bytes, every value, so a byte changed or lost on the way shows.
PAYLOAD = bytes(range(256)) * 1024 + os.urandom(4096)

SDK_CLIENT = r"""
import sys, openai, anthropic
which = sys.argv[1]
try:
    if which == "openai":
        c = openai.OpenAI(max_retries=0)
        s = c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}], stream=True
        )
        text = "".join((ch.choices[0].delta.content or "") for ch in s if ch.choices)
        print("URL", c.base_url)
    else:
        a = anthropic.Anthropic(max_retries=0)
        with a.messages.stream(
            model="claude-test",
            max_tokens=64,
            messages=[{"role": "user", "content": "hello there"}],
        ) as st:
            text = "".join(st.text_stream)
        print("URL", a.base_url)
    print("TEXT", text)
except Exception as e:
    print("ERROR", type(e).__name__, e)
    sys.exit(1)
"""


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[CertificateAuthority]:
    authority = CertificateAuthority(tmp_path / "cs-home")
    yield authority
    authority.close()


@pytest.fixture
async def front(ca: CertificateAuthority) -> AsyncIterator[Front]:
    """Start intercepting fronts over fresh chaos proxies; all closed after the test."""
    started: list[InterceptProxy] = []

    async def make(
        upstream: str | None,
        profile: Profile | None = None,
        *,
        hosts: tuple[str, ...] = DEFAULT_INTERCEPT_HOSTS,
        token: str | None = None,
        **kwargs: object,
    ) -> InterceptProxy:
        proxy = ChaosProxy(
            upstream or "https://chaosstream.invalid",
            profile or load_profile("clean"),
            **kwargs,  # type: ignore[arg-type]
        )
        fp = InterceptProxy(proxy, ca, upstream=upstream, hosts=hosts, token=token)
        await fp.start()
        started.append(fp)
        return fp

    yield make
    for fp in started:
        await fp.close()


def sdk_env(fp: InterceptProxy, ca: CertificateAuthority) -> dict[str, str]:
    """Only the proxy and the CA: no base URL, so the SDKs call their real hostnames."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_BASE_URL", "_PROXY", "_proxy")) and k != "SSL_CERT_FILE"
    }
    env.update(
        HTTPS_PROXY=fp.proxy_url,
        SSL_CERT_FILE=str(ca.cert_path),
        OPENAI_API_KEY="sk-test",
        ANTHROPIC_API_KEY="sk-test",
    )
    return env


async def run_sdk(which: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SDK_CLIENT,
        which,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def reverse_text(mock: MockServer, path: str, body: dict[str, object]) -> str:
    """The text the same request streams in reverse mode (straight through a ChaosProxy)."""
    proxy = ChaosProxy(mock.url, load_profile("clean"))
    await proxy.start()
    try:
        async with aiohttp.ClientSession() as s, s.post(proxy.url + path, json=body) as r:
            await r.read()
        return proxy.recorder.exchanges[-1].response_text or ""
    finally:
        await proxy.close()


@pytest.mark.parametrize(
    ("which", "host", "path"),
    [
        ("openai", "api.openai.com", "/v1/chat/completions"),
        ("anthropic", "api.anthropic.com", "/v1/messages"),
    ],
)
async def test_sdk_with_default_base_url_reaches_the_mock(
    which: str,
    host: str,
    path: str,
    front: Front,
    ca: CertificateAuthority,
    mock: MockServer,
) -> None:
    """The official SDK, only HTTPS_PROXY and SSL_CERT_FILE set, calls its real hostname,
    gets the mock's answer through the front, and streams the same text as in reverse mode."""
    fp = await front(mock.url)
    code, out = await run_sdk(which, sdk_env(fp, ca))
    assert code == 0, out
    assert f"URL https://{host}" in out
    text = out.split("TEXT ", 1)[1].rstrip("\n")
    exchanges = fp.proxy.recorder.exchanges
    assert [(e.path, e.outcome, e.status) for e in exchanges] == [(path, "complete", 200)]
    assert exchanges[0].stream
    body = json.loads(exchanges[0].request_body)
    assert text == await reverse_text(mock, path, body)
    assert text == exchanges[0].response_text


async def test_fault_matched_by_host_acts_on_one_sdk_only(
    front: Front, ca: CertificateAuthority, mock: MockServer
) -> None:
    """A profile's match.host picks the provider: Anthropic's stream is cut, OpenAI's is not."""
    profile = make_profile(
        [
            {
                "type": "disconnect",
                "after_events": 3,
                "mode": "reset",
                "match": {"host": "api.anthropic.*"},
            }
        ]
    )
    fp = await front(mock.url, profile)
    env = sdk_env(fp, ca)
    (a_code, a_out), (o_code, o_out) = await asyncio.gather(
        run_sdk("anthropic", env), run_sdk("openai", env)
    )
    assert a_code == 1 and "ERROR" in a_out, a_out
    assert o_code == 0, o_out
    outcomes = {e.path: e.outcome for e in fp.proxy.recorder.exchanges}
    assert outcomes == {"/v1/messages": "fault", "/v1/chat/completions": "complete"}
    assert [e.type for e in fp.proxy.fault_log] == ["disconnect"]


@pytest.fixture(scope="module")
def origin_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def https_origin(origin_ca: trustme.CA) -> AsyncIterator[int]:
    """An HTTPS server on 127.0.0.1 (names localhost and 127.0.0.1) serving PAYLOAD."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    origin_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)

    async def payload(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=PAYLOAD + body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_route("*", "/payload", payload)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def test_intercepted_https_origin_is_byte_exact(
    front: Front,
    ca: CertificateAuthority,
    origin_ca: trustme.CA,
    https_origin: int,
    tmp_path: Path,
) -> None:
    """CONNECT localhost:PORT with localhost intercepted: the client sees our CA's leaf, the
    proxy verifies the origin with its CA file, and the body arrives byte for byte."""
    origin_pem = tmp_path / "origin-ca.pem"
    origin_ca.cert_pem.write_to_path(str(origin_pem))
    fp = await front(None, hosts=("localhost",), ca_file=str(origin_pem))
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    url = f"https://localhost:{https_origin}/payload"
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=b"tail", proxy=fp.url, ssl=client) as r,
    ):
        assert r.connection is not None and r.connection.transport is not None
        issuer = r.connection.transport.get_extra_info("peercert")["issuer"]
        got = await r.read()
    assert got == PAYLOAD + b"tail"
    assert (("commonName", "chaosstream local CA"),) in issuer
    [ex] = fp.proxy.recorder.exchanges
    assert (ex.path, ex.status, ex.outcome, ex.bytes_out) == ("/payload", 200, "complete", len(got))


async def test_host_not_intercepted_is_tunnelled_untouched(
    front: Front, origin_ca: trustme.CA, https_origin: int
) -> None:
    """CONNECT to a host not intercepted is a raw relay: the client verifies the origin's own
    certificate (TLS untouched), gets every byte, and nothing is recorded or faulted."""
    cut = make_profile([{"type": "disconnect", "after_bytes": 10, "mode": "reset"}])
    fp = await front("http://127.0.0.1:9", cut)
    client = ssl.create_default_context()
    origin_ca.configure_trust(client)
    url = f"https://127.0.0.1:{https_origin}/payload"
    async with aiohttp.ClientSession() as s, s.get(url, proxy=fp.url, ssl=client) as r:
        assert r.connection is not None and r.connection.transport is not None
        issuer = r.connection.transport.get_extra_info("peercert")["issuer"]
        got = await r.read()
    assert got == PAYLOAD
    assert not any("chaosstream" in str(v) for rdn in issuer for v in rdn)
    assert not fp.proxy.recorder.exchanges and not fp.proxy.fault_log


async def test_absolute_form_http_is_intercepted_or_passed(front: Front, mock: MockServer) -> None:
    """Plain-HTTP absolute-form requests: an intercepted host goes to the mock through the
    profile, another host is forwarded untouched and not recorded."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path_qs, "host": request.host})

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        fp = await front(mock.url)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with aiohttp.ClientSession() as s:
            async with s.post(
                "http://api.openai.com/v1/chat/completions", json=body, proxy=fp.url
            ) as r:
                text = await r.text()
            assert r.status == 200 and "data: [DONE]" in text
            async with s.get(f"http://127.0.0.1:{port}/x?y=1", proxy=fp.url) as r:
                assert await r.json() == {"path": "/x?y=1", "host": f"127.0.0.1:{port}"}
        assert [e.path for e in fp.proxy.recorder.exchanges] == ["/v1/chat/completions"]
    finally:
        await runner.cleanup()


async def test_origin_form_in_real_mode_says_how_to_use_it(front: Front) -> None:
    """A request sent to the front as if it were a server gets a 400 naming HTTPS_PROXY."""
    fp = await front(None)
    async with aiohttp.ClientSession() as s, s.get(fp.url + "/v1/models") as r:
        assert r.status == 400
        assert "HTTPS_PROXY" in (await r.json())["error"]["message"]


async def test_token_is_required_when_set(front: Front, mock: MockServer) -> None:
    """With a token, CONNECT and absolute-form requests without it get 407; with it they pass."""
    fp = await front(mock.url, token="s3cret")
    reader, writer = await asyncio.open_connection("127.0.0.1", int(fp.url.rsplit(":", 1)[1]))
    writer.write(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 407 ")
    writer.close()
    async with aiohttp.ClientSession() as s:
        async with s.get("http://api.openai.com/v1/models", proxy=fp.url) as r:
            assert r.status == 407
        async with s.get("http://api.openai.com/v1/models", proxy=fp.proxy_url) as r:
            assert r.status == 200


async def test_non_loopback_needs_a_token(front: Front, mock: MockServer) -> None:
    """Listening beyond loopback without a token is refused before binding."""
    proxy = ChaosProxy(mock.url, load_profile("clean"))
    fp = InterceptProxy(proxy, CertificateAuthority.__new__(CertificateAuthority), upstream=None)
    with pytest.raises(InterceptError, match="set --token"):
        await fp.start("0.0.0.0", 0)


async def test_client_that_distrusts_the_ca_is_refused_and_the_proxy_serves_on(
    front: Front, ca: CertificateAuthority, mock: MockServer
) -> None:
    """A client without the CA fails its handshake; the next, trusting client is served."""
    fp = await front(mock.url)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get("https://api.openai.com/v1/models", proxy=fp.url)
        client = ssl.create_default_context(cafile=str(ca.cert_path))
        async with s.get("https://api.openai.com/v1/models", proxy=fp.url, ssl=client) as r:
            assert r.status == 200


async def test_bad_connect_targets_get_400(front: Front, mock: MockServer) -> None:
    """A CONNECT without a port, or a broken request line, is answered 400 and closed."""
    fp = await front(mock.url)
    port = int(fp.url.rsplit(":", 1)[1])
    for head in (b"CONNECT api.openai.com HTTP/1.1\r\n\r\n", b"NONSENSE\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
        writer.close()


def test_host_lists() -> None:
    """--intercept-hosts lists split on commas; a profile's match.host globs are collected."""
    assert hosts_of(["a.com, *.B.com", "c.io"]) == ("a.com", "*.b.com", "c.io")
    profile = make_profile(
        [{"type": "http_error", "status": 503, "match": {"host": "API.Mistral.ai"}}]
    )
    assert profile_hosts(profile) == ("api.mistral.ai",)


async def test_chromium_page_calls_the_api_host_through_the_front(
    front: Front, ca: CertificateAuthority, mock: MockServer
) -> None:
    """Chromium with --proxy-server and the CA's SPKI pin (no other trust) opens
    https://api.openai.com and its script streams a chat completion from the mock, with a
    profile's fault acting on it; no name resolves beyond loopback."""
    from chaosstream.clients.browser import PageDriver

    profile = make_profile(
        [{"type": "disconnect", "after_events": 4, "mode": "close", "match": {"stream": True}}]
    )
    fp = await front(mock.url, profile)
    args = [
        f"--proxy-server={fp.url}",
        f"--ignore-certificate-errors-spki-list={ca.spki_pin()}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        "--no-sandbox",
        "--disable-background-networking",
    ]
    # The browser `check --browser` picks (Playwright's own build, else the system's).
    async with PageDriver(extra_args=args) as driver:
        page = await driver.browser.new_page()
        resp = await page.goto("https://api.openai.com/v1/models")
        assert resp is not None and resp.status == 200
        body = await page.evaluate(
            """async () => {
              const r = await fetch('/v1/chat/completions', {
                method: 'POST', headers: {'content-type': 'application/json'},
                body: JSON.stringify({model: 'm', stream: true,
                                      messages: [{role: 'user', content: 'hi'}]})});
              return await r.text();
            }"""
        )
    assert body.count("data: ") == 4 and "[DONE]" not in body
    chat = [e for e in fp.proxy.recorder.exchanges if e.path == "/v1/chat/completions"]
    assert [e.outcome for e in chat] == ["fault"]


NODE_DIR = Path(__file__).resolve().parents[1] / "node"


async def test_node_openai_sdk_through_the_front(
    front: Front, ca: CertificateAuthority, mock: MockServer
) -> None:
    """openai-node with its default base URL, HTTPS_PROXY and NODE_EXTRA_CA_CERTS only, streams
    the mock's answer for api.openai.com: the same text as in reverse mode."""
    fp = await front(mock.url)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_BASE_URL", "_PROXY", "_proxy")) and k != "NODE_EXTRA_CA_CERTS"
    }
    env.update(
        HTTPS_PROXY=fp.proxy_url,
        NODE_EXTRA_CA_CERTS=str(ca.cert_path),
        OPENAI_API_KEY="sk-test",
    )
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "intercept_chat.mjs"),
        env=env,
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(err.decode().strip().splitlines()[-1])
    assert result["baseURL"] == "https://api.openai.com/v1" and result["error"] is None
    [ex] = fp.proxy.recorder.exchanges
    assert (ex.path, ex.status, ex.outcome) == ("/v1/chat/completions", 200, "complete")
    body = json.loads(ex.request_body)
    assert out.decode() == result["text"] == await reverse_text(mock, ex.path, body)


async def test_match_host_in_reverse_mode_is_the_upstreams(mock: MockServer) -> None:
    """Without the front, match.host sees the upstream's host: 127.0.0.1 matches, a provider
    hostname does not."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    statuses = []
    for host in ("127.0.0.1", "api.openai.com"):
        profile = make_profile([{"type": "http_error", "status": 503, "match": {"host": host}}])
        proxy = ChaosProxy(mock.url, profile)
        await proxy.start()
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.post(proxy.url + "/v1/chat/completions", json=body) as r,
            ):
                await r.read()
                statuses.append(r.status)
        finally:
            await proxy.close()
    assert statuses == [503, 200]
