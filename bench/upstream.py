"""A tiny OpenAI-shaped streaming upstream that stamps every event with its send time.

``POST /v1/chat/completions?events=N&rate=R`` streams N ``chat.completion.chunk``
events (R per second, 0 = as fast as possible), each carrying ``"t":<time_ns>``
taken just before the write, then a finish chunk and ``data: [DONE]``. The
client subtracts ``t`` from its own receive time: that is the per-event latency
of whatever sits in between.

Run: ``python -m bench.upstream --port 0`` (prints ``port N`` when listening).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from aiohttp import web

from bench._loop import have_uvloop, run

HEAD = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}],'
    b'"t":'
)
TAIL = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


async def chat(request: web.Request) -> web.StreamResponse:
    """Stream the stamped events, paced on an absolute schedule so delays do not add up."""
    events = int(request.query.get("events", "100"))
    rate = float(request.query.get("rate", "0"))
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    start = loop.time()
    interval = 1.0 / rate if rate > 0 else 0.0
    now_ns = time.time_ns
    write = resp.write
    try:
        for i in range(events):
            if interval:
                delay = start + i * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await write(b"%s%d}\n\n" % (HEAD, now_ns()))
            if not interval and i % 64 == 63:
                # Unpaced: let other streams and the socket have a turn.
                await asyncio.sleep(0)
        await write(TAIL)
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    return resp


async def serve(port: int) -> None:
    """Listen on 127.0.0.1 until killed."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"port {bound}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-uvloop", action="store_true", help="Use asyncio's own loop.")
    args = parser.parse_args()
    try:
        run(serve(args.port), use_uvloop=have_uvloop() and not args.no_uvloop)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
