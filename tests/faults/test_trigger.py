"""The trigger wrapper: match, requests/every, window, probability and the seed."""

from __future__ import annotations

import random
from typing import Any

import pytest

from chaosstream.faults import Buffer, Disconnect, Match, Noop, Window
from chaosstream.faults.trigger import Injector, matches, window_edge
from chaosstream.testing import FakeClock, make_request, run_fault

EVENTS = [b"data: %d\n\n" % i for i in range(20)]


def fired(injector: Injector, n: int, **request: object) -> list[int]:
    """Which of ``n`` consecutive exchanges arm the injector's first fault."""
    hits = []
    for _ in range(n):
        exchange = injector.next_exchange()
        if injector.arm(exchange, make_request(**request), injector.clock.now()):  # type: ignore[arg-type]
            hits.append(exchange)
    return hits


def test_requests_and_every() -> None:
    """requests picks 1-based indices among matching requests; every picks each Nth."""
    assert fired(Injector([Noop(requests=[1, 3])], 0), 5) == [1, 3]
    assert fired(Injector([Noop(every=2)], 0), 6) == [2, 4, 6]


def test_requests_count_only_matching() -> None:
    """Indices count requests the match accepts, not all requests."""
    injector = Injector([Noop(requests=[2], match=Match(stream=True))], 0)
    hits = []
    for i, stream in enumerate([False, True, False, True, True], start=1):
        injector.next_exchange()
        if injector.arm(i, make_request(stream=stream), 0.0):
            hits.append(i)
    assert hits == [4]


def test_match_fields() -> None:
    """path glob, method, stream and header regex must all hold."""
    req = make_request("/v1/chat/completions", headers={"X-Team": "mobile-42"})
    assert matches(Match(path="/v1/*", method="post", stream=True), req)
    assert matches(Match(headers={"x-team": r"mobile-\d+"}), req)
    assert not matches(Match(path="/v1/messages"), req)
    assert not matches(Match(method="GET"), req)
    assert not matches(Match(stream=False), req)
    assert not matches(Match(headers={"x-team": "desktop"}), req)
    assert not matches(Match(headers={"x-missing": "."}), req)


def test_cors_preflight_is_matched_only_by_method_options() -> None:
    """A browser's preflight is not "request 1": only a fault naming OPTIONS sees it."""
    cors = {"Origin": "http://127.0.0.1:9", "Access-Control-Request-Method": "POST"}
    preflight = make_request(method="OPTIONS", stream=False, headers=cors, body={})
    assert not matches(None, preflight)
    assert not matches(Match(path="/v1/*"), preflight)
    assert matches(Match(method="options"), preflight)
    plain = make_request(method="OPTIONS", stream=False, body={})  # no Origin: not a preflight
    assert matches(None, plain)
    injector = Injector([Noop(requests=[1])], 0)
    hits = []
    for i, req in enumerate([preflight, make_request(), preflight, make_request()], start=1):
        injector.next_exchange()
        if injector.arm(i, req, 0.0):
            hits.append(i)
    assert hits == [2]


def test_probability_is_seeded_per_exchange() -> None:
    """probability draws once per exchange from the seed: same seed, same picks."""
    a = fired(Injector([Noop(probability=0.3)], 7), 100)
    b = fired(Injector([Noop(probability=0.3)], 7), 100)
    c = fired(Injector([Noop(probability=0.3)], 8), 100)
    assert a == b != c
    assert 15 <= len(a) <= 45


def test_disabled_never_fires() -> None:
    """enabled: false keeps a fault out of every exchange."""
    assert fired(Injector([Noop(enabled=False)], 0), 3) == []


def test_window_edges() -> None:
    """window_edge gives the next opening or closing time, None when nothing changes."""
    recurring = Window(every_s=10, for_s=2)
    assert window_edge(recurring, 1.0) == 2.0
    assert window_edge(recurring, 5.0) == 10.0
    fixed = Window(start_s=3, end_s=4)
    assert (window_edge(fixed, 1), window_edge(fixed, 3.5), window_edge(fixed, 5)) == (3, 4, None)


def test_fixed_window_over_is_not_armed() -> None:
    """A fault whose fixed window has closed is not armed at all (no cost)."""
    clock = FakeClock()
    injector = Injector([Noop(window=Window(end_s=1))], 0, clock)
    clock.advance(2)
    assert fired(injector, 1) == []


