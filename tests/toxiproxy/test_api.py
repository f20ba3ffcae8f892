"""The Toxiproxy HTTP API: toxiproxy-python unchanged, plus raw status codes and bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaosstream._version import __version__
from chaosstream.toxiproxy import RunningServer
from tests.conftest import tcp_echo


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    server = await asyncio.start_server(tcp_echo, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


@pytest.fixture
async def client(tp: RunningServer) -> toxiproxy.Toxiproxy:
    c = toxiproxy.Toxiproxy()
    c.update_api_consumer("127.0.0.1", tp.port)
    return c


@pytest.fixture
async def http(tp: RunningServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=tp.url) as session:
        yield session


def _port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


async def _round_trip(port: int) -> float:
    """Seconds for one byte to go through the proxy to the echo server and back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        start = time.monotonic()
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
        return time.monotonic() - start
    finally:
        writer.close()
        await writer.wait_closed()


async def test_python_client_creates_lists_and_measures_latency(
    client: toxiproxy.Toxiproxy, echo: str
) -> None:
    """toxiproxy-python creates a proxy, sees it listed, and its latency toxic is real."""
    proxy = await asyncio.to_thread(client.create, upstream=echo, name="echo")
    assert proxy.enabled is True and proxy.listen.startswith("127.0.0.1:")
    assert _port(proxy.listen) != 0
    listed = await asyncio.to_thread(client.proxies)
    assert set(listed) == {"echo"} and listed["echo"].upstream == echo

    base = await _round_trip(_port(proxy.listen))
    await asyncio.to_thread(
        proxy.add_toxic, type="latency", attributes={"latency": 200, "jitter": 0}
    )
    toxics = await asyncio.to_thread(proxy.toxics)
    assert list(toxics) == ["latency_downstream"]
    assert toxics["latency_downstream"].attributes == {"latency": 200, "jitter": 0}
    slow = await _round_trip(_port(proxy.listen))
    assert 0.19 <= slow <= 0.9, slow

    await asyncio.to_thread(proxy.destroy_toxic, "latency_downstream")
    assert await asyncio.to_thread(proxy.toxics) == {}
    fast = await _round_trip(_port(proxy.listen))
    assert fast < 0.15 + base, (fast, base)


async def test_python_client_disable_refuses_and_enable_restores(
    client: toxiproxy.Toxiproxy, echo: str
) -> None:
    """Disabling closes the listener and live links; enabling listens on the same port."""
    proxy = await asyncio.to_thread(client.create, upstream=echo, name="echo")
    port = _port(proxy.listen)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hi")
    assert await reader.readexactly(2) == b"hi"

    await asyncio.to_thread(proxy.disable)
    assert (await asyncio.to_thread(client.get_proxy, "echo")).enabled is False
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        writer.write(b"more")
        await asyncio.wait_for(reader.readexactly(4), 2)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)

    await asyncio.to_thread(proxy.enable)
    assert await _round_trip(port) < 1


async def test_python_client_reset_populate_version_and_errors(
    client: toxiproxy.Toxiproxy, echo: str
) -> None:
    """reset re-enables and clears toxics; populate, version and client errors work."""
    proxy = await asyncio.to_thread(client.create, upstream=echo, name="a", enabled=False)
    assert proxy.enabled is False
    with pytest.raises(ProxyExists):
        await asyncio.to_thread(client.create, upstream=echo, name="a")
    await asyncio.to_thread(proxy.add_toxic, type="timeout", stream="upstream")
    with pytest.raises(InvalidToxic):
        await asyncio.to_thread(proxy.add_toxic, type="nope")
    with pytest.raises(NotFound):
        await asyncio.to_thread(proxy.destroy_toxic, "missing")

    assert await asyncio.to_thread(client.reset) is True
    after = await asyncio.to_thread(client.get_proxy, "a")
    assert after.enabled is True and await asyncio.to_thread(after.toxics) == {}

    made = await asyncio.to_thread(
        client.populate, [{"name": "b", "upstream": echo, "listen": "127.0.0.1:0"}]
    )
    assert [p.name for p in made] == ["b"]
    assert await _round_trip(_port(made[0].listen)) < 1
    version = await asyncio.to_thread(client.version)
    assert __version__.encode() in version
    await asyncio.to_thread(client.destroy_all)
    assert await asyncio.to_thread(client.proxies) == {}


async def test_raw_proxy_lifecycle_codes(http: aiohttp.ClientSession, echo: str) -> None:
    """Create 201, duplicate 409, missing fields 400, unknown 404, delete 204."""
    body = {"name": "p", "upstream": echo, "listen": "localhost:0"}
    async with http.post("/proxies", json=body) as r:
        assert r.status == 201
        made = await r.json()
    assert made["name"] == "p" and made["upstream"] == echo and made["enabled"] is True
    assert made["listen"].startswith("127.0.0.1:") and made["toxics"] == []
    async with http.post("/proxies", json=body) as r:
        assert (r.status, await r.json()) == (
            409,
            {"error": "proxy already exists", "status": 409},
        )
    async with http.post("/proxies", json={"upstream": echo}) as r:
        assert (r.status, await r.json()) == (
            400,
            {"error": "missing required field: name", "status": 400},
        )
    async with http.post("/proxies", json={"name": "q"}) as r:
        assert (await r.json())["error"] == "missing required field: upstream"
    async with http.post("/proxies", data=b"{nope") as r:
        err = await r.json()
        assert r.status == 400 and err["error"].startswith("bad request body: ")
    async with http.get("/proxies/zzz") as r:
        assert (r.status, await r.json()) == (404, {"error": "proxy not found", "status": 404})
    async with http.get("/proxies") as r:
        assert list(await r.json()) == ["p"]
    async with http.patch("/proxies/p", json={"enabled": False}) as r:
        assert r.status == 200 and (await r.json())["enabled"] is False
    async with http.delete("/proxies/p") as r:
        assert r.status == 204
    async with http.delete("/proxies/p") as r:
        assert r.status == 404


