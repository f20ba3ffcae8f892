"""Replaying a cassette: answer matching requests with the recorded bytes and timing.

``chaosstream mock --cassette DIR`` serves :func:`create_replay_app`. Each
request is matched (:class:`chaosstream.streams.cassette.Player`); a match gets
the recorded status, headers and body frames, each frame written when it
arrived in the recording (scaled by ``speed``; 0 writes at once). Frames that
arrived in one upstream read are written together, so the client sees the same
chunking. A request no interaction matches gets a 404 in the provider's error
shape naming the nearest recorded request and what differed (WireMock answers
an unmatched request with 404 too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from chaosstream.mock._server import until_stopped
from chaosstream.streams.cassette import INDEX_HEADER, Player, RecordedResponse
from chaosstream.streams.format import json_or_none
from chaosstream.streams.registry import format_for

__all__ = [
    "PLAYER",
    "UNMATCHED_STATUS",
    "ReplayServer",
    "create_replay_app",
    "run_replay",
    "start_replay",
]

PLAYER = web.AppKey("player", Player)
SPEED = web.AppKey("speed", float)


UNMATCHED_STATUS = 404

# Never copied from the recording: the replay frames the body itself (RFC 9110 7.6.1).
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
)
_SHUTDOWN_TIMEOUT_S = 0.5


@dataclass
class _View:
    """What a wire format may read of a request (``streams.format.RequestView``)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    json: Any


def create_replay_app(player: Player, speed: float = 1.0) -> web.Application:
    """An app answering every request from ``player``'s cassette."""
    if speed < 0:
        raise ValueError(f"replay speed must be 0 or more, got {speed}")
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[PLAYER] = player
    app[SPEED] = speed
    app.router.add_route("*", "/{tail:.*}", _replay)
    return app


async def _replay(request: web.Request) -> web.StreamResponse:
    start = asyncio.get_running_loop().time()
    player = request.app[PLAYER]
    body = await request.read()
    headers = {k.lower(): v for k, v in request.headers.items()}
    fmt = format_for(request.method, request.path, headers)
    pinned = request.headers.get(INDEX_HEADER, "")
    if pinned.isdigit() and 0 < int(pinned) <= len(player.cassette.interactions):
        index: int | None = int(pinned) - 1
        reason = ""
    else:
        parsed = json_or_none(body) if body[:1] == b"{" else None
        view = _View(request.method, request.path, request.query_string, headers, parsed)
        stream = fmt.wants_stream(view)
        found = player.lookup(
            request.method, request.path, request.query_string, body, fmt.name, stream
        )
        index, reason = found.index, found.reason
    if index is None:
        return web.Response(
            status=UNMATCHED_STATUS,
            body=fmt.error_body(UNMATCHED_STATUS, reason),
            content_type="application/json",
            headers={"X-Chaosstream-Cassette": "unmatched"},
        )
    interaction = player.cassette.interactions[index]
    # Frame times count from the request's arrival at the recording proxy; this clock
    # starts when the request arrives here, as the upstream's did at sent_ms.
    start -= interaction.request.sent_ms / 1000.0 / max(request.app[SPEED], 1e-9)
    return await _play(request, interaction.response, start, request.app[SPEED])


async def _play(
    request: web.Request, recorded: RecordedResponse, start: float, speed: float
) -> web.StreamResponse:
    resp = web.StreamResponse(status=recorded.status)
    for name, value in recorded.headers:
        if name.lower() not in _HOP:
            resp.headers.add(name, value)
    body_len = sum(len(f.raw) for f in recorded.frames)
    if recorded.complete and any(n.lower() == "content-length" for n, _ in recorded.headers):
        resp.content_length = body_len
    loop = asyncio.get_running_loop()
    groups: list[tuple[float, list[bytes]]] = []
    for frame in recorded.frames:
        if groups and groups[-1][0] == frame.t_ms:
            groups[-1][1].append(frame.raw)
        else:
            groups.append((frame.t_ms, [frame.raw]))
    prepared = False
    for t_ms, raws in groups:
        if speed > 0:
            # An absolute target on the loop clock: time spent writing never adds up.
            left = start + t_ms / 1000.0 / speed - loop.time()
            if left > 0:
                await asyncio.sleep(left)
        if not prepared:
            await resp.prepare(request)
            prepared = True
        await resp.write(b"".join(raws))
    if not prepared:
        await resp.prepare(request)
    if not recorded.complete:
        # Upstream broke the body off in the recording: break it the same way.
        if request.transport is not None:
            request.transport.abort()
        return resp
    await resp.write_eof()
    return resp


class ReplayServer:
    """A running replay server: its ``url`` and its player (what matched, what did not)."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self._runner = runner
        self.url = url

    @property
    def player(self) -> Player:
        return self._runner.app[PLAYER]

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> ReplayServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_replay(
    player: Player, host: str = "127.0.0.1", port: int = 0, speed: float = 1.0
) -> ReplayServer:
    """Serve ``player``'s cassette on ``host:port`` (0 = a free port) in the running loop."""
    runner = web.AppRunner(
        create_replay_app(player, speed),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return ReplayServer(runner, f"http://{shown}:{bound_port}")


def run_replay(
    player: Player,
    host: str,
    port: int,
    speed: float = 1.0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM; ``player.unmatched`` then says what had no match."""

    async def main() -> None:
        async with await start_replay(player, host, port, speed) as server:
            await until_stopped(server.url, on_ready)

    with contextlib.suppress(KeyboardInterrupt):  # Windows: no loop signal handlers
        asyncio.run(main())
