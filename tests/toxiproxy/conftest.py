"""Shared plumbing of the Toxiproxy tests: small TCP upstreams and a server driven over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from chaosstream.toxiproxy import RunningServer, start_toxiproxy_server

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def pattern(size: int) -> bytes:
    """``size`` bytes of a fixed pattern (what :func:`blob` sends)."""
    return bytes(i % 251 for i in range(size))


def blob(size: int) -> Handler:
    """An upstream that sends ``size`` bytes of a pattern, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(pattern(size))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handle


class Upstreams:
    """Starts small TCP servers on loopback and closes them at the end."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []

    async def start(self, handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        self.servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    ups = Upstreams()
    yield ups
    for server in ups.servers:
        server.close()
        await server.wait_closed()


class Tox:
    """A running chaosstream Toxiproxy server and an HTTP session to drive it."""

    def __init__(self, running: RunningServer, http: aiohttp.ClientSession) -> None:
        self.running = running
        self.http = http

    async def proxy(self, upstream: str, name: str = "p") -> int:
        async with self.http.post("/proxies", json={"name": name, "upstream": upstream}) as r:
            assert r.status == 201, await r.text()
            return int((await r.json())["listen"].rpartition(":")[2])

    async def toxic(self, body: dict[str, object], proxy: str = "p") -> None:
        async with self.http.post(f"/proxies/{proxy}/toxics", json=body) as r:
            assert r.status == 200, await r.text()

    async def update(self, name: str, body: dict[str, object], proxy: str = "p") -> None:
        async with self.http.patch(f"/proxies/{proxy}/toxics/{name}", json=body) as r:
            assert r.status == 200, await r.text()

    async def remove(self, name: str, proxy: str = "p") -> None:
        async with self.http.delete(f"/proxies/{proxy}/toxics/{name}") as r:
            assert r.status == 204, await r.text()


async def tox_server(seed: int | None) -> AsyncIterator[Tox]:
    """A fresh server with this seed, closed when the iteration ends."""
    running = await start_toxiproxy_server(seed=seed)
    async with aiohttp.ClientSession(base_url=running.url) as http:
        yield Tox(running, http)
    await running.close()


@pytest.fixture
async def tox() -> AsyncIterator[Tox]:
    async for t in tox_server(seed=3):
        yield t


async def open_link(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection to a proxy listening on ``port``."""
    return await asyncio.open_connection("127.0.0.1", port)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def read_all(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """Everything up to EOF, and how many reads it took."""
    data, reads = b"", 0
    while chunk := await asyncio.wait_for(reader.read(65536), 10):
        data += chunk
        reads += 1
    return data, reads