async def test_raw_toxic_codes_and_shapes(http: aiohttp.ClientSession, echo: str) -> None:
    """Toxic create/show/update/delete answer with Toxiproxy's shapes and codes."""
    async with http.post("/proxies", json={"name": "p", "upstream": echo}) as r:
        assert r.status == 201
    toxic = {"type": "latency", "attributes": {"latency": 10}}
    async with http.post("/proxies/p/toxics", json=toxic) as r:
        assert r.status == 200
        assert await r.json() == {
            "attributes": {"latency": 10, "jitter": 0},
            "name": "latency_downstream",
            "type": "latency",
            "stream": "downstream",
            "toxicity": 1.0,
        }
    async with http.post("/proxies/p/toxics", json=toxic) as r:
        assert (r.status, await r.json()) == (
            409,
            {"error": "toxic already exists", "status": 409},
        )
    async with http.post("/proxies/p/toxics", json={"type": "bogus"}) as r:
        assert (r.status, await r.json()) == (400, {"error": "invalid toxic type", "status": 400})
    async with http.post("/proxies/p/toxics", json={"type": "latency", "stream": "sideways"}) as r:
        assert r.status == 400 and "stream was invalid" in (await r.json())["error"]
    bad = {"type": "latency", "name": "b", "attributes": {"latency": "slow"}}
    async with http.post("/proxies/p/toxics", json=bad) as r:
        assert r.status == 400 and "latency" in (await r.json())["error"]
    async with http.patch(
        "/proxies/p/toxics/latency_downstream", json={"attributes": {"jitter": 5}}
    ) as r:
        got = await r.json()
        assert got["attributes"] == {"latency": 10, "jitter": 5} and got["toxicity"] == 1.0
    async with http.get("/proxies/p/toxics/latency_downstream") as r:
        assert (await r.json())["attributes"]["jitter"] == 5
    async with http.get("/proxies/p/toxics/none") as r:
        assert (r.status, await r.json()) == (404, {"error": "toxic not found", "status": 404})
    async with http.get("/proxies/p/toxics") as r:
        assert [t["name"] for t in await r.json()] == ["latency_downstream"]
    async with http.delete("/proxies/p/toxics/latency_downstream") as r:
        assert r.status == 204
    async with http.get("/proxies/p") as r:
        assert (await r.json())["toxics"] == []


async def test_raw_populate_reset_version(http: aiohttp.ClientSession, echo: str) -> None:
    """populate creates or keeps proxies (201), checks all first; reset answers 204."""
    items = [
        {"name": "one", "upstream": echo, "listen": "127.0.0.1:0"},
        {"name": "two", "upstream": echo, "enabled": False},
    ]
    async with http.post("/populate", json=items) as r:
        assert r.status == 201
        made = (await r.json())["proxies"]
    assert [(p["name"], p["enabled"]) for p in made] == [("one", True), ("two", False)]
    same = [{"name": "one", "upstream": echo, "listen": made[0]["listen"]}]
    async with http.post("/populate", json=same) as r:
        assert (await r.json())["proxies"][0]["listen"] == made[0]["listen"]
    async with http.post("/populate", json=[{"name": "x", "upstream": echo}, {"name": "y"}]) as r:
        assert (r.status, (await r.json())["error"]) == (
            400,
            "missing required field: upstream at proxy 2",
        )
    async with http.get("/proxies") as r:
        assert sorted(await r.json()) == ["one", "two"]
    async with http.post("/reset") as r:
        assert r.status == 204
    async with http.get("/proxies/two") as r:
        assert (await r.json())["enabled"] is True
    async with http.get("/version") as r:
        assert r.status == 200 and await r.json() == {"version": __version__}


async def test_browsers_are_refused(http: aiohttp.ClientSession) -> None:
    """Like Toxiproxy, a browser user agent gets 403 (no cross-site control)."""
    async with http.get("/proxies", headers={"User-Agent": "Mozilla/5.0"}) as r:
        assert r.status == 403


async def test_raw_update_moves_listener_and_bind_conflict(
    http: aiohttp.ClientSession, echo: str
) -> None:
    """PATCH with a new listen address moves the listener; a taken port answers 500."""
    async with http.post("/proxies", json={"name": "a", "upstream": echo}) as r:
        first = await r.json()
    async with http.post("/proxies", json={"name": "b", "upstream": echo}) as r:
        second = await r.json()
    async with http.post("/proxies/b", json={"listen": first["listen"]}) as r:
        err = await r.json()
        assert r.status == 500 and err["status"] == 500 and "listen" in err["error"]
    async with http.post("/proxies", json={"name": "c", "upstream": echo}) as r:
        free = (await r.json())["listen"]
    async with http.delete("/proxies/c") as r:
        assert r.status == 204
    async with http.patch("/proxies/a", json={"listen": free}) as r:
        moved = await r.json()
        assert r.status == 200 and moved["listen"] == free and moved["enabled"] is True
    assert await _round_trip(_port(free)) < 1
    assert second["listen"] != free
