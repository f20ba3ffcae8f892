"""Soak: thousands of short streams with random faults from every family through one proxy.

Afterwards nothing may be left behind: no socket to the upstream, no task, no
open exchange, and traced memory back to where it started. Scale with
``CHAOSSTREAM_SOAK_STREAMS`` (default 10,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import tracemalloc
from collections import Counter
from typing import Any

import aiohttp
import psutil
import pytest

from chaosstream.faults import REGISTRY
from chaosstream.faults.profile import Profile, profile_from_data
from chaosstream.mock import MockSettings, start_mock
from chaosstream.proxy.server import ChaosProxy

STREAMS = int(os.environ.get("CHAOSSTREAM_SOAK_STREAMS", "10000"))
CONCURRENCY = 100
# Every fault family, with settings that keep a stream short. A family added
# later without an entry here still takes part with its defaults (if it has any).
SAMPLES: dict[str, list[dict[str, Any]]] = {
    "latency": [{"first_byte_ms": 5, "per_event_ms": 1, "jitter_ms": 1}],
    "throttle": [{"events_per_s": 2000}, {"bytes_per_s": 200_000}],
    "loss": [{"rate": 0.2, "rto_ms": 2, "max_retransmits": 2}],
    "disconnect": [
        {"after_events": 1, "mode": "reset"},
        {"after_bytes": 40, "mode": "close", "split_event": True},
        {"after_tokens": 1, "mode": "stall"},
        {"after_ms": 3, "mode": "close"},
    ],
    "http_error": [{"status": 429, "retry_after_s": 1}, {"status": 503}],
    "stream_error": [{"after_events": 1, "kind": "overloaded"}],
    "corrupt": [
        {"action": a, "after_events": 1}
        for a in ("malformed_json", "drop_event", "duplicate_event", "reorder", "split")
    ]
    + [{"action": "invalid_utf8", "rate": 0.5}, {"action": "drop_terminal", "after_events": 0}],
    "content": [
        {"kind": k, "after_tokens": 2}
        for k in ("length", "content_filter", "refusal", "empty", "tool_args_cut")
    ],
    "buffer": [{}],
    "gzip": [{}],
    "concurrency_limit": [{"max_streams": 1}],
    # MCP's session faults: on a chat stream they find no session and leave it alone.
    "polite_close": [{"after_events": 2, "retry_ms": 5}, {"before_terminal": True}],
    "session_expiry": [{}],
    "noop": [{}],
}
OUTCOMES = {"complete", "fault", "client_gone", "upstream_error", "refused"}


def every_family() -> list[dict[str, Any]]:
    """One entry per sample of every registered family, each firing on a share of requests."""
    faults: list[dict[str, Any]] = []
    for name in REGISTRY:
        for sample in SAMPLES.get(name, [{}]):
            faults.append({"type": name, "probability": 0.04, **sample})
    return faults


def soak_profile() -> Profile:
    """The profile of the soak run: every family, plus a network block on some requests."""
    data = {
        "version": 1,
        "name": "soak",
        "network": {"latency_ms": 1, "jitter_ms": 1},
        "faults": every_family(),
    }
    return profile_from_data(data, "<soak>")


def upstream_sockets(port: int) -> int:
    """This process's TCP connections to or from the upstream's port (its listener aside)."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status != psutil.CONN_LISTEN
        and ((c.raddr and c.raddr.port == port) or (c.laddr and c.laddr.port == port))
    )


def _describe(record: logging.LogRecord) -> str:
    """A logged error with the project frames of its traceback, for the failure message."""
    lines = logging.Formatter().format(record).splitlines()
    return " | ".join(ln.strip() for ln in lines if "chaosstream/" in ln or "Error" in ln)


def open_fds() -> int:
    """How many file descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


async def one(session: aiohttp.ClientSession, url: str, i: int) -> str:
    """One short streaming chat request; returns how it ended for the client."""
    body = {
        "model": "m",
        "stream": i % 7 != 0,  # some non-streaming requests too
        "messages": [{"role": "user", "content": f"soak {i % 50}"}],
    }
    timeout = aiohttp.ClientTimeout(total=5, sock_read=0.5)
    try:
        async with session.post(url, json=body, timeout=timeout) as r:
            await r.read()
            return f"status {r.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return type(e).__name__


async def run_streams(proxy: ChaosProxy, n: int) -> Counter[str]:
    """``n`` requests, ``CONCURRENCY`` at a time, through ``proxy``."""
    url = proxy.url + "/v1/chat/completions"
    seen: Counter[str] = Counter()
    queue = iter(range(n))
    # One connection per request: after a `close` cut the proxy ends the body
    # cleanly and then closes the connection, and a pooled client may already
    # have sent its next request on it (that request never reaches the proxy).
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in queue:
                seen[await one(session, url, i)] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return seen


class Errors(logging.Handler):
    """Collects aiohttp's logged errors (a failing handler is logged, not raised)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collect_errors() -> Any:
    """Loop exception-handler calls and aiohttp error logs during the block."""
    loop = asyncio.get_running_loop()
    calls: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: calls.append(ctx))
    handler = Errors()
    logger = logging.getLogger("aiohttp")
    logger.addHandler(handler)
    try:
        yield calls, handler.records
    finally:
        logger.removeHandler(handler)
        loop.set_exception_handler(old)


