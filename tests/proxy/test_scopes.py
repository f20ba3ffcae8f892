"""Scopes: many tests through one proxy, each with its own profile, seed, counters and logs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chaosstream.faults import FaultEvent
from chaosstream.mock import MockServer
from chaosstream.proxy import scopes
from chaosstream.proxy.scopes import ScopeError, check_scope_name, name_seed, split_scope
from chaosstream.proxy.server import ChaosProxy
from tests.conftest import ProxyFactory, make_profile

CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
# Faults that depend on the request sequence and the seed at once.
SEQUENCED = [
    {"type": "http_error", "status": 503, "every": 3},
    {"type": "disconnect", "after_events": 2, "mode": "close", "probability": 0.5},
    {"type": "stream_error", "after_events": 1, "kind": "overloaded", "probability": 0.3},
]


def test_split_scope_reads_the_prefix_and_strips_it() -> None:
    """``/~/<scope>/...`` names the scope and goes upstream without the prefix, query kept."""
    assert split_scope("/~/t1/v1/chat/completions?a=1", None) == (
        "t1",
        None,
        "/v1/chat/completions?a=1",
    )
    assert split_scope("/~/t1", None) == ("t1", None, "/")
    assert split_scope("/~/t1?x=2", None) == ("t1", None, "/?x=2")
    assert split_scope("/v1/models", None) == (None, None, "/v1/models")


def test_split_scope_reads_a_builtin_profile_after_the_scope() -> None:
    """``/~/<scope>/<built-in>/...`` names the scope's profile; other segments are the path."""
    assert split_scope("/~/a/midstream-reset/v1/messages", None) == (
        "a",
        "midstream-reset",
        "/v1/messages",
    )
    assert split_scope("/~/a/clean", None) == ("a", "clean", "/")
    assert split_scope("/~/a/no-such-profile/v1", None) == ("a", None, "/no-such-profile/v1")


def test_split_scope_takes_the_header_and_refuses_a_mismatch() -> None:
    """The header names a scope; a header and a prefix naming different scopes is an error."""
    assert split_scope("/v1/x", "t2") == ("t2", None, "/v1/x")
    assert split_scope("/~/t2/v1/x", "t2") == ("t2", None, "/v1/x")
    with pytest.raises(ScopeError, match="differs from the path's scope"):
        split_scope("/~/t1/v1/x", "t2")


@pytest.mark.parametrize("bad", ["", "..", "-a", "a b", "a/b", "x" * 65, "é", "a%2F"])
def test_bad_scope_names_are_refused_with_the_rule(bad: str) -> None:
    """Names outside 1-64 of ``A-Za-z0-9._-`` (not starting with a symbol) are refused."""
    with pytest.raises(ScopeError, match="1 to 64 of"):
        check_scope_name(bad)
    assert check_scope_name("gw0-test_x.1") == "gw0-test_x.1"


def test_name_seed_is_stable() -> None:
    """A scope given no seed gets one from its name: the same in every process."""
    assert name_seed("a") == name_seed("a") == 3904355907 & 0x7FFFFFFF
    assert name_seed("a") != name_seed("b")


def test_limits_page_states_the_scope_caps() -> None:
    """docs/limits.md states the scope cap, the name rule and a scope's record budget."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "limits.md").read_text()
    assert scopes.MAX_SCOPES == 1024 and "| 1,024 | `--max-scopes`" in page
    assert scopes.SCOPE_KEEP == 200 and scopes.SCOPE_RECORD_BUDGET == 1024 * 1024
    assert "| 200 exchanges, 1 MiB |" in page
    assert "1 to 64 characters" in page


@pytest.fixture
async def echo_upstream() -> AsyncIterator[str]:
    """An upstream that answers with the path and headers it was sent."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {"path": request.raw_path, "headers": {k: v for k, v in request.headers.items()}}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_prefix_and_header_never_reach_upstream(
    echo_upstream: str, proxy_factory: ProxyFactory
) -> None:
    """Upstream sees the path without ``/~/<scope>/`` and no X-Chaosstream-Scope header."""
    proxy = await proxy_factory(echo_upstream)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{proxy.url}/~/t1/clean/v1/models?q=1") as r:
            seen = await r.json()
        assert seen["path"] == "/v1/models?q=1"
        async with s.get(f"{proxy.url}/v1/models", headers={"X-Chaosstream-Scope": "t2"}) as r:
            seen = await r.json()
        assert seen["path"] == "/v1/models"
        assert "x-chaosstream-scope" not in {k.lower() for k in seen["headers"]}
        async with s.get(f"{proxy.url}/~/bad%20name/v1/models") as r:
            assert r.status == 400
            assert "is not a scope name" in (await r.json())["error"]["message"]
    assert sorted(proxy.scopes.names()) == ["t1", "t2"]
    assert [ex.path for ex in proxy.scopes.get("t1").recorder.exchanges] == ["/v1/models"]
    assert list(proxy.recorder.exchanges) == []  # the unscoped record saw none of it


async def _drive(s: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    try:
        async with s.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers) as r:
            await r.read()
    except aiohttp.ClientError:
        pass  # a cut stream: the fault log says what happened


def _positions(log: list[FaultEvent]) -> list[tuple[int, str, int, str, str]]:
    return [(e.exchange, e.type, e.index, e.action, e.trigger) for e in log]


