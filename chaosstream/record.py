"""The recorder: one record per exchange, with timings and the faults that fired."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from chaosstream.faults.base import FaultEvent
from chaosstream.providers import Provider

Outcome = Literal["pending", "complete", "fault", "client_gone", "upstream_error", "refused"]


@dataclass(slots=True)
class Exchange:
    """What happened on one request through the proxy.

    Times are seconds on the proxy's monotonic clock; ``wall`` is the epoch time
    the request arrived.
    """

    id: int
    method: str
    path: str
    provider: Provider
    stream: bool
    started: float
    wall: float = field(default_factory=time.time)
    request_body: bytes = b""
    last_event_id: str | None = None
    status: int | None = None
    content_type: str | None = None
    first_byte: float | None = None
    ended: float | None = None
    bytes_out: int = 0
    outcome: Outcome = "pending"
    error: str = ""
    faults: list[FaultEvent] = field(default_factory=list)
    upstream_chunks: list[bytes] = field(default_factory=list)
    """What upstream sent, as read (for reconstructing the full answer)."""
    client_chunks: list[bytes] | None = None
    """What the client was sent when faults changed the stream; None means the same as upstream."""

    @property
    def ttft_ms(self) -> float | None:
        if self.first_byte is None:
            return None
        return (self.first_byte - self.started) * 1000.0

    @property
    def duration_ms(self) -> float | None:
        if self.ended is None:
            return None
        return (self.ended - self.started) * 1000.0

    def summary(self) -> dict[str, Any]:
        """The fields of the per-exchange log line."""
        ttft, dur = self.ttft_ms, self.duration_ms
        return {
            "exchange": self.id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "outcome": self.outcome,
            "ttft_ms": None if ttft is None else round(ttft, 1),
            "duration_ms": None if dur is None else round(dur, 1),
            "bytes": self.bytes_out,
            "faults": [f"{f.type}:{f.action}" for f in self.faults],
        }


class Recorder:
    """Keeps the most recent exchanges and tells listeners when one ends."""

    def __init__(self, keep: int = 1000) -> None:
        self.exchanges: deque[Exchange] = deque(maxlen=keep)
        self.listeners: list[Callable[[Exchange], None]] = []
        self.open: dict[int, Exchange] = {}

    def begin(self, exchange: Exchange) -> None:
        self.open[exchange.id] = exchange

    def finish(self, exchange: Exchange) -> None:
        self.open.pop(exchange.id, None)
        self.exchanges.append(exchange)
        for listener in self.listeners:
            listener(exchange)

    def clear(self) -> None:
        self.exchanges.clear()
