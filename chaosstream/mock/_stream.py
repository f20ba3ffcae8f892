"""Pacing and SSE framing shared by the streaming endpoints."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from chaosstream.mock._settings import MockSettings
from chaosstream.mock._stats import ClientGone

# While waiting for a token we look at the socket this often, so an abandoned
# stream is noticed (and counted) even when the runner does not cancel handlers.
_POLL_S = 0.05


def client_gone(request: web.BaseRequest) -> bool:
    """Return True when the client's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


class Pacer:
    """Schedules token ``i`` at ``start + ttft + i / tokens_per_s`` on the loop clock.

    Sleeping until an absolute target (rather than for an interval) keeps the time
    spent writing from adding up into drift.
    """

    def __init__(self, request: web.BaseRequest, settings: MockSettings) -> None:
        self._request = request
        self._settings = settings
        self._loop = asyncio.get_running_loop()
        self.start = self._loop.time()

    async def wait_token(self, index: int) -> None:
        """Sleep until token ``index`` (0-based) is due; raise ClientGone if the client left."""
        target = self.start + self._settings.token_offset_s(index)
        while True:
            if client_gone(self._request):
                raise ClientGone
            left = target - self._loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, _POLL_S))


async def open_event_stream(request: web.Request) -> web.StreamResponse:
    """Send ``text/event-stream`` headers at once, so the body starts with the first event."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    return resp


def sse_event(
    data: str,
    *,
    event: str | None = None,
    event_id: str | int | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """Frame one SSE event; a multi-line ``data`` becomes several ``data:`` lines."""
    lines: list[str] = []
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    # Always "data: " with one space: the spec strips exactly one, so a token's own
    # leading space survives.
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def json_data(value: Any) -> str:
    """Compact JSON for an event's data line."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
