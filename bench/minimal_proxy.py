"""The yardstick: the smallest honest aiohttp streaming reverse proxy.

No faults, no recording, no header policy beyond dropping the hop-by-hop
ones that would break framing: what chaosstream's pass-through must not be
slower than. Run: ``python -m bench.minimal_proxy --upstream URL --port N``.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

from bench._loop import run

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def make_app(upstream: str) -> web.Application:
    """An app that forwards every request to ``upstream`` and streams the answer back."""
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read()
        async with app["session"].request(
            request.method, upstream + request.raw_path, headers=headers, data=body or None
        ) as up:
            resp = web.StreamResponse(status=up.status)
            resp.headers.update({k: v for k, v in up.headers.items() if k.lower() not in HOP})
            await resp.prepare(request)
            while data := await up.content.readany():
                await resp.write(data)
            await resp.write_eof()
            return resp

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(upstream: str, port: int) -> None:
    """Serve on 127.0.0.1:port until killed."""
    import asyncio

    runner = web.AppRunner(make_app(upstream), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print(f"port {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    run(serve(args.upstream.rstrip("/"), args.port), use_uvloop=args.uvloop)
