"""The wrapper around every fault: match, request selection, window, probability, seed.

Toxiproxy keeps ``toxicity`` and direction in its ``ToxicWrapper`` rather than in
each toxic; we do the same for every trigger field, so a fault module only
describes what happens once it fires.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from chaosstream.faults._feed import Feed, closing
from chaosstream.faults._regex import MAX_HEADER_VALUE_CHARS, header_matches
from chaosstream.faults.base import (
    Chunk,
    Clock,
    Fault,
    FaultContext,
    FaultEvent,
    Match,
    Refusal,
    Refuses,
    RequestInfo,
    SystemClock,
    Uploads,
    Window,
)

__all__ = [
    "MAX_HEADER_VALUE_CHARS",
    "MIN_GATE_STEP_S",
    "Armed",
    "Injector",
    "describe_trigger",
    "is_preflight",
    "matches",
    "waits_on_head",
    "window_edge",
    "window_open",
    "window_over",
]

MIN_GATE_STEP_S = 0.001
"""The window gate wakes at most once a millisecond, whatever the window says; an
edge is then seen up to 1 ms late (windows are at least MIN_WINDOW_S = 10 ms long)."""


def is_preflight(request: RequestInfo) -> bool:
    """Is ``request`` a browser's CORS preflight (OPTIONS with Origin and
    Access-Control-Request-Method)?"""
    return (
        request.method.upper() == "OPTIONS"
        and "origin" in request.headers
        and "access-control-request-method" in request.headers
    )


def matches(match: Match | None, request: RequestInfo) -> bool:
    """True when ``request`` satisfies every field ``match`` gives.

    A CORS preflight satisfies only a match naming method ``OPTIONS``: a page calling a
    provider from its own origin sends one before its POST, and "request 1" of a
    profile means that POST (the preflight's answer is the provider's edge's, not a
    model's; Fetch standard 3.2, CORS protocol).
    """
    if is_preflight(request) and (match is None or (match.method or "").upper() != "OPTIONS"):
        return False
    if match is None:
        return True
    if match.path is not None and not fnmatch.fnmatchcase(request.path, match.path):
        return False
    if match.host is not None and not fnmatch.fnmatchcase(request.host, match.host.lower()):
        return False
    if match.method is not None and match.method.upper() != request.method.upper():
        return False
    if match.stream is not None and match.stream != request.stream:
        return False
    if match.headers:
        for name, pattern in match.headers.items():
            value = request.headers.get(name.lower())
            # RE2, compiled at load and cached: linear time, whatever the pattern and value.
            if value is None or not header_matches(pattern, value):
                return False
    return True


def window_open(window: Window, t: float) -> bool:
    """Is the window open ``t`` seconds after the proxy started?"""
    if window.every_s is not None:
        return (t % window.every_s) < (window.for_s or window.every_s)
    if window.start_s is not None and t < window.start_s:
        return False
    return not (window.end_s is not None and t >= window.end_s)


def window_over(window: Window, t: float) -> bool:
    """True when a fixed window has closed for good by time ``t``."""
    return window.every_s is None and window.end_s is not None and t >= window.end_s


def window_edge(window: Window, t: float) -> float | None:
    """When the window next opens or closes after ``t`` (proxy seconds); None if never."""
    if window.every_s is not None:
        period, length = window.every_s, window.for_s or window.every_s
        base = t - (t % period)
        return base + length if (t % period) < length else base + period
    if window.start_s is not None and t < window.start_s:
        return window.start_s
    if window.end_s is not None and t < window.end_s:
        return window.end_s
    return None


_ABILITIES: dict[type[Fault], tuple[bool, bool]] = {}


def _abilities(fault: Fault) -> tuple[bool, bool]:
    """Is ``fault`` a :class:`Refuses`, an :class:`Uploads`? Asked once per fault class:
    isinstance on a runtime-checkable Protocol looks up each of its members every time
    (about 10 us), and a fault's methods are its class's."""
    kind = type(fault)
    known = _ABILITIES.get(kind)
    if known is None:
        known = _ABILITIES[kind] = (isinstance(fault, Refuses), isinstance(fault, Uploads))
    return known


@dataclass(slots=True)
class Armed:
    """A fault that fires on one exchange, with its context."""

    fault: Fault
    ctx: FaultContext
    refuses: bool = field(init=False)
    """The fault may answer the request itself (:class:`Refuses`)."""
    uploads: bool = field(init=False)
    """The fault shapes the request body too (:class:`Uploads`)."""

    def __post_init__(self) -> None:
        self.refuses, self.uploads = _abilities(self.fault)

    async def refuse(self) -> Refusal | None:
        """The fault's own response, if it refuses this request while its window is open."""
        if not self.refuses:
            return None
        fault = cast(Refuses, self.fault)  # refuses says so; isinstance would cost 10 us
        window = self.fault.window
        if window is not None and not window_open(
            window, self.ctx.clock.now() - self.ctx.proxy_started
        ):
            return None
        return await fault.refuse(self.ctx)

    def release(self) -> None:
        """Tell a refusing fault that an exchange it let through has ended."""
        if self.refuses:
            cast(Refuses, self.fault).release(self.ctx)

    def apply(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """The response stream with this fault applied (inside its window, if it has one)."""
        window = self.fault.window
        if window is None:
            return self.fault.apply(chunks, self.ctx)
        return _gated(self.fault, self.ctx, window, chunks)


async def _gated(
    fault: Fault, ctx: FaultContext, window: Window, chunks: AsyncIterator[Chunk]
) -> AsyncIterator[Chunk]:
    """Chunks pass untouched while the window is shut; each time it opens, the fault
    gets the chunks that arrive until it shuts again.

    The gate wakes at the window's edges on the clock, not at the next chunk, so
    a recurring outage hits a stream that is open but silent, and a fault that
    holds bytes (``buffer``) lets them go the moment the outage ends. Every
    opening is a fresh application: positions (``after_ms``, ``after_events``
    ...) count from the moment the window opened.
    """
    feed = Feed(chunks, ctx.clock)
    base = ctx.proxy_started
    try:
        while not feed.done:
            now = ctx.clock.now()
            edge = window_edge(window, now - base)
            # The floor keeps the gate from spinning: float rounding (or a window built
            # without validation) must never give a deadline that is past or a hair away.
            deadline = None if edge is None else max(base + edge, now + MIN_GATE_STEP_S)
            if window_open(window, now - base):
                ctx.started = now
                # Closed before the feed: its read-ahead may be inside the feed's read.
                async with closing(fault.apply(feed.until(deadline), ctx)) as out:
                    async for chunk in out:
                        yield chunk
            else:
                async for chunk in feed.until(deadline):
                    yield chunk
            if deadline is None:
                break
            if ctx.clock.now() < deadline and not feed.done:
                # The fault stopped reading before the window shut: it is done with the stream.
                async for chunk in feed.until(None):
                    yield chunk
    finally:
        await feed.aclose()


class _SeededOnUse(random.Random):
    """``random.Random(key)``, seeded at its first draw.

    Seeding hashes the key (SHA-512) and fills the Mersenne Twister's 2.5 KB state,
    about 5 us, and most armed faults never draw (a disconnect, an error on request
    N). At the first use the instance becomes a plain ``random.Random`` seeded with
    ``key``: every number it gives is the one ``random.Random(key)`` gives, and later
    draws cost nothing extra. Everything ``random.Random`` draws goes through
    ``random()`` or ``getrandbits()``; the state methods count as a use too.
    """

    def __init__(self, key: str) -> None:  # random.Random.__init__ would seed now
        self._key = key
        self.gauss_next = None

    def random(self) -> float:
        _seed_now(self)
        return random.Random.random(self)

    def getrandbits(self, k: int, /) -> int:
        _seed_now(self)
        return random.Random.getrandbits(self, k)

    def getstate(self) -> tuple[Any, ...]:
        _seed_now(self)
        return random.Random.getstate(self)

    def setstate(self, state: tuple[Any, ...]) -> None:
        _seed_now(self)
        random.Random.setstate(self, state)

    def seed(self, a: Any = None, version: int = 2) -> None:
        _seed_now(self)
        random.Random.seed(self, a, version)


def _seed_now(rng: random.Random) -> None:
    # A function, not a method: a caller may hold a bound method of the old class
    # (``gauss`` keeps ``self.random``) and call it after the class changed.
    key = rng.__dict__.pop("_key", None)
    if key is not None:
        rng.__class__ = random.Random
        random.Random.seed(rng, key)


def describe_trigger(fault: Fault, nth: int) -> str:
    """Why ``fault`` fires on its ``nth`` matching request, for the fault log."""
    parts = []
    if fault.requests is not None:
        parts.append(f"request {nth}")
    elif fault.every is not None:
        parts.append(f"every {fault.every} (request {nth})")
    if fault.probability < 1.0:
        parts.append(f"probability {fault.probability:g}")
    if fault.window is not None:
        parts.append("window")
    return ", ".join(parts) or "always"


class Injector:
    """The live faults of a profile: decides, once per exchange, which ones fire.

    Same faults + same seed + same sequence of requests gives the same decisions:
    every (exchange, fault) pair draws from its own generator seeded with
    ``seed:exchange:fault``, so timing and the order faults run in change nothing.
    """

    def __init__(
        self,
        faults: Sequence[Fault],
        seed: int,
        clock: Clock | None = None,
        log: Callable[[FaultEvent], None] | None = None,
    ) -> None:
        self.faults = list(faults)
        self.clock = clock or SystemClock()
        self._log = log or (lambda event: None)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """Start over: request counters, window clock and (optionally) the seed."""
        if seed is not None:
            self.seed = seed
        self.started = self.clock.now()
        self._matched = [0] * len(self.faults)
        self._state: list[dict[str, Any]] = [{} for _ in self.faults]
        self._exchanges = itertools.count(1)

    def next_exchange(self) -> int:
        """The number of the next exchange (1, 2, ... since the last reset).

        It seeds the draws and names the request in triggers and the fault log, so it
        starts over with the counters; it is not unique over a proxy's life (an exchange
        from before a reset may still be open with the same number). Route what an
        exchange's faults log by the ``record`` list given to :meth:`arm`, never by it.
        """
        return next(self._exchanges)

    def arm(
        self,
        exchange: int,
        request: RequestInfo,
        started: float,
        record: list[FaultEvent] | None = None,
    ) -> list[Armed]:
        """The faults that fire on this exchange, in profile order.

        A fault whose ``match.stream`` waits on the response (see :func:`waits_on_head`)
        is left out here; :meth:`arm_on_response` decides it once the head is in.
        ``record`` (the exchange record's fault list) gets every event these faults
        log, before the injector's own log hears of it.
        """
        armed: list[Armed] = []
        for index, fault in enumerate(self.faults):
            if waits_on_head(fault, request):
                continue
            a = self._arm_one(index, fault, exchange, request, started, record)
            if a is not None:
                armed.append(a)
        _set_framed(armed, request)
        return armed

    def arm_on_response(
        self,
        exchange: int,
        request: RequestInfo,
        started: float,
        armed: list[Armed],
        record: list[FaultEvent] | None = None,
    ) -> None:
        """Decide the faults :meth:`arm` left to the response head, adding them to ``armed``.

        Call it once the head is in and ``request.stream`` says what the response is
        (a stream by its content type, whatever the request said), and only when
        :meth:`arm` saw a request that did not ask to stream. Their ``requests`` and
        ``every`` counters count the exchanges that matched once the head was known.
        ``record`` is :meth:`arm`'s.
        """
        before = dataclasses.replace(request, stream=False)
        added = False
        for index, fault in enumerate(self.faults):
            if not waits_on_head(fault, before):
                continue
            a = self._arm_one(index, fault, exchange, request, started, record)
            if a is not None:
                armed.append(a)
                added = True
        if added:
            armed.sort(key=lambda a: a.ctx.index)
            _set_framed(armed, request)

    def may_arm_on_response(self, request: RequestInfo) -> bool:
        """Could a fault that needs frames arm once the head shows a stream? (No counters,
        windows or draws are consulted: a yes may turn out to be a no.)"""
        streaming = dataclasses.replace(request, stream=True)
        return any(
            waits_on_head(f, request)
            and f.enabled
            and f.acts_on_stream
            and f.needs_events
            and matches(f.match, streaming)
            for f in self.faults
        )

    def _arm_one(
        self,
        index: int,
        fault: Fault,
        exchange: int,
        request: RequestInfo,
        started: float,
        record: list[FaultEvent] | None = None,
    ) -> Armed | None:
        if not fault.enabled or not matches(fault.match, request):
            return None
        self._matched[index] += 1
        nth = self._matched[index]
        if fault.requests is not None and nth not in fault.requests:
            return None
        if fault.every is not None and nth % fault.every:
            return None
        if fault.window is not None and window_over(fault.window, started - self.started):
            return None
        rng = _SeededOnUse(f"{self.seed}:{exchange}:{index}")
        if fault.probability < 1.0 and rng.random() >= fault.probability:
            return None
        ctx = FaultContext(
            exchange=exchange,
            request=request,
            rng=rng,
            clock=self.clock,
            started=started,
            index=index,
            type=fault.type,
            log=self._log,
            record=record,
            proxy_started=self.started,
            trigger=describe_trigger(fault, nth),
            state=self._state[index],
        )
        return Armed(fault, ctx)


def waits_on_head(fault: Fault, request: RequestInfo) -> bool:
    """Does ``fault``'s match wait for the response head before it is decided?

    ``match.stream`` asks whether the exchange is a stream, and a request that did
    not ask to stream may still get one: useChat's POST sends neither
    ``"stream": true`` nor ``Accept: text/event-stream``, yet the route answers a
    UI message stream. So such a fault is decided on the response (its content
    type), unless it must act before upstream is called: a refusal or an upload
    fault is decided on the request alone.
    """
    m = fault.match
    return (
        m is not None
        and m.stream is not None
        and not request.stream
        and not request.websocket
        and not any(_abilities(fault))
    )


def _set_framed(armed: list[Armed], request: RequestInfo) -> None:
    # The proxy frames the stream into events when any fault acting on it asks.
    framed = request.websocket or any(a.fault.needs_events for a in armed if a.fault.acts_on_stream)
    for a in armed:
        a.ctx.framed = framed
