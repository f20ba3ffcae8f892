"""Greenlets waiting on AsyncBridge by the hundred, as ``chaosstream load`` users do.

Run as its own process (importing the engine imports Locust, which patches the
process for gevent): ``python tests/load/bridge_stress.py GREENLETS CALLS``. Exits 0
when every call came back with its own value, every killed greenlet's coroutine was
cancelled, the bridge still answers afterwards, and stopping it with calls out
cancels them all and ends their greenlets; prints what it saw.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import gevent  # type: ignore[import-untyped]

from chaosstream.load.engine import AsyncBridge  # first: Locust patches the process

LIMIT_S = 30.0


def main() -> int:
    greenlets, calls = int(sys.argv[1]), int(sys.argv[2])
    bridge = AsyncBridge()

    async def echo(i: int, delay: float) -> int:
        if delay:
            await asyncio.sleep(delay)
        return i

    def user(u: int) -> int:
        rng = random.Random(u)
        for i in range(calls):
            # Most coroutines end before their greenlet waits, as a refused request does.
            got = bridge.call(echo(i, rng.choice((0.0, 0.0, 0.0005, 0.002))))
            if got != i:
                raise AssertionError(f"user {u} call {i} got {got}")
        return calls

    start = time.monotonic()
    users = [gevent.spawn(user, u) for u in range(greenlets)]
    gevent.joinall(users, timeout=LIMIT_S)
    answered = sum(g.value for g in users if g.successful())
    print(f"answered {answered} of {greenlets * calls} in {time.monotonic() - start:.1f} s")

    # Killing a waiting greenlet (Locust stopping a user) cancels its coroutine.
    cancelled: list[int] = []

    async def forever(i: int) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    sleepers = [gevent.spawn(bridge.call, forever(i)) for i in range(greenlets)]
    gevent.sleep(0.2)
    gevent.killall(sleepers, timeout=LIMIT_S)
    deadline = time.monotonic() + LIMIT_S
    while len(cancelled) < greenlets and time.monotonic() < deadline:
        gevent.sleep(0.01)
    print(f"cancelled {len(cancelled)} of {greenlets}")
    after = bridge.call(echo(7, 0.0))
    print(f"answers after: {after == 7}")

    # Stopping with calls still out (the run's end with users mid-stream): each is
    # cancelled and awaited on the loop before its thread ends, and its greenlet ends.
    cancelled.clear()
    waiting = [gevent.spawn(bridge.call, forever(i)) for i in range(greenlets)]
    gevent.sleep(0.2)
    bridge.stop()
    gevent.joinall(waiting, timeout=LIMIT_S)
    ended = sum(1 for g in waiting if g.dead)
    print(f"stopped with {greenlets} out: {len(cancelled)} cancelled, {ended} greenlets ended")
    ok = answered == greenlets * calls and after == 7
    return 0 if ok and len(cancelled) == ended == greenlets else 1


if __name__ == "__main__":
    sys.exit(main())
