"""The buffer fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import pytest

from chaosstream.faults.buffer import Buffer
from chaosstream.testing import run_fault
from tests.faults._streams import STREAM, WHOLE, timed


async def test_buffer_holds_until_the_end() -> None:
    """Nothing leaves until upstream ends; then everything at once."""
    r = await run_fault(Buffer(), timed(STREAM, 0.1))
    assert r.data == WHOLE
    assert r.times == pytest.approx([1.0] * len(r.times))


async def test_buffer_flush_bytes() -> None:
    """flush_bytes lets go each time that much is held."""
    r = await run_fault(Buffer(flush_bytes=100), [b"x" * 60] * 5)
    assert [len(c) for c in r.chunks_out] == [120, 120, 60]
