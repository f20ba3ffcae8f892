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
    # Logged as the hold begins, so a client that gives up during it has met it.
    assert r.log[0].at_ms == pytest.approx(0.0)


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


async def test_latency_headers_ms_holds_only_the_head() -> None:
    """headers_ms is the head's delay; in memory (no head) the body is untouched."""
    fault = Latency(headers_ms=250)
    assert fault.head_delay_ms(None) == 250  # type: ignore[arg-type]
    r = await run_fault(fault, STREAM)
    assert (r.data, r.times[-1]) == (WHOLE, 0.0)


async def _head_and_first_event(url: str) -> tuple[float, float]:
    """Seconds from send to the response head and to the first token, read with the
    OpenAI SDK (with_raw_response returns when the head is in)."""
    import time

    import openai

    from tests.test_fault_e2e import CHAT

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    start = time.monotonic()
    raw = await client.chat.completions.with_raw_response.create(**CHAT)
    head = time.monotonic() - start
    first = None
    async for part in raw.parse():  # type: ignore[attr-defined]
        if first is None and part.choices and part.choices[0].delta.content:
            first = time.monotonic() - start
    await client.close()
    assert first is not None
    return head, first


async def test_latency_headers_ms_with_the_openai_sdk() -> None:
    """Headers late: the SDK gets the head after headers_ms; the body is right behind it."""
    from tests.test_fault_e2e import chaos

    async with chaos([{"type": "latency", "headers_ms": 400}]) as (proxy, url, _m):
        head, first = await _head_and_first_event(url)
    assert 0.38 <= head < 1.5
    assert first - head < 0.3
    assert [e.action for e in proxy.fault_log][:1] == ["delay_headers"]


async def test_network_latency_delays_the_head_and_overlaps_the_body() -> None:
    """The network's one-way delay holds the head too; the body's delay overlaps it."""
    from chaosstream.mock import MockSettings
    from tests.test_fault_e2e import chaos

    slow_first = MockSettings(ttft_ms=300, tokens_per_s=0, tokens=20)
    async with chaos([], network={"latency_ms": 200}, settings=slow_first) as (_p, url, _m):
        head, first = await _head_and_first_event(url)
    # upload 200 ms + head 200 ms; the first token: upload 200 + TTFT 300 + down 200, not
    # + another 200 for the head.
    assert 0.38 <= head < 1.0
    assert 0.68 <= first < 1.05
