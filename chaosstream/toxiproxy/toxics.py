"""Toxiproxy's toxics: one small class per toxic, same attribute names and semantics.

A toxic sees each chunk of one direction of one connection, in order, and passes
it on with ``emit``. Toxiproxy's rule for authors holds here too: every byte read
from the input reaches the output unless the toxic exists to drop or close.
Per-connection state lives in a :class:`Stage`, so one toxic serves many links.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

__all__ = [
    "TOXIC_TYPES",
    "Chunk",
    "Emit",
    "Link",
    "Stage",
    "Toxic",
    "ToxicAttributeError",
    "ToxicEntry",
    "build_toxic",
    "fires",
]


@dataclass(slots=True)
class Chunk:
    """Bytes read in one go, stamped with the loop time they arrived at the proxy."""

    data: bytes
    ts: float


Emit = Callable[[Chunk], Awaitable[None]]


class Link(Protocol):
    """What a toxic may ask of the one-direction link it runs on."""

    rng: random.Random

    def now(self) -> float:
        """Loop time in seconds."""

    def close(self) -> None:
        """Close the whole connection with a FIN, after flushing what was written."""

    def reset(self) -> None:
        """Reset the whole connection (RST)."""

    def call_later(self, seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Run ``callback`` after ``seconds`` on the link's loop."""


class ToxicAttributeError(ValueError):
    """An attribute has the wrong type or an impossible value."""


