"""Run chaosstream's proxy with an inline profile, as a process the bench can measure.

``python -m bench.chaos_proxy --upstream URL --port N --profile '{"faults": [...]}'``
builds the profile with :func:`chaosstream.faults.profile.profile_from_data`, so a
benchmark can inject any fault without writing files.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from bench._loop import run
from chaosstream.cli.logs import configure_logging
from chaosstream.faults.profile import profile_from_data
from chaosstream.proxy.server import ChaosProxy, tune_gc


async def serve(
    upstream: str, port: int, profile_json: str, seed: int, untuned: bool = False
) -> None:
    """Serve until killed, logging as ``chaosstream proxy`` does (JSON lines on stderr).

    ``untuned``: aiohttp's listen backlog (128) and CPython's GC thresholds, as before
    issue 17, so one run can show what those two settings change.
    """
    data = {"version": 1, "name": "bench", **json.loads(profile_json)}
    backlog = {"backlog": 128} if untuned else {}
    proxy = ChaosProxy(upstream, profile_from_data(data, "<bench>"), seed=seed, **backlog)
    await proxy.start("127.0.0.1", port)
    if not untuned:
        tune_gc()  # as `chaosstream proxy` does
    print(f"port {port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", default="{}", help="Profile fields as JSON.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--untuned", action="store_true", help="Backlog 128, default GC.")
    args = parser.parse_args()
    configure_logging("json")
    run(
        serve(args.upstream, args.port, args.profile, args.seed, args.untuned),
        use_uvloop=args.uvloop,
    )


if __name__ == "__main__":
    main()
