"""The mock's listen backlog: a load test's thousand simultaneous connects all queue (issue 17)."""

from __future__ import annotations

from chaosstream.mock import start_mock
from tests.proxy.test_server_perf import _handshakes


async def test_mock_queues_a_thousand_connections_before_accept() -> None:
    """A thousand connections opened while the loop is busy all complete their handshake."""
    async with await start_mock() as server:
        assert _handshakes(server.url, 1000, 2.0) == 1000


async def test_mock_backlog_is_settable() -> None:
    """start_mock(backlog=N) queues about N connections, then the kernel drops SYNs."""
    async with await start_mock(backlog=16) as server:
        assert 10 <= _handshakes(server.url, 64, 0.3) <= 20
