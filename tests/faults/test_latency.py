"""The latency fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import pytest

from chaosstream.faults.latency import Latency
from chaosstream.testing import run_fault
from tests.faults._streams import STREAM, WHOLE, timed


async def test_latency_first_byte() -> None:
    """The first byte leaves first_byte_ms late; the rest follow without extra delay."""
    r = await run_fault(Latency(first_byte_ms=300), STREAM)
    assert r.times[0] == pytest.approx(0.3)
    assert r.times[-1] == pytest.approx(0.3)
    assert r.data == WHOLE
    assert [e.action for e in r.log] == ["delay_first_byte"]


async def test_latency_per_event_does_not_accumulate() -> None:
    """Each event is per_event_ms late from when it arrived, not per_event_ms apart."""
    r = await run_fault(Latency(per_event_ms=100), timed(STREAM, 0.02))
    later = r.times[1:]
    assert later == pytest.approx([0.1 + 0.02 * i for i in range(1, len(STREAM))])


async def test_latency_jitter_never_reorders() -> None:
    """With jitter larger than the gap between events, order and bytes are kept."""
    r = await run_fault(Latency(per_event_ms=50, jitter_ms=45), timed(STREAM, 0.005), seed=3)
    assert r.data == WHOLE
    assert r.times == sorted(r.times)


async def test_latency_same_seed_same_delays() -> None:
    """Jitter comes from the seeded generator: same seed, same times."""
    fault = Latency(first_byte_ms=100, per_event_ms=20, jitter_ms=15)
    a = await run_fault(fault, STREAM, seed=9)
    b = await run_fault(fault, STREAM, seed=9)
    c = await run_fault(fault, STREAM, seed=10)
    assert a.times == b.times
    assert a.times != c.times
