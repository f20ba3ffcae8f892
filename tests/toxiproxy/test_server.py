"""The Toxiproxy registry (ToxiproxyServer/Proxy) used directly: real listeners on loopback,
Toxiproxy's error statuses and texts, toxic bookkeeping, populate/reset rules, seeds, close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chaosstream.toxiproxy import ApiError, ToxiproxyServer
from tests.conftest import tcp_echo
from tests.toxiproxy.conftest import Upstreams, close_writer, open_link, tox_server


@pytest.fixture
async def echo(upstreams: Upstreams) -> str:
    """A TCP echo upstream on loopback."""
    return await upstreams.start(tcp_echo)


@pytest.fixture
async def server() -> AsyncIterator[ToxiproxyServer]:
    """A registry with a fixed seed; every listener closed after the test."""
    registry = ToxiproxyServer(seed=5)
    yield registry
    await registry.close()


def _port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


async def _echoes(port: int, timeout: float = 2.0) -> bool:
    """Whether one byte makes it through the listener on ``port`` and back."""
    try:
        reader, writer = await open_link(port)
    except ConnectionRefusedError:
        return False
    try:
        writer.write(b"x")
        return await asyncio.wait_for(reader.readexactly(1), timeout) == b"x"
    finally:
        await close_writer(writer)


async def test_create_listens_on_a_real_port_and_names_are_unique(
    server: ToxiproxyServer, echo: str
) -> None:
    """create starts a listener (port 0 becomes the real one, localhost is 127.0.0.1); a taken
    name is 409, an unknown one 404, and a disabled proxy does not listen."""
    proxy = await server.create("a", "localhost:0", echo, enabled=True)
    assert proxy.enabled is True and proxy.listen.startswith("127.0.0.1:")
    assert _port(proxy.listen) != 0 and await _echoes(_port(proxy.listen))
    assert proxy.to_json() == {
        "name": "a",
        "listen": proxy.listen,
        "upstream": echo,
        "enabled": True,
        "toxics": [],
    }
    with pytest.raises(ApiError) as taken:
        await server.create("a", "127.0.0.1:0", echo, enabled=True)
    assert (taken.value.status, taken.value.to_json()) == (
        409,
        {"error": "proxy already exists", "status": 409},
    )
    with pytest.raises(ApiError) as missing:
        server.get("zzz")
    assert (missing.value.status, missing.value.message) == (404, "proxy not found")
    idle = await server.create("b", "127.0.0.1:0", echo, enabled=False)
    assert idle.enabled is False and idle.listen == "127.0.0.1:0"
    assert sorted(server.proxies) == ["a", "b"]


async def test_a_bad_listen_address_is_refused_and_not_registered(
    server: ToxiproxyServer, echo: str
) -> None:
    """A listen address without a port is 400 naming it; the proxy is not kept."""
    with pytest.raises(ApiError) as bad:
        await server.create("c", "nowhere", echo, enabled=True)
    assert bad.value.status == 400
    assert bad.value.message == "listen nowhere: address nowhere: missing or bad port"
    assert "c" not in server.proxies


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ([], 400, "bad request body: expected a JSON object"),
        ({"type": "latency", "stream": "sideways"}, 400, "stream was invalid"),
        ({"type": "latency", "stream": 7}, 400, "stream was invalid"),
        ({"type": "bogus"}, 400, "invalid toxic type"),
        ({"type": "latency", "name": 5}, 400, "bad request body: name must be a string"),
        ({"type": "latency", "toxicity": 1.5}, 400, "toxicity must be a number from 0 to 1"),
        ({"type": "latency", "toxicity": True}, 400, "toxicity must be a number from 0 to 1"),
        ({"type": "latency", "attributes": [1]}, 400, "attributes must be a JSON object"),
        ({"type": "latency", "attributes": {"latency": -1}}, 400, "attribute latency must be"),
        ({"type": "latency", "name": "first"}, 409, "toxic already exists"),
    ],
)
async def test_add_toxic_refuses_bad_bodies_with_toxiproxys_words(
    server: ToxiproxyServer, echo: str, body: Any, status: int, message: str
) -> None:
    """Each malformed toxic body gets Toxiproxy's status and text, and adds nothing."""
    proxy = await server.create("p", "127.0.0.1:0", echo, enabled=True)
    proxy.add_toxic({"type": "latency", "name": "first"})
    with pytest.raises(ApiError) as refused:
        proxy.add_toxic(body)
    assert refused.value.status == status
    assert message in refused.value.message
    assert [t["name"] for t in proxy.toxics_json()] == ["first"]


async def test_toxics_are_listed_upstream_first_in_the_order_added(
    server: ToxiproxyServer, echo: str
) -> None:
    """Default names are type_stream, the stream is case-blind, upstream toxics list first."""
    proxy = await server.create("p", "127.0.0.1:0", echo, enabled=True)
    proxy.add_toxic({"type": "latency"})
    proxy.add_toxic({"type": "slow_close", "stream": "UPSTREAM", "attributes": {"delay": 5}})
    proxy.add_toxic({"type": "bandwidth", "name": "thin", "attributes": {"rate": 10}})
    proxy.add_toxic({"type": "timeout", "stream": "upstream", "toxicity": 0.25})
    listed = [(t["name"], t["stream"], t["toxicity"]) for t in proxy.toxics_json()]
    assert listed == [
        ("slow_close_upstream", "upstream", 1.0),
        ("timeout_upstream", "upstream", 0.25),
        ("latency_downstream", "downstream", 1.0),
        ("thin", "downstream", 1.0),
    ]
    assert proxy.to_json()["toxics"] == proxy.toxics_json()


