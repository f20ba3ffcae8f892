"""The latency fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator

import pytest

from chaosstream.faults.latency import Latency
from chaosstream.testing import FaultResult, run_fault
from tests.faults._streams import STREAM, WHOLE, openai_stream, timed


async def test_latency_first_byte() -> None:
    """The first byte leaves first_byte_ms late; the rest follow without extra delay."""
    r = await run_fault(Latency(first_byte_ms=300), STREAM)
    assert r.times[0] == pytest.approx(0.3)
    assert r.times[-1] == pytest.approx(0.3)
    assert r.data == WHOLE
    assert [e.action for e in r.log] == ["delay_first_byte"]
    # Logged as the hold begins, so a client that gives up during it has met it.
    assert r.log[0].at_ms == pytest.approx(0.0)


async def test_a_first_byte_delay_is_prompt_and_then_inert() -> None:
    """A first-byte-only delay lets the proxy batch writes (prompt); after the first chunk
    the fault hands out its input's own reads, and closing it closes its input."""
    from chaosstream.faults.base import Chunk

    assert Latency(first_byte_ms=300).prompt and Latency(headers_ms=5).prompt
    assert not Latency(first_byte_ms=300, jitter_ms=5).prompt
    assert not Latency(per_event_ms=1).prompt
    closed: list[bool] = []

    async def source() -> AsyncIterator[Chunk]:
        try:
            for i in range(3):
                yield Chunk(b"data: %d\n\n" % i, 0.0)
        finally:
            closed.append(True)

    r = await run_fault(Latency(first_byte_ms=50), timed(STREAM, 0.01))
    assert r.times[0] == pytest.approx(0.05) and r.times[-1] == pytest.approx(0.1)
    stream = Latency(first_byte_ms=0).apply(source(), None)  # type: ignore[arg-type]
    assert (await stream.__anext__()).data == b"data: 0\n\n"
    nxt = stream.__anext__()
    assert type(nxt).__name__ == "async_generator_asend"  # the input's own read, as is
    assert (await nxt).data == b"data: 1\n\n"
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed == [True]


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


def _delays_ms(r: FaultResult, every_s: float) -> list[float]:
    """Each event's delay: when it left less when it arrived (events every_s apart)."""
    return [(t - i * every_s) * 1000.0 for i, t in enumerate(r.times)]


SPREAD = timed(openai_stream(1500), 1.0)  # far apart: no delay ever waits on the one before


@pytest.mark.parametrize("distribution", ["uniform", "normal", "pareto", "pareto_normal"])
async def test_latency_distribution_has_its_shape(distribution: str) -> None:
    """Jitter around per_event_ms=100 with jitter_ms=20: mean 100 for every distribution;
    uniform flat within +/-20, normal 68 % within one deviation, the Pareto kinds skewed
    to late (median below the mean, a long right tail, never earlier than netem's floor)."""
    fault = Latency(per_event_ms=100, jitter_ms=20, distribution=distribution)  # type: ignore[arg-type]
    d = _delays_ms(await run_fault(fault, SPREAD, seed=5), 1.0)[1:]
    mean, sd, med = statistics.fmean(d), statistics.pstdev(d), statistics.median(d)
    assert mean == pytest.approx(100, abs=2.5)
    if distribution == "uniform":
        assert min(d) >= 80 and max(d) <= 120 and sd == pytest.approx(20 / 3**0.5, rel=0.1)
        return
    assert sd == pytest.approx(20, rel=0.2)
    if distribution == "normal":
        within = sum(abs(x - 100) <= 20 for x in d) / len(d)
        assert within == pytest.approx(0.683, abs=0.05) and abs(med - mean) < 2.5
        return
    assert med < mean - 1.5 and max(d) > 100 + 3 * 20  # skewed late, heavy tail
    if distribution == "pareto":
        assert min(d) >= 100 - 0.578 * 20  # Pareto(3) at mean 0, sd 1 is never below -0.577


async def test_latency_ramp_and_waves_follow_the_clock() -> None:
    """A ramp adds from_ms..to_ms over over_s then holds; sine and sawtooth cycle by period."""
    ramp = Latency(shape={"kind": "ramp", "from_ms": 0, "to_ms": 1000, "over_s": 10})  # type: ignore[arg-type]
    d = _delays_ms(await run_fault(ramp, timed(openai_stream(12), 2.0)), 2.0)
    assert d[:-1] == pytest.approx(
        [0, 200, 400, 600, 800, 1000, 1000, 1000, 1000, 1000, 1000, 1000]
    )
    saw = Latency(shape={"kind": "sawtooth", "period_s": 4, "amplitude_ms": 400})  # type: ignore[arg-type]
    d = _delays_ms(await run_fault(saw, timed(openai_stream(8), 1.0)), 1.0)
    assert d[:8] == pytest.approx([0, 100, 200, 300, 0, 100, 200, 300])
    sine = Latency(shape={"kind": "sine", "period_s": 4, "amplitude_ms": 400})  # type: ignore[arg-type]
    d = _delays_ms(await run_fault(sine, timed(openai_stream(8), 1.0)), 1.0)
    assert d[:8] == pytest.approx([0, 200, 400, 200, 0, 200, 400, 200])


async def test_latency_pareto_is_seeded() -> None:
    """Same seed, same heavy-tailed delays; another seed, others."""
    fault = Latency(per_event_ms=50, jitter_ms=30, distribution="pareto")
    runs = [await run_fault(fault, timed(STREAM, 1.0), seed=s) for s in (4, 4, 5)]
    assert runs[0].times == runs[1].times != runs[2].times


def test_latency_shape_fields_are_checked() -> None:
    """A ramp without to_ms, or a wave with ramp fields, is refused naming the field."""
    from chaosstream.faults.profile import profile_from_data
    from chaosstream.yamlfile import InputError

    for shape, words in (
        ({"kind": "ramp", "over_s": 3}, "a ramp needs to_ms and over_s"),
        ({"kind": "sine", "period_s": 1, "amplitude_ms": 5, "to_ms": 3}, "belong to ramp"),
        ({"kind": "square", "period_s": 1}, "'ramp', 'sine' or 'sawtooth'"),
    ):
        data = {"version": 1, "name": "x", "faults": [{"type": "latency", "shape": shape}]}
        with pytest.raises(InputError, match=words):
            profile_from_data(data, "p.yaml")