async def test_window_opening_hits_a_silent_open_stream() -> None:
    """A window that opens while upstream is silent cuts the stream at the opening."""
    fault = Disconnect(after_ms=0, mode="reset", window=Window(start_s=1.0))
    r = await run_fault(fault, [EVENTS[0], (5.0, EVENTS[1])])
    assert r.ended == "reset"
    assert r.elapsed_s == pytest.approx(1.0)
    assert r.chunks_out == [EVENTS[0]]


async def test_recurring_outage_holds_bytes_until_it_ends() -> None:
    """A buffer in a recurring window holds what arrives in the outage, lets it go at its end."""
    fault = Buffer(window=Window(every_s=2.0, for_s=0.5))
    chunks = [(0.6 + 0.25 * i, e) for i, e in enumerate(EVENTS[:10])]  # 0.6 .. 2.85 s
    r = await run_fault(fault, chunks)
    assert r.data == b"".join(EVENTS[:10])
    # Events arriving in 2.0-2.5 s (indexes 6, 7) leave together at 2.5 s; the rest as they come.
    assert r.times == pytest.approx([0.6, 0.85, 1.1, 1.35, 1.6, 1.85, 2.5, 2.6, 2.85])
    assert r.chunks_out[6] == EVENTS[6] + EVENTS[7]
    assert [e.action for e in r.log] == ["hold", "hold", "flush"]


async def test_recurring_outage_cuts_by_events_within_each_opening() -> None:
    """Positions count from the moment the window opened."""
    fault = Disconnect(after_events=2, window=Window(every_s=1.0, for_s=0.5, start_s=None))
    chunks = [(0.55 + 0.1 * i, e) for i, e in enumerate(EVENTS[:10])]
    r = await run_fault(fault, chunks)
    # Window shut 0.5-1.0: events at 0.55..0.95 pass; it opens at 1.0: 2 more, then the cut.
    assert len(r.chunks_out) == 7
    assert r.ended == "reset"


async def test_trigger_in_fault_log() -> None:
    """Every fault-log entry says which trigger fired the fault."""
    r = await run_fault(Disconnect(after_events=1, requests=[1], probability=0.99), EVENTS, seed=1)
    assert r.log[0].trigger == "request 1, probability 0.99"


def test_armed_faults_log_into_their_exchanges_own_list() -> None:
    """Events of faults armed for an exchange go to the list given to arm() (that exchange's
    record) and to the injector's log; a reset restarts ids but not those lists."""
    log: list[object] = []
    injector = Injector([Disconnect(after_events=1, mode="close")], 0, FakeClock(), log.append)
    first: list[object] = []
    (armed,) = injector.arm(injector.next_exchange(), make_request(), 0.0, first)
    injector.reset()
    second: list[object] = []
    (again,) = injector.arm(injector.next_exchange(), make_request(), 0.0, second)
    assert armed.ctx.exchange == again.ctx.exchange == 1
    again.ctx.fired("close", events=1)
    armed.ctx.fired("close", events=2)
    assert [e.events for e in first] == [2] and [e.events for e in second] == [1]  # type: ignore[attr-defined]
    assert log == [*second, *first]


@pytest.mark.parametrize(
    "draw",
    [
        lambda r: [r.random() for _ in range(3)],
        lambda r: [r.gauss(0, 1) for _ in range(3)],
        lambda r: [r.randrange(1000), r.choice("abcdef"), r.getrandbits(64), r.randbytes(4)],
        lambda r: [r.uniform(1, 2), r.lognormvariate(0, 1), r.sample(range(50), 3)],
        lambda r: r.getstate(),
    ],
)
def test_an_armed_faults_generator_draws_what_its_seed_gives(draw: Any) -> None:
    """ctx.rng, seeded only when it first draws, gives what random.Random('seed:exchange:index')
    gives, whichever method draws first; then it is a plain random.Random."""
    injector = Injector([Noop(), Noop()], seed=42, clock=FakeClock())
    (_, second) = injector.arm(3, make_request(), 0.0)
    assert draw(second.ctx.rng) == draw(random.Random("42:3:1"))
    assert type(second.ctx.rng) is random.Random
