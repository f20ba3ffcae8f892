"""The loss fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import pytest

from chaosstream.faults.loss import Loss
from chaosstream.testing import run_fault


def _stall_ms(detail: str) -> float:
    return float(detail.split(", ")[1].removesuffix(" ms"))


async def test_loss_keeps_every_byte_and_stalls() -> None:
    """Lost segments delay delivery by multiples of the RTO; no byte is lost or moved."""
    chunks = [b"y" * 4000] * 30
    r = await run_fault(Loss(rate=0.1), chunks, seed=1)
    assert r.data == b"".join(chunks)
    stalls = [e for e in r.log if e.action == "stall"]
    assert stalls
    assert r.elapsed_s == pytest.approx(sum(_stall_ms(e.detail) for e in stalls) / 1000)


async def test_loss_backoff_doubles_then_resets() -> None:
    """Every segment lost: RTO 200, 400, 800 ms, then a reset after max_retransmits."""
    r = await run_fault(Loss(rate=0.999999, max_retransmits=3), [b"z" * 100])
    assert r.ended == "reset"
    assert r.chunks_out == []
    assert [e.action for e in r.log] == ["reset"]


async def test_loss_stall_is_rto() -> None:
    """One loss of a small write stalls it by exactly rto_ms."""
    for seed in range(200):
        r = await run_fault(Loss(rate=0.3, rto_ms=200), [b"a" * 10], seed=seed)
        if r.log and r.log[0].detail == "1 lost, 200 ms":
            assert r.elapsed_s == pytest.approx(0.2)
            assert r.data == b"a" * 10
            return
    raise AssertionError("no seed gave a single loss")
