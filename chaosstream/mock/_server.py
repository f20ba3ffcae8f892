"""Running the mock on a real socket: in a test's loop or as a blocking command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from types import TracebackType

from aiohttp import web

from chaosstream.mock._app import create_app
from chaosstream.mock._settings import DEFAULT_SETTINGS, MockSettings
from chaosstream.mock._stats import STATS, MockStats, RecordedRequest

# Streams still open at close are cut after this long instead of aiohttp's 60 s.
_SHUTDOWN_TIMEOUT_S = 0.5


class MockServer:
    """A running mock: its ``url`` and what it has seen. Close it, or use ``async with``."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
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
        """The last (up to 1000) requests, oldest first."""
        return self.stats.requests

    async def close(self) -> None:
        """Stop listening and end open streams."""
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
    host: str = "127.0.0.1", port: int = 0, settings: MockSettings = DEFAULT_SETTINGS
) -> MockServer:
    """Start the mock on ``host:port`` (0 = a free port) in the running loop."""
    # handler_cancellation: a client that leaves is noticed at once, not at the next write.
    runner = web.AppRunner(
        create_app(settings),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return MockServer(runner, host, bound_port)


def run_mock(
    host: str = "127.0.0.1",
    port: int = 0,
    settings: MockSettings = DEFAULT_SETTINGS,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the mock until Ctrl-C or SIGTERM; ``on_ready(url)`` is called once it listens."""

    async def main() -> None:
        async with await start_mock(host, port, settings) as server:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            # SIGTERM (from a process manager or CI) ends as cleanly as Ctrl-C; there is
            # no loop signal support off the main thread or on Windows.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGTERM, stop.set)
            if on_ready is not None:
                on_ready(server.url)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
