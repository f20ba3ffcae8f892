"""The throttle fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from pydantic import ValidationError

from chaosstream.faults.throttle import Throttle
from chaosstream.testing import run_fault
from tests.faults._streams import STREAM, timed


async def test_throttle_events_per_s_exact() -> None:
    """20 events/s: 11 events span exactly 0.5 s, evenly spaced, boundaries kept."""
    r = await run_fault(Throttle(events_per_s=20), STREAM)
    assert r.chunks_out == STREAM
    assert r.times == pytest.approx([i * 0.05 for i in range(len(STREAM))])


async def test_throttle_no_burst_after_upstream_pause() -> None:
    """A pause upstream earns no credit: events after it are still paced."""
    chunks: list[bytes | tuple[float, bytes]] = [*STREAM[:3], (2.0, STREAM[3]), STREAM[4]]
    r = await run_fault(Throttle(events_per_s=10), chunks)
    assert r.times[3:] == pytest.approx([2.0, 2.1])


async def test_throttle_tokens_counts_only_text() -> None:
    """tokens_per_s paces token events; [DONE] carries no token and leaves at once."""
    r = await run_fault(Throttle(tokens_per_s=10), STREAM)
    assert r.times[:10] == pytest.approx([i * 0.1 for i in range(10)])
    assert r.times[10] == pytest.approx(r.times[9])


async def test_throttle_bytes_per_s_smooth() -> None:
    """bytes_per_s: 10 kB at 5 kB/s takes 2 s, in small pieces rather than one burst."""
    r = await run_fault(Throttle(bytes_per_s=5000), [b"x" * 10_000])
    assert r.data == b"x" * 10_000
    assert r.elapsed_s == pytest.approx(2.0)
    assert len(r.chunks_out) >= 10


def test_throttle_needs_one_rate() -> None:
    """Two rates (or none) is a configuration error."""
    with pytest.raises(ValidationError, match="exactly one"):
        Throttle(events_per_s=1, bytes_per_s=1)
    with pytest.raises(ValidationError, match="exactly one"):
        Throttle()


async def test_throttle_bursts_leave_together_then_a_gap() -> None:
    """burst_events=3, burst_every_ms=500 on a stream that arrives at once: groups of
    three leave together every 0.5 s; [DONE] (an event too) opens the last group."""
    r = await run_fault(Throttle(burst_events=3, burst_every_ms=500), STREAM)
    assert r.times == pytest.approx([0, 0, 0, 0.5, 0.5, 0.5, 1, 1, 1, 1.5, 1.5])
    assert r.data == b"".join(STREAM)
    assert (r.log[0].action, r.log[0].detail) == ("burst", "3 events every 500 ms")


async def test_throttle_burst_waits_for_its_last_event_and_earns_no_credit() -> None:
    """A slow upstream: a burst leaves when its last event arrived (batching), and never
    sooner than burst_every_ms after the one before."""
    r = await run_fault(Throttle(burst_events=3, burst_every_ms=500), timed(STREAM, 0.1))
    assert r.times[:9] == pytest.approx([0.2] * 3 + [0.7] * 3 + [1.2] * 3)
    r = await run_fault(Throttle(burst_events=2, burst_every_ms=100), timed(STREAM, 1.0))
    assert r.times[:4] == pytest.approx([1, 1, 3, 3])


def test_throttle_bursts_are_checked() -> None:
    """Bursts need both fields and exclude a rate."""
    with pytest.raises(ValidationError, match="both burst_events and burst_every_ms"):
        Throttle(burst_events=3)
    with pytest.raises(ValidationError, match="a rate or bursts"):
        Throttle(burst_events=3, burst_every_ms=10, events_per_s=5)


async def test_throttle_bursts_through_the_proxy_with_the_openai_sdk() -> None:
    """Through the real proxy, the SDK sees tokens in groups of four 300 ms apart: every
    gap between two tokens is either a burst's inside (tiny) or a burst gap, and the
    answer is whole."""
    import openai

    from tests.test_fault_e2e import ANSWER, CHAT, chaos

    fault = {"type": "throttle", "burst_events": 4, "burst_every_ms": 300}
    async with chaos([fault]) as (_p, url, _m):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        loop = asyncio.get_running_loop()
        arrivals, pieces = [], []
        async for part in await client.chat.completions.create(**CHAT):
            if part.choices and part.choices[0].delta.content:
                arrivals.append(loop.time())
                pieces.append(part.choices[0].delta.content)
        await client.close()
    assert "".join(pieces) == ANSWER
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(g < 0.1 or g > 0.2 for g in gaps), gaps
    assert sum(g > 0.2 for g in gaps) >= len(arrivals) // 4 - 1
