"""What the mock saw: recent requests and the life of its streams.

Tests outside the mock read these to observe the proxy from the far side, e.g.
"the proxy closed its upstream request" shows up as ``closed_early`` growing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple

from aiohttp import web

# The history keeps at most this many requests, and at most REQUEST_HISTORY_BYTES
# of them in all: 1,000 bodies of 8 MiB were 8 GB before the byte budget (issue
# 10, item 3). Tests read the last few requests and their bodies; the verifier
# reads only the stream counters, which are not part of the budget.
REQUEST_HISTORY = 1000
REQUEST_HISTORY_BYTES = 16 * 1024 * 1024
# A body is kept up to this many bytes; ``body_size`` says how long it was.
RECORDED_BODY_BYTES = 1024 * 1024
# What one entry costs besides its body, path and headers (objects, dict, deque).
_ENTRY_OVERHEAD_BYTES = 512


class RecordedRequest(NamedTuple):
    """One request as the mock received it.

    ``path`` includes the raw query string; ``headers`` has lower-case names.
    ``body`` is cut to the first ``RECORDED_BODY_BYTES`` (1 MiB); ``body_size`` is
    the length received, so ``len(body) < body_size`` means it was cut.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    body_size: int


class RequestHistory:
    """The newest requests within a count and a byte budget; the oldest go first."""

    def __init__(
        self,
        max_count: int = REQUEST_HISTORY,
        max_bytes: int = REQUEST_HISTORY_BYTES,
        max_body_bytes: int = RECORDED_BODY_BYTES,
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_body_bytes = max_body_bytes
        self.bytes = 0
        self._entries: deque[tuple[RecordedRequest, int]] = deque()

    def record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        """Keep one request, its body cut to ``max_body_bytes``, dropping the oldest to fit."""
        kept = body[: self.max_body_bytes]
        entry = RecordedRequest(method, path, headers, kept, len(body))
        cost = _ENTRY_OVERHEAD_BYTES + len(path) + len(kept)
        cost += sum(len(name) + len(value) for name, value in headers.items())
        self._entries.append((entry, cost))
        self.bytes += cost
        while self._entries and (
            len(self._entries) > self.max_count or self.bytes > self.max_bytes
        ):
            self.bytes -= self._entries.popleft()[1]

    def clear(self) -> None:
        """Forget every request."""
        self._entries.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[RecordedRequest]:
        return (entry for entry, _ in self._entries)


class ClientGone(Exception):
    """The client closed its connection before the stream ended."""


@dataclass
class MockStats:
    """Counters and request history of one mock app."""

    open_streams: int = 0
    closed_early: int = 0
    completed_streams: int = 0
    history: RequestHistory = field(repr=False, default_factory=RequestHistory)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The last requests, oldest first (at most 1000 and 16 MiB in all)."""
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
