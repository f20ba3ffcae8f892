"""The buffer fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import pytest

from chaosstream.faults.buffer import Buffer
from chaosstream.faults.disconnect import Disconnect
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


async def test_buffer_logs_hold_and_flush() -> None:
    """The log says when holding began and how much was let go at the end."""
    r = await run_fault(Buffer(), timed(STREAM[:3], 0.5))
    assert [(e.action, e.at_ms, e.detail) for e in r.log] == [
        ("hold", 0.0, ""),
        ("flush", 1000.0, f"{len(b''.join(STREAM[:3]))} bytes held"),
    ]


async def test_buffer_keeps_event_boundaries_for_the_next_fault() -> None:
    """Before an event-counting fault, held events leave as separate events, all at the end."""
    r = await run_fault([Buffer(), Disconnect(after_events=4)], timed(STREAM, 0.1))
    assert r.chunks_out == STREAM[:4]
    assert r.times == pytest.approx([1.0] * 4)
    assert r.ended == "reset"


async def test_buffer_empty_stream_sends_nothing() -> None:
    """An empty response stays empty: a hold, no flush, nothing sent."""
    r = await run_fault(Buffer(), [])
    assert (r.chunks_out, [e.action for e in r.log]) == ([], ["hold"])
