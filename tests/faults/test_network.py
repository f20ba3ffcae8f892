"""The network block's faults in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest
from pydantic import ValidationError

from chaosstream.faults.base import Chunk, FaultEvent, SystemClock, Uploads
from chaosstream.faults.network import (
    LinkDelay,
    LinkDown,
    LinkLoss,
    LinkUp,
    Network,
    network_faults,
)
from chaosstream.faults.throttle import Throttle
from chaosstream.faults.trigger import Injector
from chaosstream.testing import FakeClock, make_request, run_fault


async def test_network_link_chain_adds_up() -> None:
    """A 100 ms link delay then 1 kB/s: a 500-byte write arrives after 0.6 s."""
    chain = [LinkDelay(delay_ms=100), Throttle(bytes_per_s=1000)]
    r = await run_fault(chain, [b"q" * 500])
    assert r.elapsed_s == pytest.approx(0.6)


async def test_network_upload_shaping() -> None:
    """LinkUp shapes only the request body; LinkLoss acts on both directions."""
    assert not LinkUp(bytes_per_s=10).acts_on_stream
    assert hasattr(LinkLoss(rate=0.1), "apply_upload")


def test_network_block_becomes_faults_in_order() -> None:
    """A network block is delay, down and up bandwidth, then loss; a kbps is 1000 bits/s."""
    block = Network(latency_ms=300, jitter_ms=40, down_kbps=400, up_kbps=80, loss=0.02)
    faults = network_faults(block)
    assert [f.type for f in faults] == ["link_delay", "link_down", "link_up", "link_loss"]
    delay, down, up, loss = faults
    assert isinstance(delay, LinkDelay) and (delay.delay_ms, delay.jitter_ms) == (300, 40)
    assert isinstance(down, LinkDown) and down.bytes_per_s == 50_000
    assert isinstance(up, LinkUp) and up.bytes_per_s == 10_000
    assert isinstance(loss, LinkLoss) and loss.rate == 0.02
    assert network_faults(None) == network_faults(Network()) == []
    assert network_faults(Network(jitter_ms=5))[0].type == "link_delay"


@pytest.mark.parametrize(
    ("block", "field"),
    [({"loss": 1.0}, "loss"), ({"down_kbps": 0}, "down_kbps"), ({"latency": 300}, "latency")],
)
def test_network_block_is_validated(block: dict[str, float], field: str) -> None:
    """A certain loss, a zero bandwidth or an unknown field is refused by name."""
    with pytest.raises(ValidationError) as err:
        Network(**block)
    assert err.value.errors()[0]["loc"] == (field,)


async def test_link_delay_jitter_keeps_order_and_logs_once() -> None:
    """Jitter wider than the gaps never reorders writes; the log says the link was slow once."""
    chunks = [(0.001 * i, b"%d," % i) for i in range(20)]
    r = await run_fault(LinkDelay(delay_ms=50, jitter_ms=40), chunks, seed=4)
    assert r.data == b"".join(c for _, c in chunks)
    assert r.times == sorted(r.times)
    # Each write is 10-90 ms late from its own arrival: the order rule never adds more.
    assert all(0.01 <= t - at <= 0.09 + 1e-6 for t, (at, _) in zip(r.times, chunks, strict=True))
    assert [(e.action, e.detail) for e in r.log] == [("delay", "50 ms +/- 40 ms")]


class Upload(NamedTuple):
    """What an upload delivered upstream, when, and the fault log."""

    data: bytes
    times: list[float]
    log: list[FaultEvent]


async def _upload(fault: LinkUp | LinkLoss | LinkDelay, body: list[bytes], seed: int = 0) -> Upload:
    """Run ``fault.apply_upload`` over a request body on a fake clock, as the proxy does."""
    clock = FakeClock()
    log: list[FaultEvent] = []
    injector = Injector([fault], seed, clock, log.append)
    (armed,) = injector.arm(injector.next_exchange(), make_request(), clock.now())
    assert isinstance(fault, Uploads)

    async def source() -> AsyncIterator[Chunk]:
        for data in body:
            yield Chunk(data, clock.now())

    out = [(c.data, clock.now()) async for c in fault.apply_upload(source(), armed.ctx)]
    await clock.aclose()
    return Upload(b"".join(d for d, _ in out), [t for _, t in out], log)


async def test_link_up_shapes_the_request_body() -> None:
    """LinkUp leaves the response alone and sends a 500-byte body at 1000 B/s in 0.5 s."""
    fault = LinkUp(bytes_per_s=1000)
    assert not fault.acts_on_stream
    up = await _upload(fault, [b"u" * 250, b"u" * 250])
    assert up.data == b"u" * 500
    assert up.times[-1] == pytest.approx(0.5)
    down = await run_fault(fault, [b"d" * 5000])
    assert (down.data, down.elapsed_s) == (b"d" * 5000, 0.0)


async def test_link_delay_and_loss_act_on_uploads_too() -> None:
    """The delay holds the body back by its delay; loss stalls it but keeps every byte."""
    delayed = await _upload(LinkDelay(delay_ms=120), [b"body"])
    assert (delayed.data, delayed.times) == (b"body", [pytest.approx(0.12)])
    assert [e.action for e in delayed.log] == ["delay_upload"]
    body = [b"x" * 3000] * 20
    lossy = await _upload(LinkLoss(rate=0.2, max_retransmits=40), body, seed=2)
    assert lossy.data == b"".join(body)
    assert lossy.log and {e.action for e in lossy.log} == {"stall"}
    assert lossy.times[-1] >= 0.2  # at least one RTO of 200 ms


async def test_network_jitter_distribution_and_shape_reach_the_link() -> None:
    """network.distribution and shape become the link delay's: a normal jitter around
    100 ms, and a ramp that also holds the response head."""
    import statistics

    from tests.faults._streams import openai_stream, timed

    block = Network(latency_ms=100, jitter_ms=10, distribution="normal")
    [delay] = network_faults(block)
    r = await run_fault(delay, timed(openai_stream(600), 1.0), seed=2)
    d = [(t - i) * 1000 for i, t in enumerate(r.times)]
    assert statistics.fmean(d) == pytest.approx(100, abs=1.5)
    assert statistics.pstdev(d) == pytest.approx(10, rel=0.15)
    assert "normal" in r.log[0].detail
    ramp = Network(shape={"kind": "ramp", "to_ms": 300, "over_s": 3})  # type: ignore[arg-type]
    [link] = network_faults(ramp)
    r = await run_fault(link, timed(openai_stream(4), 1.0))
    assert [(t - i) for i, t in enumerate(r.times)] == pytest.approx([0, 0.1, 0.2, 0.3, 0.3])


async def test_closing_a_delayed_stream_closes_its_input_under_a_pending_read() -> None:
    """Closing a LinkDelay stream whose read-ahead task waits inside the input's read stops
    that task and closes the input, so closing the outermost stream closes the whole chain."""
    clock = SystemClock()
    injector = Injector([LinkDelay(delay_ms=1)], 0, clock)
    (armed,) = injector.arm(injector.next_exchange(), make_request(), clock.now())
    closed: list[str] = []

    async def silent_upstream() -> AsyncIterator[Chunk]:
        try:
            yield Chunk(b"data: 1\n\n", clock.now())
            await asyncio.Event().wait()  # an upstream that goes quiet mid-stream
            yield Chunk(b"never", clock.now())
        finally:
            closed.append("upstream")

    raw = silent_upstream()
    stream = armed.apply(raw)
    first = await stream.__anext__()
    assert first.data == b"data: 1\n\n"
    await asyncio.sleep(0.02)  # the read-ahead is now inside raw's read
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed == ["upstream"]
    await raw.aclose()  # nothing left running inside it: no "already running"
