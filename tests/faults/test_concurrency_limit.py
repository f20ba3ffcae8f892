"""The concurrency_limit fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

from chaosstream.faults.concurrency_limit import ConcurrencyLimit
from chaosstream.testing import run_fault
from tests.faults._streams import STREAM, WHOLE


async def test_concurrency_limit_counts_open_exchanges() -> None:
    """With max_streams 0 every request is refused with 429 and Retry-After."""
    r = await run_fault(ConcurrencyLimit(max_streams=0, retry_after_s=3), STREAM)
    assert r.refusal is not None
    assert (r.refusal.status, r.refusal.headers["Retry-After"]) == (429, "3")


async def test_concurrency_limit_lets_one_through() -> None:
    """Below the limit the stream passes untouched."""
    r = await run_fault(ConcurrencyLimit(max_streams=1), STREAM)
    assert (r.refusal, r.data) == (None, WHOLE)