async def settle(condition: Any, seconds: float = 5.0, step_s: float = 0.05) -> bool:
    """Wait (bounded) until ``condition()`` holds; True if it did."""
    for _ in range(int(seconds / step_s)):
        if condition():
            return True
        await asyncio.sleep(step_s)
    return bool(condition())


def other_tasks() -> set[asyncio.Task[Any]]:
    """Tasks of this loop other than the test's own."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_soak_every_fault_family_leaves_nothing_behind() -> None:
    """10,000 short streams with random faults from every family: each exchange is recorded
    with a known outcome, and afterwards no socket, task, exchange or memory is left over."""
    mock = await start_mock(settings=MockSettings(ttft_ms=0, tokens_per_s=0, tokens=4))
    port = int(mock.url.rsplit(":", 1)[1])
    # Warm-up: imports, caches and pools are filled before the baseline is taken.
    warm = ChaosProxy(mock.url, soak_profile(), seed=1)
    await warm.start()
    await run_streams(warm, 200)
    await warm.close()
    del warm
    await settle(lambda: mock.open_streams == 0)
    mock.stats.history.clear()  # the mock's own history is not the proxy's memory
    gc.collect()
    fds0 = open_fds()
    tracemalloc.start(1)
    try:
        base = tracemalloc.take_snapshot()
        with collect_errors() as (calls, logged):
            proxy = ChaosProxy(mock.url, soak_profile(), seed=7)
            outcomes: Counter[str] = Counter()
            proxy.recorder.listeners.append(lambda ex: outcomes.update([ex.outcome]))
            await proxy.start()
            seen = await run_streams(proxy, STREAMS)
            still_open = proxy.recorder.open
            assert await settle(lambda: not still_open), still_open
            assert await settle(lambda: mock.open_streams == 0), mock.open_streams
            # Checked here: the recorder's exchanges must not outlive the proxy.
            assert all(
                ex.ended is not None and ex.outcome in OUTCOMES for ex in proxy.recorder.exchanges
            )
            fired = Counter(f.type for f in proxy.fault_log)
            await proxy.close()
            del proxy
            assert await settle(lambda: upstream_sockets(port) == 0), upstream_sockets(port)
            assert await settle(lambda: not other_tasks()), other_tasks()
        mock.stats.history.clear()
        gc.collect()
        growth = tracemalloc.take_snapshot().compare_to(base, "lineno")
    finally:
        tracemalloc.stop()
    grown = sum(d.size_diff for d in growth)
    assert sum(outcomes.values()) == STREAMS, (outcomes, seen)
    assert set(outcomes) <= OUTCOMES, outcomes
    assert {"complete", "fault", "refused"} <= set(outcomes), outcomes
    # Every family fired on some exchange (noop never logs: it does nothing; session_expiry
    # acts only on an MCP session, and a chat stream has none).
    assert set(REGISTRY) - {"noop", "session_expiry"} <= set(fired), fired
    assert calls == [], calls
    # The mock logs its own "cannot write" when the proxy hangs up on it (a cut, a
    # client gone); only the proxy is under test here.
    assert [_describe(r) for r in logged if "chaosstream/mock/" not in _describe(r)] == []
    # The recorder keeps the last 1000 exchanges: they went with the proxy.
    top = "\n".join(str(d) + "\n" + "\n".join(d.traceback.format()) for d in growth[:5])
    assert grown < 1 * 2**20, f"{grown / 2**20:.2f} MiB still allocated:\n{top}"
    assert open_fds() <= fds0 + 2, (fds0, open_fds())
    await mock.close()


CLI_STREAMS = int(os.environ.get("CHAOSSTREAM_CLI_SOAK_STREAMS", "10000"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_soak_proxy_and_mock_processes_survive_every_fault_family(tmp_path: Any) -> None:
    """10,000 mixed faulted streams through `chaosstream proxy` to `chaosstream mock` (both
    subprocesses): both alive and exiting 0, every family fired, fds/RSS/threads bounded."""
    from bench.soak import soak

    report = soak(CLI_STREAMS, tmp_path)
    print(json.dumps(report))  # the numbers, for the log (pytest -s or -rP)
    assert report["problems"] == [], report
    assert sum(report["client_saw"].values()) == CLI_STREAMS, report["client_saw"]
