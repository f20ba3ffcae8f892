"""The fault interface: Fault, Chunk, Match, Window, FaultContext, FaultEvent and friends."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from typing import Literal

import pytest
from pydantic import ValidationError

from chaosstream.faults.base import (
    MIN_WINDOW_S,
    Chunk,
    Fault,
    FaultContext,
    FaultEvent,
    Match,
    Refusal,
    Refuses,
    StreamEnd,
    SystemClock,
    Uploads,
    Window,
)
from chaosstream.faults.http_error import HttpError
from chaosstream.faults.latency import Latency
from chaosstream.faults.network import LinkUp
from chaosstream.faults.noop import Noop
from chaosstream.testing import FakeClock, make_request, run_fault
from tests.faults._streams import STREAM, WHOLE, timed


class Upper(Fault):
    """A fault written against the interface alone: upper-cases every chunk."""

    type: Literal["upper"] = "upper"

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        async for chunk in chunks:
            ctx.fired("upper", nbytes=len(chunk.data))
            yield Chunk(chunk.data.upper(), chunk.received)


class Bare(Fault):
    """A fault that keeps the base's identity ``apply``."""

    type: Literal["bare"] = "bare"


def context(clock: FakeClock, log: list[FaultEvent], *, started: float = 0.0) -> FaultContext:
    return FaultContext(
        exchange=4,
        request=make_request(),
        rng=random.Random(1),
        clock=clock,
        started=started,
        index=2,
        type="upper",
        log=log.append,
        trigger="request 4",
    )


# -- Fault ---------------------------------------------------------------------


async def test_one_method_makes_a_fault() -> None:
    """A subclass that defines only apply runs in the proxy's chain and logs through ctx."""
    r = await run_fault(Upper(), STREAM[:2])
    assert r.chunks_out == [c.upper() for c in STREAM[:2]]
    assert [(e.type, e.action, e.bytes) for e in r.log] == [
        ("upper", "upper", len(STREAM[0])),
        ("upper", "upper", len(STREAM[1])),
    ]


async def test_base_apply_is_the_identity_and_skipped() -> None:
    """The base apply passes the stream through, so acts_on_stream is False and it is skipped."""
    assert not Bare().acts_on_stream
    assert Upper().acts_on_stream and Noop().acts_on_stream
    r = await run_fault(Bare(), timed(STREAM, 0.1))
    assert (r.data, r.ended, r.log) == (WHOLE, None, [])
    assert r.times == pytest.approx([0.1 * i for i in range(len(STREAM))])


def test_base_abilities_default_off() -> None:
    """A fault asks for no framing, is not prompt and does not close the connection by default."""
    fault = Upper()
    assert (fault.needs_events, fault.prompt, fault.closes_connection) == (False, False, False)
    assert (fault.probability, fault.enabled) == (1.0, True)
    assert (fault.match, fault.requests, fault.every, fault.window) == (None, None, None, None)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"probability": 1.5}, "probability"),
        ({"probability": -0.1}, "probability"),
        ({"probability": float("nan")}, "probability"),
        ({"every": 0}, "every"),
        ({"surprise": 1}, "surprise"),
        ({"requests": "first"}, "requests"),
    ],
)
def test_common_trigger_fields_are_validated(fields: dict[str, object], field: str) -> None:
    """Out-of-range, non-finite, wrongly typed or unknown trigger fields are refused by name."""
    with pytest.raises(ValidationError) as err:
        Noop(**fields)  # type: ignore[arg-type]
    assert err.value.errors()[0]["loc"][0] == field


def test_optional_abilities_are_separate_protocols() -> None:
    """Refusing and upload shaping are protocols a fault opts into, not flags on the base."""
    assert isinstance(HttpError(status=429), Refuses)
    assert not isinstance(Noop(), Refuses)
    assert isinstance(LinkUp(bytes_per_s=100), Uploads)
    assert not isinstance(Latency(first_byte_ms=1), Uploads)


# -- Match and Window ----------------------------------------------------------


def test_match_fields_and_unknown_field() -> None:
    """Match keeps its fields as given and refuses a field it does not know."""
    m = Match(path="/v1/*", method="post", stream=True, headers={"x-team": "^mobile-"})
    assert (m.path, m.method, m.stream, m.headers) == (
        "/v1/*",
        "post",
        True,
        {"x-team": "^mobile-"},
    )
    with pytest.raises(ValidationError, match="paths"):
        Match(paths="/v1/*")  # type: ignore[call-arg]


def test_match_header_regex_checked_at_load() -> None:
    """A header regex RE2 cannot run (a backreference) is refused when the profile loads."""
    with pytest.raises(ValidationError, match="backreferences and lookaround"):
        Match(headers={"x-team": r"(a)\1"})


