"""Arrival stamps (proxy/stamp.py) on real sockets: delays count from the socket, the pool
keeps working."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time

import aiohttp

from chaosstream.faults.profile import profile_from_data
from chaosstream.proxy.stamp import Stamp
from tests.conftest import ProxyFactory
from tests.proxy.test_relay import SSE, RawUpstream, chunked, last_exchange, paced

EVENT = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
REQUEST = {"model": "m", "stream": True, "messages": []}


def latency(ms: float) -> object:
    return profile_from_data(
        {"version": 1, "name": "t", "faults": [{"type": "latency", "first_byte_ms": ms}]}, "<t>"
    )


async def test_first_byte_delay_counts_from_arrival_not_from_a_late_task(
    proxy_factory: ProxyFactory,
) -> None:
    """Upstream's head and first event reach the socket, then the proxy's loop is blocked
    200 ms before its handler resumes: the 300 ms first-byte delay still counts from the
    arrival, so the client gets the event ~300 ms after it was sent, not ~500."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    blocking, sent_evt = threading.Event(), threading.Event()
    sent: list[float] = []

    def block_then_block_again() -> None:
        blocking.set()
        sent_evt.wait(2)
        time.sleep(0.02)  # the bytes are in the socket when this callback returns
        # A timer already due runs in the same loop pass as the socket's callback, after it
        # and before the handler task it wakes: the handler resumes 200 ms late.
        loop.call_at(loop.time(), time.sleep, 0.2)

    def upstream() -> None:
        conn, _ = listener.accept()
        with conn:
            raw = b""
            while b"\r\n\r\n" not in raw:
                raw += conn.recv(65536)
            loop.call_soon_threadsafe(block_then_block_again)
            blocking.wait(2)
            head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
            conn.sendall(head + b"%x\r\n%b\r\n" % (len(EVENT), EVENT))
            sent.append(time.monotonic())
            sent_evt.set()
            time.sleep(0.05)
            conn.sendall(b"0\r\n\r\n")
            time.sleep(0.1)

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        proxy = await proxy_factory(f"http://127.0.0.1:{port}", latency(300))
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{proxy.url}/v1/chat/completions", json=REQUEST) as resp,
        ):
            first = await resp.content.readany()
            got = time.monotonic()
            rest = await resp.read()
        assert first + rest == EVENT
        waited_ms = (got - sent[0]) * 1000
        # Counted from the task's wake-up it would be ~520 ms.
        assert 280 <= waited_ms < 440, waited_ms
    finally:
        await asyncio.to_thread(thread.join, 5)
        listener.close()


async def test_stamped_connection_goes_back_to_the_pool_unwrapped(
    proxy_factory: ProxyFactory,
) -> None:
    """Two timed exchanges one after another share one pooled upstream connection, both
    bodies whole, and no stamp is left on it (a clean exchange never gets one)."""
    head = b"HTTP/1.1 200 OK\r\n" + SSE + b"Transfer-Encoding: chunked\r\n\r\n"
    body = EVENT * 5
    upstream = RawUpstream(paced(head, [chunked(body, (len(EVENT),))], gap_s=0.001))
    async with upstream as url:
        proxy = await proxy_factory(url, latency(20))
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.post(f"{proxy.url}/v1/chat/completions", json=REQUEST) as resp:
                    assert await resp.read() == body
                await last_exchange(proxy)
            gc.collect()
            assert not [o for o in gc.get_objects() if isinstance(o, Stamp)]
            assert upstream.connections == 1  # the second exchange reused the first's
            clean = await proxy_factory(url)
            async with session.post(f"{clean.url}/v1/chat/completions", json=REQUEST) as resp:
                assert await resp.read() == body
    assert proxy.recorder.exchanges[-1].outcome == "complete"
