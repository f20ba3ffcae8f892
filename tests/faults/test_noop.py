"""The noop fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

from chaosstream.faults.noop import Noop
from chaosstream.testing import run_fault
from tests.faults._streams import STREAM


async def test_noop_passes_everything() -> None:
    """The noop fault passes chunks unchanged and logs nothing."""
    r = await run_fault(Noop(), STREAM)
    assert (r.chunks_out, r.log) == (STREAM, [])