async def test_update_merges_attributes_and_remove_forgets(
    server: ToxiproxyServer, echo: str
) -> None:
    """update keeps what it is not given and bumps the revision; remove and reset empty the
    list; a toxic that is gone is 404."""
    proxy = await server.create("p", "127.0.0.1:0", echo, enabled=True)
    entry = proxy.add_toxic({"type": "latency", "toxicity": 0.5, "attributes": {"latency": 10}})
    updated = proxy.update_toxic("latency_downstream", {"attributes": {"jitter": 4}})
    assert updated is entry and entry.revision == 1
    assert entry.to_json()["attributes"] == {"latency": 10, "jitter": 4}
    assert entry.toxicity == 0.5
    proxy.update_toxic("latency_downstream", {"toxicity": 1})
    assert (entry.toxicity, entry.revision) == (1.0, 2)
    with pytest.raises(ApiError, match="bad request body"):
        proxy.update_toxic("latency_downstream", "latency")
    proxy.remove_toxic("latency_downstream")
    for name in ("latency_downstream", "never"):
        with pytest.raises(ApiError) as gone:
            proxy.find_toxic(name)
        assert (gone.value.status, gone.value.message) == (404, "toxic not found")
    proxy.add_toxic({"type": "latency"})
    proxy.add_toxic({"type": "timeout", "stream": "upstream"})
    proxy.reset_toxics()
    assert proxy.toxics_json() == []


async def test_removing_a_toxic_releases_what_it_held_on_a_live_link(
    server: ToxiproxyServer, echo: str
) -> None:
    """A toxic added to the registry acts on a connection already open; removing it lets the
    held bytes go on at once."""
    proxy = await server.create("p", "127.0.0.1:0", echo, enabled=True)
    reader, writer = await open_link(_port(proxy.listen))
    writer.write(b"a")
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"a"
    proxy.add_toxic({"type": "latency", "attributes": {"latency": 10_000}})
    writer.write(b"b")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.readexactly(1), 0.3)
    start = time.monotonic()
    proxy.remove_toxic("latency_downstream")
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"b"
    assert time.monotonic() - start < 1.0
    await close_writer(writer)


async def test_populate_keeps_an_identical_proxy_and_replaces_one_that_differs(
    server: ToxiproxyServer, echo: str, upstreams: Upstreams
) -> None:
    """add_or_replace returns the same live proxy for the same address and upstream; another
    upstream replaces it (the old listener closes)."""
    first = await server.create("p", "127.0.0.1:0", echo, enabled=True)
    first.add_toxic({"type": "latency"})
    same = await server.add_or_replace("p", first.listen, echo, enabled=True)
    assert same is first and same.toxics_json() != []
    other_echo = await upstreams.start(tcp_echo)
    replaced = await server.add_or_replace("p", "127.0.0.1:0", other_echo, enabled=True)
    assert replaced is not first and server.proxies["p"] is replaced
    assert replaced.upstream == other_echo and replaced.toxics_json() == []
    assert first.enabled is False and not await _echoes(_port(first.listen))
    assert await _echoes(_port(replaced.listen))


async def test_reset_enables_every_proxy_and_clears_its_toxics(
    server: ToxiproxyServer, echo: str
) -> None:
    """reset starts disabled proxies and removes every toxic; remove forgets a proxy."""
    on = await server.create("on", "127.0.0.1:0", echo, enabled=True)
    off = await server.create("off", "127.0.0.1:0", echo, enabled=False)
    on.add_toxic({"type": "timeout", "attributes": {"timeout": 0}})
    off.add_toxic({"type": "latency", "stream": "upstream"})
    await server.reset()
    assert on.enabled and off.enabled
    assert on.toxics_json() == off.toxics_json() == []
    assert await _echoes(_port(on.listen)) and await _echoes(_port(off.listen))
    await server.remove("off")
    assert list(server.proxies) == ["on"]
    with pytest.raises(ApiError, match="proxy not found"):
        await server.remove("off")


def test_the_seed_fixes_every_connections_draws() -> None:
    """The same seed gives the same per-connection seeds in accept order; another seed does not."""
    a, b, c = ToxiproxyServer(seed=9), ToxiproxyServer(seed=9), ToxiproxyServer(seed=10)
    first = [a.connection_seed() for _ in range(5)]
    assert first == [b.connection_seed() for _ in range(5)]
    assert first != [c.connection_seed() for _ in range(5)]
    assert len(set(first)) == 5


async def test_close_leaves_nothing_open(upstreams: Upstreams) -> None:
    """Closing the server ends live links: the client sees EOF and no link remains."""
    async for tox in tox_server(seed=None):
        port = await tox.proxy(await upstreams.start(tcp_echo))
        await tox.toxic({"type": "latency", "attributes": {"latency": 10_000}})
        reader, writer = await open_link(port)
        writer.write(b"x")
        await asyncio.sleep(0.05)
        proxy = tox.running.server.proxies["p"]
        assert len(proxy.connections) == 1
        await tox.running.server.close()
        assert proxy.connections == set() and proxy.enabled is False
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()