@pytest.mark.parametrize(
    "window",
    [
        {"start_s": 1.0},
        {"end_s": 2.0},
        {"start_s": 0, "end_s": 0.5},
        {"every_s": 10, "for_s": 2},
        {"every_s": MIN_WINDOW_S * 2, "for_s": MIN_WINDOW_S},
    ],
)
def test_window_accepts_one_kind(window: dict[str, float]) -> None:
    """A fixed span (either end optional) or a full recurring outage is a valid window."""
    assert Window(**window).model_dump(exclude_none=True) == window


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({}, "give start_s/end_s or every_s/for_s"),
        ({"start_s": 1, "every_s": 5, "for_s": 1}, "not both"),
        ({"every_s": 5}, "needs both every_s and for_s"),
        ({"for_s": 1}, "needs both every_s and for_s"),
        ({"every_s": 5, "for_s": 5}, "for_s must be shorter than every_s"),
        ({"start_s": 3, "end_s": 3}, "start_s must be before end_s"),
        ({"every_s": MIN_WINDOW_S / 2, "for_s": MIN_WINDOW_S / 4}, "greater than or equal"),
        ({"end_s": 0}, "greater than 0"),
        ({"start_s": float("inf")}, "finite"),
    ],
)
def test_window_refuses_contradictions(window: dict[str, float], message: str) -> None:
    """Each way a window can be empty, endless or contradictory gets its own message."""
    with pytest.raises(ValidationError, match=message):
        Window(**window)


# -- FaultContext and FaultEvent -----------------------------------------------


def test_context_fired_logs_position_time_and_trigger() -> None:
    """fired() logs who acted, where in the stream, and ms since the exchange started."""
    clock = FakeClock(start=10.0)
    log: list[FaultEvent] = []
    ctx = context(clock, log, started=10.0)
    clock.advance(0.25)
    ctx.fired("cut", events=3, nbytes=120, detail="why")
    assert log == [
        FaultEvent(
            exchange=4,
            type="upper",
            index=2,
            action="cut",
            at_ms=pytest.approx(250.0),  # type: ignore[arg-type]
            events=3,
            bytes=120,
            detail="why",
            trigger="request 4",
        )
    ]


def test_context_state_is_per_context_by_default() -> None:
    """Without a shared state dict, two contexts do not see each other's state."""
    log: list[FaultEvent] = []
    a, b = context(FakeClock(), log), context(FakeClock(), log)
    a.state["open"] = {1}
    assert b.state == {}
    assert (a.framed, a.proxy_started) == (False, 0.0)


def test_fault_event_as_dict_and_position() -> None:
    """as_dict rounds the time to 0.1 ms; position is everything but the time."""
    event = FaultEvent(1, "disconnect", 0, "reset", 840.2468, events=12, bytes=900, trigger="x")
    assert event.as_dict() == {
        "exchange": 1,
        "type": "disconnect",
        "index": 0,
        "action": "reset",
        "at_ms": 840.2,
        "events": 12,
        "bytes": 900,
        "detail": "",
        "trigger": "x",
    }
    later = FaultEvent(1, "disconnect", 0, "reset", 900.0, events=12, bytes=900, trigger="y")
    assert event.position() == later.position() == (1, "disconnect", 0, "reset", 12, 900, "")
    moved = FaultEvent(1, "disconnect", 0, "reset", 840.2468, events=13, bytes=900)
    assert moved.position() != event.position()


# -- StreamEnd, Refusal, SystemClock ---------------------------------------------


def test_stream_end_carries_mode_reason_and_keep_alive() -> None:
    """StreamEnd names how the stream ends; its message leads with the mode."""
    end = StreamEnd("close", "stream_error overloaded", keep_alive=True)
    assert (end.mode, end.reason, end.keep_alive) == ("close", "stream_error overloaded", True)
    assert str(end) == "close: stream_error overloaded"
    bare = StreamEnd("stall")
    assert (str(bare), bare.keep_alive) == ("stall", False)


def test_refusal_defaults_to_json_without_headers() -> None:
    """A refusal is JSON with no extra headers unless the fault says otherwise."""
    refusal = Refusal(503, b"{}")
    assert (refusal.content_type, refusal.headers) == ("application/json", {})
    assert Refusal(503, b"{}").headers is not refusal.headers


async def test_system_clock_sleeps_for_real() -> None:
    """SystemClock is monotonic, really sleeps, and returns at once for zero or less."""
    clock = SystemClock()
    t0 = clock.now()
    await clock.sleep(0.02)
    assert clock.now() - t0 >= 0.019
    t1 = time.monotonic()
    await clock.sleep(0)
    await clock.sleep(-5)
    assert time.monotonic() - t1 < 0.5  # generous: a loaded CI machine, not a 5 s sleep


async def test_system_clock_aims_at_the_deadline_on_a_busy_loop() -> None:
    """On a loop where every pass takes 20 ms (10 tasks blocking 2 ms each), plain timers
    wake about 50 ms late; the clock learns that lateness and sets its timers early, so
    its sleeps land near their deadline (and never wait less than half their length)."""
    import asyncio

    stop = False

    async def busy() -> None:
        while not stop:
            time.sleep(0.002)  # noqa: ASYNC251 -- blocks the loop on purpose, without CPU
            await asyncio.sleep(0)

    tasks = [asyncio.ensure_future(busy()) for _ in range(10)]
    clock = SystemClock()
    errors = []
    try:
        for _ in range(10):
            t0 = time.monotonic()
            await clock.sleep(0.15)
            errors.append(time.monotonic() - t0 - 0.15)
    finally:
        stop = True
        await asyncio.gather(*tasks)
    assert min(errors) >= -0.075
    assert errors[0] > 0.02  # the first sleep is as late as the loop makes it
    late = sorted(errors[6:])
    assert abs(late[1] + late[2]) / 2 < 0.015  # the median of the last four
