"""What the mock saw: recent requests and the life of its streams.

Tests outside the mock read these to observe the proxy from the far side, e.g.
"the proxy closed its upstream request" shows up as ``closed_early`` growing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple

from aiohttp import web

REQUEST_HISTORY = 1000


class RecordedRequest(NamedTuple):
    """One request as the mock received it.

    ``path`` includes the raw query string; ``headers`` has lower-case names.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ClientGone(Exception):
    """The client closed its connection before the stream ended."""


@dataclass
class MockStats:
    """Counters and request history of one mock app."""

    open_streams: int = 0
    closed_early: int = 0
    completed_streams: int = 0
    history: deque[RecordedRequest] = field(
        repr=False, default_factory=lambda: deque(maxlen=REQUEST_HISTORY)
    )

    @property
    def requests(self) -> list[RecordedRequest]:
        """The last requests, oldest first (at most 1000)."""
        return list(self.history)

    def track(self) -> StreamTracker:
        """Return an async context manager that counts one stream's life."""
        return StreamTracker(self)

    async def wait_until(self, predicate: Callable[[MockStats], bool], timeout_s: float) -> bool:
        """Poll until ``predicate(self)`` holds; return False if ``timeout_s`` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(self):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True


class StreamTracker:
    """Counts a stream as open while inside, and as abandoned if the client left."""

    def __init__(self, stats: MockStats) -> None:
        self._stats = stats

    async def __aenter__(self) -> None:
        self._stats.open_streams += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._stats.open_streams -= 1
        if exc_type is None:
            self._stats.completed_streams += 1
        elif issubclass(exc_type, (ClientGone, ConnectionError, asyncio.CancelledError)):
            self._stats.closed_early += 1
        return False


STATS: web.AppKey[MockStats] = web.AppKey("chaosstream_mock_stats", MockStats)
