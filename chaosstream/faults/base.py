"""The fault interface: one async transform over a stream of chunks.

A fault is a pydantic model (its fields are its settings and its documentation)
with one method, :meth:`Fault.apply`, an async generator that reads chunks and
yields chunks. Like Toxiproxy's toxics, all data read from the input must reach
the output unless the fault exists to drop it.

Two abilities are optional and separate from the base interface:

* :class:`Refuses` -- answers the request itself before any upstream call
  (``http_error``, ``concurrency_limit``).
* :class:`Uploads` -- also acts on the request body (``network`` up direction).

Probability, match, request selection and windows are *not* a fault's business:
:mod:`chaosstream.faults.trigger` decides once per exchange whether a fault
takes part, so a fault's ``apply`` only ever runs when it fires.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from chaosstream.faults._regex import check_header_regex
from chaosstream.streams.providers import Provider

EndMode = Literal["reset", "close", "stall"]


@dataclass(slots=True)
class Chunk:
    """Bytes on their way to the client, stamped with the time the proxy got them.

    When any firing fault asks for events, the proxy frames the stream first and
    then every chunk holds exactly one raw SSE event (or one WebSocket message).
    """

    data: bytes
    received: float
    """Clock time the proxy read these bytes; latency sleeps only for what is left."""


class Clock(Protocol):
    """Time source of an exchange; the testing helper swaps in a fake one."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Monotonic wall clock and real sleeps that aim at their deadline.

    An event loop busy with many streams runs a timer, then the task it wakes, late:
    by one pass over everything else that was ready (with 1,000 streams starting
    together, tens to hundreds of ms), so every delay came out long (issue 17: a
    300 ms first byte read +22 % at p50). The clock keeps a running average of how
    late its wake-ups were and sets each timer that much early, at most half the
    sleep; a wake-up that finds the loop quicker than that sleeps the rest, unless
    less is left than a second timer would likely be late (or under a millisecond,
    the loop's timer resolution). Delays then land on their deadline on average
    instead of always after it.
    """

    __slots__ = ("_lead",)

    #: Weight of the newest wake-up in the running average of lateness.
    LEAD_WEIGHT = 0.25

    def __init__(self) -> None:
        self._lead = 0.0  # seconds: how late recent wake-ups were

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        due = time.monotonic() + seconds
        # uvloop's millisecond timers may fire a little early: never aim late for it.
        lead = max(0.0, min(self._lead, seconds / 2))
        await asyncio.sleep(seconds - lead)
        woke = time.monotonic()
        self._lead += (woke - (due - lead) - self._lead) * self.LEAD_WEIGHT
        rest = due - woke
        if rest >= max(0.001, self._lead):  # else a second timer would be later than this is early
            await asyncio.sleep(rest)


class StreamEnd(Exception):
    """Raised by a fault to end the stream the way a broken network would.

    ``reset`` aborts the TCP connection (RST), ``close`` ends the HTTP body
    cleanly without the terminal event and then closes the connection (FIN),
    ``stall`` keeps the socket open and sends nothing more. With
    ``keep_alive`` a ``close`` ends only the body and leaves the connection
    open, as a provider does after an in-stream error.
    """

    def __init__(self, mode: EndMode, reason: str = "", *, keep_alive: bool = False) -> None:
        super().__init__(f"{mode}: {reason}" if reason else mode)
        self.mode: EndMode = mode
        self.reason = reason
        self.keep_alive = keep_alive


@dataclass(slots=True)
class RequestInfo:
    """What the proxy knows about a request before calling upstream."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Lower-cased names; the last value wins for repeated headers."""
    body: bytes
    provider: Provider
    stream: bool
    """From the JSON body's ``stream`` field or an ``Accept: text/event-stream`` header."""
    json: Any = None
    """The parsed JSON body, or None when it is not JSON."""
    websocket: bool = False
    """A WebSocket exchange: every chunk is one message, and a message is an event."""
    host: str = ""
    """The host the request is for, lower-cased, no port: the one the client called through
    the intercepting proxy (``api.openai.com``), else the upstream's."""


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One entry of the fault log: what fired, on which exchange, and where."""

    exchange: int
    type: str
    index: int
    """Position of the fault in the profile's list (network faults come first)."""
    action: str
    at_ms: float
    """Milliseconds since the exchange started."""
    events: int = 0
    """Data events (or WebSocket messages) delivered before the fault acted."""
    bytes: int = 0
    """Bytes delivered before the fault acted."""
    detail: str = ""
    trigger: str = ""
    """Why the fault fired on this exchange, e.g. ``request 1`` or ``probability 0.5``."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "type": self.type,
            "index": self.index,
            "action": self.action,
            "at_ms": round(self.at_ms, 1),
            "events": self.events,
            "bytes": self.bytes,
            "detail": self.detail,
            "trigger": self.trigger,
        }

    def position(self) -> tuple[int, str, int, str, int, int, str]:
        """Everything but the time: what seeded replay must reproduce exactly."""
        return (
            self.exchange,
            self.type,
            self.index,
            self.action,
            self.events,
            self.bytes,
            self.detail,
        )


@dataclass(slots=True)
class FaultContext:
    """What one firing fault gets for one exchange: the request, its seeded
    random generator, the clock, and a way to log what it did."""

    exchange: int
    request: RequestInfo
    rng: random.Random
    clock: Clock
    started: float
    index: int
    type: str
    log: Callable[[FaultEvent], None]
    proxy_started: float = 0.0
    trigger: str = ""
    """Why the fault fires on this exchange; copied into every fault-log entry."""
    framed: bool = False
    """True when every chunk is one whole SSE event or WebSocket message: keep chunks whole."""
    passed_events: int = 0
    passed_bytes: int = 0
    """Data events and bytes the proxy passed on before ``apply`` started, while the
    fault's :meth:`Fault.horizon` said it would pass them untouched; ``apply`` counts on
    from these. Both 0 when ``apply`` reads the stream from its first byte."""
    state: dict[str, Any] = field(default_factory=dict)
    """Per-fault state shared by the exchanges of one proxy run (``concurrency_limit``'s
    open-stream count); it starts over when the proxy is reset."""
    record: list[FaultEvent] | None = None
    """The exchange record's fault list: each event goes there before ``log`` hears of it."""

    def fired(self, action: str, *, events: int = 0, nbytes: int = 0, detail: str = "") -> None:
        """Record that the fault acted, at the current position of the stream."""
        event = FaultEvent(
            exchange=self.exchange,
            type=self.type,
            index=self.index,
            action=action,
            at_ms=(self.clock.now() - self.started) * 1000.0,
            events=events,
            bytes=nbytes,
            detail=detail,
            trigger=self.trigger,
        )
        if self.record is not None:
            self.record.append(event)
        self.log(event)


@dataclass(frozen=True, slots=True)
class Horizon:
    """How much of a stream's start a fault passes on untouched (see :meth:`Fault.horizon`).

    The fault yields every frame as it reads it, at once, unchanged and unlogged, as
    long as, counting that frame, fewer than ``events`` data events (frames that
    dispatch: keep-alives do not count) and fewer than ``nbytes`` bytes have come by.
    None puts no bound on that count.
    """

    events: int | None = None
    nbytes: int | None = None


class Match(BaseModel):
    """Which requests a fault considers; every given field must match."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    host: str | None = Field(
        None,
        description="Glob on the host the request is for, e.g. `api.anthropic.com` or "
        "`*.openai.azure.com`: the host the client called through the intercepting proxy "
        "(`proxy --mode intercept`; such hosts are intercepted), else the upstream's host.",
    )
    path: str | None = Field(None, description="Glob on the request path, e.g. `/v1/*`.")
    method: str | None = Field(
        None,
        description="HTTP method, case-insensitive. A browser's CORS preflight (`OPTIONS` with "
        "`Origin` and `Access-Control-Request-Method`) is matched, and counted by "
        "`requests`/`every`, only by a fault that names `OPTIONS` here: it is the browser "
        "asking leave for a cross-origin call, not a request to the API.",
    )
    stream: bool | None = Field(
        None,
        description="Streaming requests only (true) or non-streaming only (false); read from "
        "the JSON body's `stream` field or an `Accept: text/event-stream` header.",
    )
    headers: dict[str, Annotated[str, AfterValidator(check_header_regex)]] | None = Field(
        None,
        description="Header name -> regular expression (RE2 syntax: no backreferences or "
        "lookaround) found in the value's first 8,192 characters; checked at load.",
    )


MIN_WINDOW_S = 0.01
"""Shortest recurring window period or outage: the gate wakes at most twice per period."""


class Window(BaseModel):
    """When a fault is active, in seconds since the proxy (or its last reset) started.

    Either a fixed span (`start_s`, `end_s`) or a recurring outage (`every_s`,
    `for_s`: active for `for_s` at the start of every `every_s` period). A window
    can open while a stream is already flowing, even a silent one: the fault
    acts from that moment on, and its positions (`after_events`, `after_ms`)
    count from the opening. When the window shuts the fault stops and the
    stream flows untouched; a `buffer` lets go of what it held, so a recurring
    `buffer` window is an outage that holds bytes until it ends.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    start_s: float | None = Field(None, ge=0, description="Active from this time.")
    end_s: float | None = Field(None, gt=0, description="Active until this time.")
    # A floor on recurring lengths: a 2 us window woke the loop every 2 us (100 % CPU).
    every_s: float | None = Field(
        None, ge=MIN_WINDOW_S, description="Period of a recurring outage (at least 0.01 s)."
    )
    for_s: float | None = Field(
        None, ge=MIN_WINDOW_S, description="Length of each recurring outage (at least 0.01 s)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Window:
        fixed = self.start_s is not None or self.end_s is not None
        recurring = self.every_s is not None or self.for_s is not None
        if fixed and recurring:
            raise ValueError("give start_s/end_s or every_s/for_s, not both")
        if recurring and (self.every_s is None or self.for_s is None):
            raise ValueError("a recurring window needs both every_s and for_s")
        if self.every_s is not None and self.for_s is not None and self.for_s >= self.every_s:
            raise ValueError("for_s must be shorter than every_s (else the window never closes)")
        if not fixed and not recurring:
            raise ValueError("give start_s/end_s or every_s/for_s")
        if self.start_s is not None and self.end_s is not None and self.start_s >= self.end_s:
            raise ValueError("start_s must be before end_s")
        return self


class Fault(BaseModel):
    """Base of every fault: the common trigger fields and the stream transform."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: str
    probability: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Chance the fault fires on an exchange, drawn once per exchange from the "
        "seeded generator.",
    )
    match: Match | None = Field(None, description="Only requests matching all of these.")
    requests: list[int] | None = Field(
        None,
        description="1-based indices among the requests this fault matches, e.g. `[1, 2]`.",
    )
    every: int | None = Field(None, ge=1, description="Every Nth matching request.")
    window: Window | None = Field(None, description="Only while this time window is open.")
    enabled: bool = Field(True, description="A disabled fault never fires.")
    hop: Literal["model", "browser"] | None = Field(
        None,
        description="With an app server between page and model (a scenario's `server:`, "
        "`check --app`): `model` acts on the app's calls to the model, `browser` on the page's "
        "calls to the app. Default: the model hop. One-proxy runs ignore it.",
    )

    @property
    def needs_events(self) -> bool:
        """True when ``apply`` wants one whole SSE event per chunk instead of any bytes."""
        return False

    def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        """Transform the response stream. The base passes it through untouched."""
        return chunks

    @property
    def prompt(self) -> bool:
        """True when ``apply`` never waits on anything but its input.

        Then whatever the chain yields between two upstream reads left upstream
        at the same moment, and the proxy writes it with one ``send`` instead of
        one per event. A fault that sleeps, runs timers, holds data or must keep
        its writes apart (``corrupt: split``) leaves this False.
        """
        return False

    @property
    def closes_connection(self) -> bool:
        """True when the fault may end the stream with a FIN (``StreamEnd("close")``).

        The proxy then answers with ``Connection: close`` so the client knows
        not to reuse the connection: the cut stays the only fault it meets.
        """
        return False

    def head_delay_ms(self, ctx: FaultContext) -> float:
        """How long the response head (status line and headers) is held back.

        The proxy holds the head for the sum over the firing faults, then sends
        it; the body's delays stay separate and count from each chunk's arrival.
        """
        return 0.0

    def first_byte_hold_ms(self, ctx: FaultContext) -> float | None:
        """When all ``apply`` does is hold the body's first bytes this many ms after they
        arrived and then pass everything untouched, that hold; None (the base): the fault
        acts on the body some other way.

        When every fault of the chain gives one (and none has a window), the proxy
        relays the body as a clean one with its first write held for their sum, logging
        ``delay_first_byte`` for each as the hold begins: the rest of the stream costs
        what a clean one does. The promise is the one :meth:`horizon` asks: the same
        output, fault log and end as ``apply`` gives.
        """
        return None

    def response_headers(self, headers: MutableMapping[str, str], ctx: FaultContext) -> None:
        """Edit the response head before it is sent (``gzip`` sets Content-Encoding).

        Called once per exchange on every fault that acts on the stream, before its
        ``apply``; ``headers`` are the end-to-end headers the client will get. The
        base leaves them alone.
        """

    def horizon(self, ctx: FaultContext) -> Horizon | None:
        """How far into the stream ``apply`` is sure to pass everything untouched.

        When every fault of a prompt chain gives one, the proxy passes whole upstream
        reads to the client itself (counting events, making no chunks) until the
        stream comes near the nearest horizon, and only then starts the chain, with
        ``ctx.passed_events`` / ``ctx.passed_bytes`` telling each ``apply`` what went
        by: an armed fault far from its trigger costs about what a clean stream does.
        A fault that promises this must give the same output, the same fault log and
        the same end as when it reads the stream from the start. None (the base):
        no promise, ``apply`` reads every chunk.
        """
        return None

    @property
    def acts_on_stream(self) -> bool:
        """False when ``apply`` is the identity, so the proxy can skip the chain."""
        return type(self).apply is not Fault.apply


@runtime_checkable
class Refuses(Protocol):
    """A fault that may answer the request itself, before any upstream call."""

    async def refuse(self, ctx: FaultContext) -> Refusal | None: ...

    def release(self, ctx: FaultContext) -> None:
        """Called when an exchange this fault let through ends."""


@runtime_checkable
class Uploads(Protocol):
    """A fault that also shapes the request body on its way upstream."""

    def apply_upload(
        self, chunks: AsyncIterator[Chunk], ctx: FaultContext
    ) -> AsyncIterator[Chunk]: ...


@dataclass(slots=True)
class Refusal:
    """The response a refusing fault sends instead of calling upstream."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
