"""The noop fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

from chaosstream.faults.noop import Noop
from chaosstream.testing import run_fault
from tests.faults._streams import STREAM


async def test_noop_passes_everything() -> None:
    """The noop fault passes chunks unchanged and logs nothing."""
    r = await run_fault(Noop(), STREAM)
    assert (r.chunks_out, r.log) == (STREAM, [])


async def test_noop_keeps_arrival_times_and_boundaries() -> None:
    """Chunks leave when they arrive, in the writes upstream made: no framing, no delay."""
    one_write = b"".join(STREAM[:3])
    chunks: list[bytes | tuple[float, bytes]] = [(0.0, one_write), (0.7, STREAM[3]), (1.2, b"da")]
    r = await run_fault(Noop(), chunks)
    assert r.chunks_out == [one_write, STREAM[3], b"da"]
    assert r.times == [0.0, 0.7, 1.2]
    assert r.elapsed_s == 1.2


def test_noop_is_prompt_and_acts_on_the_stream() -> None:
    """The template fault never waits, needs no events, and sits in the chain when it fires."""
    fault = Noop()
    assert (fault.prompt, fault.needs_events, fault.acts_on_stream) == (True, False, True)
    assert fault.closes_connection is False