class Stage:
    """One toxic's state on one link: an interruptible sleep plus a few scratch values.

    Removing or updating the toxic interrupts a sleep, and the toxic then passes its
    data on at once, as Toxiproxy's toxics do when their stub is interrupted.
    """

    __slots__ = ("_loop", "_waiter", "armed", "count", "next_at", "removed", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiter: asyncio.Future[bool] | None = None
        self.removed = False
        self.timer: asyncio.TimerHandle | None = None
        self.next_at = 0.0
        self.count = 0
        self.armed = False

    async def sleep(self, seconds: float | None) -> bool:
        """Sleep (``None``: until interrupted); False when interrupted, True when slept."""
        if self.removed:
            return False
        if seconds is not None and seconds <= 0:
            return True
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = fut
        handle = None if seconds is None else self._loop.call_later(seconds, _wake, fut, True)
        try:
            return await fut
        finally:
            if handle is not None:
                handle.cancel()
            self._waiter = None

    def interrupt(self) -> None:
        """Wake a sleeping toxic; it forwards its data without further delay."""
        if self._waiter is not None:
            _wake(self._waiter, False)

    def cancel_timer(self) -> None:
        """Forget a pending timed action (timeout close, reset)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _wake(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


@dataclass
class Toxic:
    """The noop toxic and the base of all others: passes every chunk on untouched."""

    type_name: ClassVar[str] = "noop"

    def activate(self, stage: Stage, link: Link) -> None:
        """Called when the toxic starts (or restarts after an update) on a link."""

    def cleanup(self, stage: Stage, link: Link) -> None:
        """Called when the toxic is removed while the link is live."""

    async def pipe(self, chunk: Chunk, stage: Stage, link: Link, emit: Emit) -> None:
        """Handle one chunk; call ``emit`` for what goes on, in order."""
        await emit(chunk)

    async def on_eof(self, stage: Stage, link: Link) -> bool:
        """The input ended; return False to hold the EOF back (the toxic will close)."""
        return True

    def attributes(self) -> dict[str, int]:
        """The toxic's attributes as Toxiproxy reports them."""
        return dataclasses.asdict(self)


@dataclass
class LatencyToxic(Toxic):
    """Delays each chunk by ``latency`` ms +/- ``jitter`` ms, counted from its arrival."""

    type_name: ClassVar[str] = "latency"
    latency: int = 0
    jitter: int = 0

    async def pipe(self, chunk: Chunk, stage: Stage, link: Link, emit: Emit) -> None:
        delay_ms = self.latency
        if self.jitter > 0:
            # Toxiproxy: latency + Int63n(2*jitter) - jitter.
            delay_ms += link.rng.randrange(2 * self.jitter) - self.jitter
        # Sleep only what is left, so queued chunks are not delayed twice.
        await stage.sleep(delay_ms / 1000 - (link.now() - chunk.ts))
        chunk.ts = link.now()
        await emit(chunk)


@dataclass
class BandwidthToxic(Toxic):
    """Limits throughput to ``rate`` KB/s (1 KB = 1000 bytes); a rate of 0 lets nothing
    through, as in Toxiproxy, until the toxic is removed."""

    type_name: ClassVar[str] = "bandwidth"
    rate: int = 0

    async def pipe(self, chunk: Chunk, stage: Stage, link: Link, emit: Emit) -> None:
        if self.rate <= 0:
            await stage.sleep(None)
            await emit(chunk)
            return
        bytes_per_s = self.rate * 1000
        piece = self.rate * 100  # Toxiproxy sends big chunks in 100 ms slices
        data = chunk.data
        while data:
            part, data = data[:piece], data[piece:]
            now = link.now()
            # Idle time is not banked: a pause does not buy a later burst.
            stage.next_at = max(stage.next_at, now) + len(part) / bytes_per_s
            if not await stage.sleep(stage.next_at - now):
                await emit(Chunk(part + data, chunk.ts))
                return
            await emit(Chunk(part, chunk.ts))


@dataclass
class SlowCloseToxic(Toxic):
    """Holds the end of the stream (EOF) back for ``delay`` ms."""

    type_name: ClassVar[str] = "slow_close"
    delay: int = 0

    async def on_eof(self, stage: Stage, link: Link) -> bool:
        await stage.sleep(self.delay / 1000)
        return True


@dataclass
class TimeoutToxic(Toxic):
    """Drops all data and closes the connection after ``timeout`` ms; 0 never closes.

    Removing it closes the connection too (Toxiproxy's ``Cleanup``): bytes were
    dropped, so carrying on would corrupt the stream.
    """

    type_name: ClassVar[str] = "timeout"
    timeout: int = 0

    def activate(self, stage: Stage, link: Link) -> None:
        if self.timeout > 0:
            stage.timer = link.call_later(self.timeout / 1000, link.close)

    def cleanup(self, stage: Stage, link: Link) -> None:
        link.close()

    async def pipe(self, chunk: Chunk, stage: Stage, link: Link, emit: Emit) -> None:
        return None  # dropped on purpose: that is this toxic's job


@dataclass
class ResetPeerToxic(Toxic):
    """Resets the connection (RST) ``timeout`` ms after data (or EOF) first arrives;
    the data is dropped."""

    type_name: ClassVar[str] = "reset_peer"
    timeout: int = 0

    def _arm(self, stage: Stage, link: Link) -> None:
        if not stage.armed:
            stage.armed = True
            stage.timer = link.call_later(self.timeout / 1000, link.reset)

    async def pipe(self, chunk: Chunk, stage: Stage, link: Link, emit: Emit) -> None:
        self._arm(stage, link)

    async def on_eof(self, stage: Stage, link: Link) -> bool:
        self._arm(stage, link)
        return False


@dataclass
class SlicerToxic(Toxic):
    """Slices chunks into pieces of ``average_size`` +/- ``size_variation`` bytes,
    waiting ``delay`` MICROseconds after each piece."""

    type_name: ClassVar[str] = "slicer"
    average_size: int = 0
    size_variation: int = 0
    delay: int = 0

    def _cuts(self, rng: random.Random, start: int, end: int, out: list[int]) -> None:
        # Toxiproxy's recursive halving: evenly varying pieces, no small tail.
        if (end - start) - self.average_size <= self.size_variation:
            out.append(end)
            return
        mid = start + (end - start) // 2
        if self.size_variation > 0:
            mid += rng.randrange(2 * self.size_variation) - self.size_variation
        self._cuts(rng, start, mid, out)
        self._cuts(rng, mid, end, out)

    async def pipe(self, chunk: Chunk, stage: Stage, link: Link, emit: Emit) -> None:
        cuts: list[int] = []
        self._cuts(link.rng, 0, len(chunk.data), cuts)
        start = 0
        for cut in cuts:
            await emit(Chunk(chunk.data[start:cut], chunk.ts))
            start = cut
            if start < len(chunk.data) and not await stage.sleep(self.delay / 1_000_000):
                await emit(Chunk(chunk.data[start:], chunk.ts))
                return

    def validate(self) -> None:
        if self.average_size < 1:
            raise ToxicAttributeError("attribute average_size must be at least 1")
        if self.size_variation >= self.average_size:
            raise ToxicAttributeError("attribute size_variation must be less than average_size")


@dataclass
class LimitDataToxic(Toxic):
    """Closes the connection once ``bytes`` bytes have passed; never sends more."""

    type_name: ClassVar[str] = "limit_data"
    bytes: int = 0

    async def pipe(self, chunk: Chunk, stage: Stage, link: Link, emit: Emit) -> None:
        remaining = max(self.bytes - stage.count, 0)
        if remaining > 0:
            part = chunk.data[:remaining]
            stage.count += len(part)
            await emit(Chunk(part, chunk.ts) if len(part) < len(chunk.data) else chunk)
        if stage.count >= self.bytes:
            link.close()


TOXIC_TYPES: dict[str, type[Toxic]] = {
    cls.type_name: cls
    for cls in (
        Toxic,
        LatencyToxic,
        BandwidthToxic,
        SlowCloseToxic,
        TimeoutToxic,
        ResetPeerToxic,
        SlicerToxic,
        LimitDataToxic,
    )
}


def build_toxic(type_name: str, raw: object, base: Toxic | None = None) -> Toxic:
    """Make a toxic of ``type_name`` from JSON ``attributes``, over ``base``'s values.

    Unknown attribute names are ignored, as Go's JSON decoder does; values must be
    non-negative integers (a float like 10.0 is accepted).
    """
    cls = TOXIC_TYPES[type_name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ToxicAttributeError("attributes must be a JSON object")
    values: dict[str, int] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        value = raw[f.name]
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ToxicAttributeError(
                f"attribute {f.name} must be a non-negative integer, got {value!r}"
            )
        values[f.name] = value
    toxic = dataclasses.replace(base, **values) if base is not None else cls(**values)
    if isinstance(toxic, SlicerToxic):
        toxic.validate()
    return toxic


@dataclass(eq=False)
class ToxicEntry:
    """A toxic as the API knows it: name, type, direction, toxicity and attributes."""

    name: str
    type: str
    stream: str
    toxicity: float
    toxic: Toxic
    revision: int = field(default=0)

    def to_json(self) -> dict[str, object]:
        """Toxiproxy's JSON shape for a toxic."""
        return {
            "attributes": self.toxic.attributes(),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


def fires(connection_seed: int, entry: ToxicEntry) -> bool:
    """Whether ``entry`` acts on this connection (else it is a noop there).

    The draw depends only on the connection's seed and the toxic's name and revision,
    never on timing, so a fixed server seed replays the same decisions.
    """
    if entry.toxicity >= 1:
        return True
    if entry.toxicity <= 0:
        return False
    key = f"{connection_seed}:{entry.stream}:{entry.name}:{entry.revision}"
    return random.Random(key).random() < entry.toxicity
