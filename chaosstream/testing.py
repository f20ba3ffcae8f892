"""Test helpers for faults: run one fault over chunks in memory, on a fake clock.

The helpers run a fault exactly as the proxy does (through the trigger wrapper,
framed into events when the fault asks), but over a list of byte strings and on
a :class:`FakeClock` whose sleeps take no real time, so a test of a 3-second
delay runs in microseconds and gives the same numbers on every machine::

    from chaosstream.faults.latency import Latency
    from chaosstream.testing import run_fault

    async def test_first_byte_is_late() -> None:
        result = await run_fault(Latency(first_byte_ms=300), [b"data: hi\\n\\n"])
        assert result.times == [0.3]
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaosstream.faults.base import (
    Chunk,
    Clock,
    EndMode,
    Fault,
    FaultEvent,
    Refusal,
    RequestInfo,
    StreamEnd,
)
from chaosstream.faults.trigger import Injector
from chaosstream.streams.providers import provider_for

__all__ = ["FakeClock", "FaultResult", "make_request", "run_fault"]

# Loop turns the fake clock lets pass before it jumps ahead: enough for every
# runnable task (a chain of generators, a pending read) to reach its next sleep.
_SETTLE_TURNS = 16


class FakeClock:
    """Virtual time: ``sleep`` returns at once and moves ``now`` forward.

    Concurrent sleepers wake in deadline order, as they would on a real clock:
    the clock waits until every other task is blocked, then jumps to the
    earliest deadline.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        """The virtual time in seconds."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), wake))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        await wake

    def advance(self, seconds: float) -> None:
        """Move virtual time forward without sleeping (a test's "meanwhile")."""
        self._now += seconds

    async def _drive(self) -> None:
        while self._sleepers:
            for _ in range(_SETTLE_TURNS):
                await asyncio.sleep(0)
            if not self._sleepers:
                break
            due, _, wake = heapq.heappop(self._sleepers)
            if wake.done():  # a cancelled sleep (a deadline that lost its race)
                continue
            self._now = max(self._now, due)
            wake.set_result(None)

    async def aclose(self) -> None:
        """Stop the clock's driver task (``run_fault`` does this for you)."""
        if self._driver is not None and not self._driver.done():
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver


def make_request(
    path: str = "/v1/chat/completions",
    *,
    stream: bool = True,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    body: Any = None,
    websocket: bool = False,
) -> RequestInfo:
    """A :class:`RequestInfo` as the proxy would build it for this request.

    ``body`` (a JSON-able value) defaults to ``{"stream": stream}``; the
    provider follows from ``path`` (plain SSE on a WebSocket).
    """
    if body is None:
        body = {"stream": stream}
    raw = json.dumps(body).encode()
    return RequestInfo(
        method=method,
        path=path,
        query="",
        headers={k.lower(): v for k, v in (headers or {}).items()},
        body=raw,
        provider="sse" if websocket else provider_for(path),
        stream=stream,
        json=body,
        websocket=websocket,
    )


@dataclass(slots=True)
class FaultResult:
    """What came out of :func:`run_fault`."""

    chunks_out: list[bytes]
    """The chunks the client would receive, in order."""
    ended: EndMode | None
    """How a fault cut the stream (``reset``, ``close``, ``stall``), or None."""
    log: list[FaultEvent]
    """The fault-log entries, as ``ChaosProxy.fault_log`` would hold them."""
    elapsed_s: float
    """Virtual seconds from the start until the stream ended."""
    times: list[float] = field(default_factory=list)
    """Virtual seconds from the start at which each output chunk left."""
    refusal: Refusal | None = None
    """The response a refusing fault sent instead of the stream."""
    fired: bool = True
    """False when the trigger kept every fault out of this exchange."""

    @property
    def data(self) -> bytes:
        """All output bytes joined."""
        return b"".join(self.chunks_out)


async def run_fault(
    fault: Fault | Sequence[Fault],
    chunks: Sequence[bytes | tuple[float, bytes]],
    *,
    seed: int = 0,
    request: RequestInfo | None = None,
    framed: bool | None = None,
    clock: Clock | None = None,
) -> FaultResult:
    """Run ``fault`` (or several, in order) over ``chunks`` as the proxy would.

    A chunk given as ``(at_s, data)`` arrives ``at_s`` seconds after the start;
    plain bytes arrive right after the chunk before. ``framed`` cuts the input
    into one chunk per SSE event first; by default that happens when a fault
    asks for events (WebSocket requests: every chunk is one message already).
    """
    faults = [fault] if isinstance(fault, Fault) else list(fault)
    own_clock = clock is None
    clk: Clock = FakeClock() if clock is None else clock
    log: list[FaultEvent] = []
    injector = Injector(faults, seed, clk, log.append)
    req = request or make_request()
    start = clk.now()
    armed = injector.arm(injector.next_exchange(), req, start)
    result = FaultResult([], None, log, 0.0, fired=bool(armed))
    try:
        for a in armed:
            refusal = await a.refuse()
            if refusal is not None:
                a.ctx.fired("refuse", detail=f"status {refusal.status}")
                result.refusal = refusal
                break
        else:
            await _stream(armed, chunks, clk, start, framed, req, result)
    finally:
        for a in armed:
            a.release()
        result.elapsed_s = clk.now() - start
        if own_clock and isinstance(clk, FakeClock):
            await clk.aclose()
    return result


async def _stream(
    armed: Sequence[Any],
    chunks: Sequence[bytes | tuple[float, bytes]],
    clock: Clock,
    start: float,
    framed: bool | None,
    request: RequestInfo,
    result: FaultResult,
) -> None:
    async def source() -> AsyncIterator[Chunk]:
        for item in chunks:
            if isinstance(item, tuple):
                at, data = item
                await clock.sleep(start + at - clock.now())
            else:
                data = item
            yield Chunk(data, clock.now())

    chain = [a for a in armed if a.fault.acts_on_stream]
    stream: AsyncIterator[Chunk] = source()
    if framed is None:
        framed = not request.websocket and any(a.fault.needs_events for a in chain)
    if framed:
        from chaosstream.proxy.server import frame_events
        from chaosstream.streams.registry import framer_for

        stream = frame_events(stream, framer=framer_for(request.provider))
    for a in chain:
        stream = a.apply(stream)
    try:
        async for chunk in stream:
            if chunk.data:
                result.chunks_out.append(chunk.data)
                result.times.append(round(clock.now() - start, 9))
    except StreamEnd as end:
        result.ended = end.mode
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
