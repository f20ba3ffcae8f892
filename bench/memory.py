"""What an open stream holds, by allocation site: ``python -m bench.memory``.

The bench's "KiB per open stream" is RSS (peak - idle) / streams, which says how
much but not what. This runs the proxy under test *in this process* with
``tracemalloc``, opens N paced streams through it (the stamped upstream and the
load generator are subprocesses, as in ``python -m bench``), takes a snapshot when
the streams are 90 % through, and prints the per-stream difference from the idle
snapshot by source line, largest first, for chaosstream (clean or ``--profile``)
and the minimal aiohttp proxy. Python allocations only: RSS adds the allocator's
overhead and fragmentation on top. chaosstream logs a JSON line per exchange on
stderr, as ``chaosstream proxy`` does (``2>/dev/null`` to hide them).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import tracemalloc
from typing import Any

from bench.__main__ import PY, ROOT, free_port, start, stop


async def _serve(mode: str, upstream: str, port: int, profile: str) -> Any:
    """Start the proxy under test on this loop; returns what keeps it alive."""
    if mode == "aiohttp-minimal":
        from aiohttp import web

        from bench.minimal_proxy import make_app

        runner = web.AppRunner(make_app(upstream), access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        return runner
    from chaosstream.cli.logs import configure_logging
    from chaosstream.faults.profile import profile_from_data
    from chaosstream.proxy.server import ChaosProxy, tune_gc

    configure_logging("json")  # a line per exchange on stderr, as `chaosstream proxy` logs

    data = {"version": 1, "name": "bench", **json.loads(profile)}
    proxy = ChaosProxy(upstream, profile_from_data(data, "<bench>"), seed=1)
    await proxy.start("127.0.0.1", port)
    tune_gc()
    return proxy


async def _client(url: str, streams: int, events: int, rate: float) -> asyncio.subprocess.Process:
    cmd = [
        "-m", "bench.client", "--url", url, "--streams", str(streams), "--events", str(events),
        "--rate", str(rate), "--ramp-s", "1",
    ]  # fmt: skip
    return await asyncio.create_subprocess_exec(
        PY, *cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def measure(
    mode: str, streams: int, events: int, rate: float, profile: str, top: int
) -> list[str]:
    """Per-stream Python memory of ``mode`` with ``streams`` open paced streams, by line."""
    up_port = free_port()
    upstream = start([PY, "-m", "bench.upstream", "--port", str(up_port)], up_port)
    try:
        port = free_port()
        server = await _serve(mode, f"http://127.0.0.1:{up_port}", port, profile)
        url = f"http://127.0.0.1:{port}"
        await (await _client(url, 5, 20, 0)).wait()  # warm-up
        gc.collect()
        tracemalloc.start()
        idle = tracemalloc.take_snapshot()
        load = await _client(url, streams, events, rate)
        await asyncio.sleep(1 + 0.9 * max(0, events - 1) / rate)  # streams end (events-1)/rate in
        busy = tracemalloc.take_snapshot()
        tracemalloc.stop()
        await load.wait()
        await (server.cleanup() if mode == "aiohttp-minimal" else server.close())
    finally:
        stop(upstream)
    return _table(mode, busy.compare_to(idle, "lineno"), streams, top)


def _table(mode: str, stats: list[tracemalloc.StatisticDiff], streams: int, top: int) -> list[str]:
    total = sum(s.size_diff for s in stats) / 1024 / streams
    lines = [f"{mode}: {total:.1f} KiB per open stream ({streams} streams, Python allocations)"]
    for s in stats[:top]:
        frame = s.traceback[0]
        where = frame.filename.split("site-packages/")[-1]
        if where.startswith(str(ROOT)):
            where = os.path.relpath(where, ROOT)
        lines.append(
            f"  {s.size_diff / 1024 / streams:6.2f} KiB  {s.count_diff / streams:5.1f} objects"
            f"  {where}:{frame.lineno}"
        )
    return lines


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--events", type=int, default=200, help="Events per stream.")
    parser.add_argument("--rate", type=float, default=20.0, help="Events/s per stream.")
    parser.add_argument("--profile", default="{}", help="chaosstream's profile fields as JSON.")
    parser.add_argument("--modes", nargs="*", default=["chaosstream", "aiohttp-minimal"])
    parser.add_argument("--top", type=int, default=12, help="Allocation sites shown per proxy.")
    args = parser.parse_args()
    for mode in args.modes:
        lines = asyncio.run(
            measure(mode, args.streams, args.events, args.rate, args.profile, args.top)
        )
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
