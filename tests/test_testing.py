"""chaosstream.testing, the public in-memory harness: fake clock, requests, run_fault."""

from __future__ import annotations

import asyncio
import time

import pytest

from chaosstream.faults.base import Match
from chaosstream.faults.disconnect import Disconnect
from chaosstream.faults.http_error import HttpError
from chaosstream.faults.latency import Latency
from chaosstream.faults.noop import Noop
from chaosstream.testing import FakeClock, FaultResult, make_request, run_fault
from tests.faults._streams import STREAM, WHOLE


async def test_fake_clock_orders_concurrent_sleepers() -> None:
    """Two sleepers on the fake clock wake in deadline order at their own times."""
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, s: float) -> None:
        await clock.sleep(s)
        woke.append((name, clock.now()))

    await asyncio.gather(sleeper("late", 2.0), sleeper("early", 0.5))
    await clock.aclose()
    assert woke == [("early", 0.5), ("late", 2.0)]


async def test_fake_clock_sleeps_take_no_real_time() -> None:
    """An hour of virtual sleep returns at once and moves now() by exactly an hour."""
    clock = FakeClock(start=5.0)
    real = time.monotonic()
    await clock.sleep(3600)
    await clock.aclose()
    assert clock.now() == 5.0 + 3600
    assert time.monotonic() - real < 5.0  # generous: a loaded CI machine, not an hour


async def test_fake_clock_advance_and_non_positive_sleep() -> None:
    """advance() moves time without sleeping; a sleep of zero or less leaves time alone."""
    clock = FakeClock()
    clock.advance(1.5)
    await clock.sleep(0)
    await clock.sleep(-2)
    assert clock.now() == 1.5
    await clock.sleep(0.5)
    await clock.aclose()
    assert clock.now() == 2.0


async def test_fake_clock_cancelled_sleeper_does_not_move_time() -> None:
    """A sleep cancelled before its deadline (a lost race) does not drag the clock to it."""
    clock = FakeClock()
    far = asyncio.ensure_future(clock.sleep(100.0))
    await asyncio.sleep(0)
    far.cancel()
    await clock.sleep(1.0)
    await clock.aclose()
    assert far.cancelled()
    assert clock.now() == 1.0


def test_make_request_as_the_proxy_builds_it() -> None:
    """The provider follows the path, the body defaults to the stream flag, headers lower-case."""
    req = make_request(headers={"X-Team": "mobile"})
    assert (req.method, req.path, req.provider, req.stream) == (
        "POST",
        "/v1/chat/completions",
        "openai",
        True,
    )
    assert (req.body, req.json, req.headers) == (
        b'{"stream": true}',
        {"stream": True},
        {"x-team": "mobile"},
    )
    assert make_request("/v1/messages", stream=False).provider == "anthropic"
    assert make_request("/v1/messages", websocket=True).provider == "sse"
    custom = make_request("/sse", method="GET", body={"q": [1]})
    assert (custom.method, custom.provider, custom.json, custom.body) == (
        "GET",
        "sse",
        {"q": [1]},
        b'{"q": [1]}',
    )


async def test_run_fault_timed_chunks_arrive_on_schedule() -> None:
    """A (at_s, data) chunk arrives at_s after the start; plain bytes follow the one before."""
    chunks: list[bytes | tuple[float, bytes]] = [STREAM[0], (0.4, STREAM[1]), STREAM[2]]
    r = await run_fault(Noop(), chunks)
    assert r.times == [0.0, 0.4, 0.4]
    assert (r.chunks_out, r.elapsed_s, r.fired, r.ended) == (STREAM[:3], 0.4, True, None)


async def test_run_fault_frames_only_when_asked() -> None:
    """One write of many events stays one chunk, unless a fault asks for events or framed=True."""
    one_write = [WHOLE]
    assert (await run_fault(Noop(), one_write)).chunks_out == [WHOLE]
    assert (await run_fault(Noop(), one_write, framed=True)).chunks_out == STREAM
    cut = await run_fault(Disconnect(after_events=2), one_write)  # needs events: framed
    assert cut.chunks_out == STREAM[:2]
    whole = await run_fault(Disconnect(after_events=2), one_write, framed=False)
    # Unframed, the one write counts as one event: below the cut, so all of it passes.
    assert (whole.chunks_out, whole.ended, whole.log) == ([WHOLE], None, [])


async def test_run_fault_runs_a_chain_in_order() -> None:
    """A list of faults runs in order: the delay, then the cut, both in the log."""
    r = await run_fault([Latency(first_byte_ms=200), Disconnect(after_events=3)], STREAM)
    assert r.chunks_out == STREAM[:3]
    assert r.ended == "reset"
    assert [e.type for e in r.log] == ["latency", "disconnect"]
    assert r.elapsed_s == pytest.approx(0.2)


async def test_run_fault_goes_through_the_trigger() -> None:
    """A fault its trigger keeps out does not fire: fired is False and the bytes pass."""
    miss = await run_fault(Disconnect(after_events=0, requests=[2]), STREAM)
    assert (miss.fired, miss.data, miss.log) == (False, WHOLE, [])
    other = await run_fault(HttpError(status=503, match=Match(path="/v1/messages")), STREAM)
    assert (other.fired, other.refusal, other.data) == (False, None, WHOLE)


async def test_run_fault_refusal_is_logged_and_stops_the_stream() -> None:
    """A refusing fault's response is the result, logged with its status; no chunk is sent."""
    r = await run_fault([HttpError(status=503), Noop()], STREAM)
    assert r.refusal is not None and r.refusal.status == 503
    assert (r.chunks_out, r.times) == ([], [])
    assert [(e.action, e.detail, e.trigger) for e in r.log] == [("refuse", "status 503", "always")]


async def test_run_fault_seeded() -> None:
    """The seed reaches the fault's generator: same seed, same run; another seed, another."""
    fault = Latency(first_byte_ms=100, jitter_ms=90)
    runs = [await run_fault(fault, STREAM, seed=s) for s in (1, 1, 2)]
    assert runs[0].times == runs[1].times
    assert runs[0].times != runs[2].times


async def test_run_fault_on_a_given_clock() -> None:
    """With the caller's clock, times count from its current time and the clock stays usable."""
    clock = FakeClock(start=100.0)
    r = await run_fault(Latency(first_byte_ms=300), STREAM[:2], clock=clock)
    assert r.times == [0.3, 0.3]
    assert clock.now() == pytest.approx(100.3)
    await clock.sleep(1.0)  # not closed by run_fault: the caller still owns it
    assert clock.now() == pytest.approx(101.3)
    await clock.aclose()


def test_fault_result_data_joins_chunks() -> None:
    """FaultResult.data is the output chunks joined, in order."""
    result = FaultResult([b"ab", b"", b"c"], None, [], 0.0)
    assert (result.data, result.fired, result.refusal, result.times) == (b"abc", True, None, [])