async def test_scopes_interleaved_see_what_each_sees_alone(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """Two scopes interleaved at random get the same fault logs as each run alone."""
    profile = make_profile(SEQUENCED)
    n = 12
    alone: dict[str, list[Any]] = {}
    for name in ("a", "b"):
        proxy = await proxy_factory(mock.url, profile)
        async with aiohttp.ClientSession() as s:
            for _ in range(n):
                await _drive(s, f"{proxy.url}/~/{name}", {})
        alone[name] = _positions(proxy.scopes.get(name).fault_log)
    assert alone["a"] and alone["a"] != alone["b"]  # different names, different seeds

    shared = await proxy_factory(mock.url, profile)
    order = ["a"] * n + ["b"] * n
    random.Random(5).shuffle(order)
    async with aiohttp.ClientSession() as s:
        # Also concurrently: two at a time, one per scope where the order allows.
        i = 0
        while i < len(order):
            batch = order[i : i + 2] if len(set(order[i : i + 2])) == 2 else order[i : i + 1]
            await asyncio.gather(
                *(_drive(s, shared.url, {"X-Chaosstream-Scope": name}) for name in batch)
            )
            i += len(batch)
    for name in ("a", "b"):
        assert _positions(shared.scopes.get(name).fault_log) == alone[name]
    assert shared.fault_log == [] and list(shared.recorder.exchanges) == []


async def test_unscoped_requests_keep_their_own_counters(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """Scoped traffic does not move the unscoped proxy's request counters."""
    proxy = await proxy_factory(
        mock.url, make_profile([{"type": "http_error", "status": 429, "requests": [2]}])
    )
    async with aiohttp.ClientSession() as s:
        statuses = []
        for path in ("/v1", "/~/x/v1", "/~/x/v1", "/~/y/v1", "/v1", "/v1"):
            async with s.post(f"{proxy.url}{path}/chat/completions", json=CHAT) as r:
                await r.read()
                statuses.append(r.status)
    # root: 1st ok, 2nd 429, 3rd ok; scope x: 2nd 429; scope y: 1st ok.
    assert statuses == [200, 200, 429, 200, 429, 200]


async def test_a_profile_in_the_path_applies_to_that_scope_only(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """``/~/s/rate-limited-429/...`` refuses in scope s; the clean proxy and scope t pass."""
    proxy = await proxy_factory(mock.url, "clean")
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{proxy.url}/~/s/rate-limited-429/v1/chat/completions", json=CHAT) as r:
            assert r.status == 429
        async with s.post(f"{proxy.url}/~/t/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        async with s.post(f"{proxy.url}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
    scope = proxy.scopes.get("s")
    assert scope.profile.name == "rate-limited-429" and proxy.profile.name == "clean"
    assert [e.type for e in scope.fault_log] == ["http_error"]


async def test_scope_seed_comes_from_the_proxy_seed_or_the_name(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A new scope takes the proxy's --seed when given, else a seed from its name."""
    seeded = await proxy_factory(mock.url, "clean", seed=42)
    unseeded = await proxy_factory(mock.url, "clean")
    assert seeded.scopes.use("z").seed == 42
    assert unseeded.scopes.use("z").seed == name_seed("z")
    # A PATCH on one scope's faults stays there: each scope has a private profile copy.
    a = unseeded.scopes.use("p", "midstream-reset")
    b = unseeded.scopes.use("q", "midstream-reset")
    a.profile.faults[0].enabled = False
    assert b.profile.faults[0].enabled is True


async def test_scopes_are_capped_least_recently_used_idle_first(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """Past the cap the least recently used idle scope goes; all busy means 503."""
    proxy: ChaosProxy = await proxy_factory(mock.url, "clean", max_scopes=2)
    async with aiohttp.ClientSession() as s:
        for name in ("a", "b", "a", "c"):
            async with s.get(f"{proxy.url}/~/{name}/v1/models") as r:
                await r.read()
        assert proxy.scopes.names() == ["a", "c"] and proxy.scopes.evicted == 1
        # Two stalled streams keep both scopes busy: a third scope cannot be made.
        stall = make_profile([{"type": "disconnect", "after_events": 1, "mode": "stall"}])
        proxy.scopes.get("a").set_profile(stall)
        proxy.scopes.get("c").set_profile(stall)
        streams = [
            asyncio.ensure_future(s.post(f"{proxy.url}/~/{n}/v1/chat/completions", json=CHAT))
            for n in ("a", "c")
        ]
        for _ in range(200):
            if not proxy.scopes.get("a").idle and not proxy.scopes.get("c").idle:
                break
            await asyncio.sleep(0.01)
        async with s.get(f"{proxy.url}/~/d/v1/models") as r:
            assert r.status == 503
            assert "all 2 scopes have exchanges open" in (await r.json())["error"]["message"]
        for task in streams:
            task.cancel()
        for done in await asyncio.gather(*streams, return_exceptions=True):
            if isinstance(done, aiohttp.ClientResponse):
                done.close()  # a stalled stream's response is ours to release


async def test_websocket_through_a_scope(mock: MockServer, proxy_factory: ProxyFactory) -> None:
    """A WebSocket under ``/~/<scope>/ws`` reaches the mock's /ws and records in the scope."""
    proxy = await proxy_factory(mock.url, "clean")
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{proxy.url}/~/w/ws") as ws:
        await ws.send_str("hello")
        got = await asyncio.wait_for(ws.receive(), 5)
        assert got.type == aiohttp.WSMsgType.TEXT
    for _ in range(100):
        if proxy.scopes.get("w").recorder.exchanges:
            break
        await asyncio.sleep(0.02)
    assert [ex.path for ex in proxy.scopes.get("w").recorder.exchanges] == ["/ws"]
