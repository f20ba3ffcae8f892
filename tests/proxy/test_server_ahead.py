"""An armed fault far from its trigger: the proxy passes reads on itself, then starts the chain.

The proxy's output must be the chain's from the first byte (``chaosstream.testing`` runs
the faults that way, in memory): the same bytes, the same fault log, the same end, for
any way upstream's reads fall.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chaosstream.faults.disconnect import Disconnect
from chaosstream.proxy.record import Recorder
from chaosstream.proxy.server import ChaosProxy
from chaosstream.proxy.upstream import Response
from chaosstream.testing import run_fault
from tests.conftest import ProxyFactory, make_profile

# Frames with every trait the counting has to get right: keep-alive comments and blank
# lines (not events), CRLF endings, multi-line data, an id-only block, UTF-8.
PIECES = [
    b'data: {"choices":[{"delta":{"content":"caf\xc3\xa9"}}]}\n\n',
    b": keep-alive\n\n",
    b"\n",
    b"data: one\r\ndata: two\r\n\r\n",
    b"id: 7\n\n",
    b"event: message\ndata: \xe2\x9c\x93 done\n\n",
    b"data:\n\n",
]


def case(rng: random.Random) -> tuple[list[bytes], list[dict[str, Any]]]:
    """A body cut at random points, and one or two disconnect faults."""
    body = b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14)))
    if rng.random() < 0.3:
        body += b"data: a tail with no blank line"
    cuts = sorted(rng.sample(range(1, len(body)), max(0, min(len(body) - 1, rng.randint(0, 12)))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
    faults: list[dict[str, Any]] = []
    for _ in range(rng.choice([1, 1, 2])):
        fault: dict[str, Any] = {"type": "disconnect", "mode": "close"}
        if rng.random() < 0.6:
            fault["after_events"] = rng.randint(0, 10)
            fault["split_event"] = rng.random() < 0.5
        else:
            fault["after_bytes"] = rng.randint(0, len(body) + 2)
        faults.append(fault)
    return chunks, faults


Bodies = dict[str, Sequence[bytes | asyncio.Event | float]]


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, Bodies]]:
    """Serves the chunks registered under a path, one write each, a loop turn apart
    (an ``asyncio.Event`` among them: the body waits there until it is set; a number:
    it sleeps that many seconds)."""
    bodies: Bodies = {}

    async def serve(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the proxy left at the cut
            for i, chunk in enumerate(bodies[request.query["case"]]):
                if isinstance(chunk, asyncio.Event):
                    await chunk.wait()
                    continue
                if isinstance(chunk, float):
                    await asyncio.sleep(chunk)
                    continue
                await resp.write(chunk)
                # Some writes leave alone, some together: both read patterns get tested.
                await asyncio.sleep(0.002 if i % 3 == 0 else 0)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", bodies
    await runner.cleanup()


@pytest.mark.parametrize("stamps", [False, True])
async def test_passing_ahead_gives_what_the_chain_gives(
    upstream: tuple[str, Bodies], proxy_factory: ProxyFactory, stamps: bool
) -> None:
    """Random bodies, reads and cut points: bytes, fault log, end and the recorded client body
    match the in-memory chain, whether the recorder stamps each write or not."""
    base, bodies = upstream
    proxy: ChaosProxy = await proxy_factory(base, recorder=Recorder(stamps=stamps))
    rng = random.Random(17)
    async with aiohttp.ClientSession() as session:
        for n in range(60):
            chunks, faults = case(rng)
            bodies[str(n)] = chunks
            proxy.set_profile(make_profile(faults))
            proxy.fault_log.clear()
            url = f"{proxy.url}/v1/chat/completions?case={n}"
            async with session.post(url, json={"stream": True}) as r:
                got = await r.read()
            want = await run_fault([Disconnect.model_validate(f) for f in faults], chunks)
            where = f"case {n}: {faults} over {chunks!r}"
            assert got == want.data, where
            assert [e.position() for e in proxy.fault_log] == [e.position() for e in want.log], (
                where
            )
            for _ in range(1000):  # the handler records the exchange as the body ends
                if len(proxy.recorder.exchanges) > n:
                    break
                await asyncio.sleep(0.002)
            ex = proxy.recorder.exchanges[-1]
            assert ex.id == 1 and len(proxy.recorder.exchanges) == n + 1, where
            assert ex.outcome == ("fault" if want.ended else "complete"), where
            assert ex.bytes_out == len(want.data), where
            client = ex.client_chunks if ex.client_chunks is not None else ex.upstream_chunks
            assert bytes(client) == want.data, where


@pytest.mark.parametrize(
    ("fault", "chained"),
    [
        ({"after_events": 1000}, False),
        # Tokens need each event parsed: no promise to pass any read untouched.
        ({"after_tokens": 1000}, True),
    ],
)
async def test_a_fault_far_from_acting_leaves_the_stream_to_the_clean_relay(
    upstream: tuple[str, Bodies],
    proxy_factory: ProxyFactory,
    fault: dict[str, Any],
    chained: bool,
) -> None:
    """Mid-stream, a fault whose horizon is far off leaves the body to the clean relay
    (upstream's response piped from the socket callback, no fault chain, whose closures
    and generators would live as long as the stream); one without a horizon runs the
    chain from the first byte. Neither fires: the client gets every byte."""
    base, bodies = upstream
    go_on = asyncio.Event()
    events = [b"data: %d\n\n" % i for i in range(1, 7)] + [b"data: [DONE]\n\n"]
    bodies["held"] = [*events[:3], go_on, *events[3:]]
    fault = {"type": "disconnect", "mode": "close", **fault}
    proxy = await proxy_factory(base, make_profile([fault]))
    async with aiohttp.ClientSession() as session:
        url = f"{proxy.url}/v1/chat/completions?case=held"
        async with session.post(url, json={"stream": True}) as r:
            got = await r.content.readuntil(b"data: 3\n\n")
            pumps = [o for o in gc.get_objects() if _runs(o, ChaosProxy._pump_faults)]
            piped = [o for o in gc.get_objects() if type(o) is Response and o._sink]
            go_on.set()
            got += await r.read()
    assert (len(pumps), len(piped)) == ((1, 0) if chained else (0, 1))
    assert got == b"".join(events)
    assert proxy.fault_log == []


async def test_a_fault_with_a_window_counts_from_its_opening(
    upstream: tuple[str, Bodies], proxy_factory: ProxyFactory
) -> None:
    """A windowed fault is never passed ahead of: its positions count from the window's
    opening (faults/base.py Window), which the proxy's own count of the reads cannot
    know. Events 0.3 s apart, the window opening at 0.75 s (150 ms from either
    neighbour): ``after_events: 1`` lets the three events before it and one inside it
    through, then cuts."""
    base, bodies = upstream
    events = [b"data: %d\n\n" % i for i in range(1, 7)]
    bodies["windowed"] = [x for e in events for x in (e, 0.3)]
    fault = {"type": "disconnect", "mode": "close", "after_events": 1, "window": {"start_s": 0.75}}
    proxy = await proxy_factory(base, make_profile([fault]))
    proxy.reset()  # the window's clock starts here
    async with aiohttp.ClientSession() as session:
        url = f"{proxy.url}/v1/chat/completions?case=windowed"
        async with session.post(url, json={"stream": True}) as r:
            got = await r.read()
    assert got == b"".join(events[:4])
    assert [e.action for e in proxy.fault_log] == ["close"]


def _runs(o: object, method: Any) -> bool:
    """Is ``o`` a live coroutine of ``method``? (An earlier test's may wait for collection.)"""
    return (
        inspect.iscoroutine(o)
        and o.cr_code is method.__code__
        and inspect.getcoroutinestate(o) != inspect.CORO_CLOSED
    )
