"""The network block's faults in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import pytest

from chaosstream.faults.network import LinkDelay, LinkLoss, LinkUp
from chaosstream.faults.throttle import Throttle
from chaosstream.testing import run_fault


async def test_network_link_chain_adds_up() -> None:
    """A 100 ms link delay then 1 kB/s: a 500-byte write arrives after 0.6 s."""
    chain = [LinkDelay(delay_ms=100), Throttle(bytes_per_s=1000)]
    r = await run_fault(chain, [b"q" * 500])
    assert r.elapsed_s == pytest.approx(0.6)


async def test_network_upload_shaping() -> None:
    """LinkUp shapes only the request body; LinkLoss acts on both directions."""
    assert not LinkUp(bytes_per_s=10).acts_on_stream
    assert hasattr(LinkLoss(rate=0.1), "apply_upload")
