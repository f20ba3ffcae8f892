"""The throttle fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chaosstream.faults.throttle import Throttle
from chaosstream.testing import run_fault
from tests.faults._streams import STREAM


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
