"""Running the mock on a real socket: in a test's loop or as a blocking command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from types import TracebackType

from aiohttp import web

from chaosstream.mock._app import create_app
from chaosstream.mock._guard import GUARDS, ConnectionGuard
from chaosstream.mock._limits import MockLimits
from chaosstream.mock._settings import DEFAULT_SETTINGS, MockSettings
from chaosstream.mock._stats import STATS, MockStats, RecordedRequest

# Streams still open at close are cut after this long instead of aiohttp's 60 s.
_SHUTDOWN_TIMEOUT_S = 0.5
#: Connections the kernel queues before the mock accepts them: asyncio's 100 overflows
#: when a load test opens a thousand streams at once (as the proxy's, issue 17).
LISTEN_BACKLOG = 4096


class MockServer:
    """A running mock: its ``url`` and what it has seen. Close it, or use ``async with``."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, listener: asyncio.Server | None = None
    ) -> None:
        self._runner = runner
        self._listener = listener
        self.host = host
        self.port = port
        bracketed = f"[{host}]" if ":" in host else host
        self.url = f"http://{bracketed}:{port}"

    @property
    def app(self) -> web.Application:
        """The aiohttp application being served."""
        return self._runner.app

    @property
    def stats(self) -> MockStats:
        """Live counters and request history."""
        return self.app[STATS]

    @property
    def open_streams(self) -> int:
        """Streams being written right now."""
        return self.stats.open_streams

    @property
    def closed_early(self) -> int:
        """Streams whose client went away before the end."""
        return self.stats.closed_early

    @property
    def requests(self) -> list[RecordedRequest]:
        """The last requests, oldest first (at most 1000 and 16 MiB in all)."""
        return self.stats.requests

    async def close(self) -> None:
        """Stop listening and end open streams."""
        if self._listener is not None:
            self._listener.close()
        await self._runner.cleanup()

    async def __aenter__(self) -> MockServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_mock(
    host: str = "127.0.0.1",
    port: int = 0,
    settings: MockSettings = DEFAULT_SETTINGS,
    *,
    limits: MockLimits | None = None,
    backlog: int = LISTEN_BACKLOG,
) -> MockServer:
    """Start the mock on ``host:port`` (0 = a free port) in the running loop.

    ``limits`` (default ``MockLimits()``) sets the head and idle timeouts and the
    /ws caps; ``backlog`` the kernel's queue of connections not yet accepted.
    """
    limits = limits or MockLimits()
    app = create_app(settings, limits=limits)
    # handler_cancellation: a client that leaves is noticed at once, not at the next write.
    # keepalive_timeout: aiohttp's own idle timer agrees with the guard's.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        keepalive_timeout=limits.idle_timeout_s,
    )
    await runner.setup()
    protocol_factory = runner.server
    assert protocol_factory is not None
    guards = app[GUARDS]
    try:
        # Our own listener instead of a TCPSite, so each connection's protocol is
        # wrapped in a ConnectionGuard; runner.cleanup() still ends the connections.
        listener = await asyncio.get_running_loop().create_server(
            lambda: ConnectionGuard(protocol_factory(), limits, guards),
            host,
            port,
            backlog=backlog,
        )
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(listener.sockets[0].getsockname()[1])
    return MockServer(runner, host, bound_port, listener)


def run_mock(
    host: str = "127.0.0.1",
    port: int = 0,
    settings: MockSettings = DEFAULT_SETTINGS,
    on_ready: Callable[[str], None] | None = None,
    limits: MockLimits | None = None,
) -> None:
    """Serve the mock until Ctrl-C or SIGTERM; ``on_ready(url)`` is called once it listens.

    Without ``limits``, they come from ``CHAOSSTREAM_MOCK_*`` variables (see
    :meth:`MockLimits.from_env`); a bad one raises ValueError before listening.
    """
    limits = limits or MockLimits.from_env()

    async def main() -> None:
        async with await start_mock(host, port, settings, limits=limits) as server:
            await until_stopped(server.url, on_ready)

    with contextlib.suppress(KeyboardInterrupt):  # Windows: no loop signal handlers
        asyncio.run(main())


async def until_stopped(url: str, on_ready: Callable[[str], None] | None = None) -> None:
    """Call ``on_ready(url)``, then wait for SIGINT or SIGTERM.

    Both get a handler of their own, set before ``on_ready`` says the server is up.
    Python's KeyboardInterrupt is not enough: a process a non-interactive shell starts
    in the background (``chaosstream mock &`` in a CI script) inherits SIGINT ignored
    (POSIX, Shell Command Language 2.11), and then ``kill -INT`` would not stop it,
    where it stops ``chaosstream proxy``. There is no loop signal support off the main
    thread or on Windows; there Ctrl-C stays Python's KeyboardInterrupt.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready(url)
    await stop.wait()
