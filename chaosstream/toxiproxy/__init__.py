"""A Toxiproxy-compatible API and TCP toxics, so Toxiproxy clients drive chaosstream.

Mount :func:`add_toxiproxy_routes` on an aiohttp app, or start a standalone server
with :func:`start_toxiproxy_server`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from chaosstream.toxiproxy.api import add_toxiproxy_routes
from chaosstream.toxiproxy.server import ApiError, Proxy, ToxiproxyServer
from chaosstream.toxiproxy.toxics import TOXIC_TYPES

__all__ = [
    "TOXIC_TYPES",
    "ApiError",
    "Proxy",
    "RunningServer",
    "ToxiproxyServer",
    "add_toxiproxy_routes",
    "start_toxiproxy_server",
]


@dataclass
class RunningServer:
    """A Toxiproxy API served on its own port; :meth:`close` stops everything."""

    server: ToxiproxyServer
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:8474``."""
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        """Close every proxy listener and open link, then the HTTP server."""
        await self.server.close()
        await self.runner.cleanup()


async def start_toxiproxy_server(
    host: str = "127.0.0.1", port: int = 0, seed: int | None = None
) -> RunningServer:
    """Serve the Toxiproxy API on ``host:port`` (0 picks a free port)."""
    server = ToxiproxyServer(seed=seed)
    app = web.Application()
    add_toxiproxy_routes(app, server)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    real_port = int(runner.addresses[0][1])
    return RunningServer(server, runner, host, real_port)
