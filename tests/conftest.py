"""Shared fixtures: a real mock model server and real chaos proxies on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from chaosstream.faults.profile import Profile, load_profile, profile_from_data
from chaosstream.mock import MockServer, MockSettings, start_mock
from chaosstream.proxy.server import ChaosProxy
from chaosstream.toxiproxy import RunningServer, start_toxiproxy_server

FAST = MockSettings(ttft_ms=20, tokens_per_s=500, tokens=30)

ProxyFactory = Callable[..., Awaitable[ChaosProxy]]


def make_profile(faults: list[dict[str, object]] | None = None, **extra: object) -> Profile:
    """An inline profile with these faults (dicts as in YAML)."""
    return profile_from_data(
        {"version": 1, "name": "test", "faults": faults or [], **extra}, "<test>"
    )


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    """The embedded mock, fast: 20 ms TTFT, 500 tokens/s, 30 tokens."""
    async with await start_mock(settings=FAST) as server:
        yield server


@pytest.fixture
async def proxy_factory() -> AsyncIterator[ProxyFactory]:
    """Start chaos proxies on free ports; all are closed after the test."""
    started: list[ChaosProxy] = []

    async def make(
        upstream: str, profile: Profile | str | None = None, **kwargs: object
    ) -> ChaosProxy:
        if profile is None:
            profile = load_profile("clean")
        elif isinstance(profile, str):
            profile = load_profile(profile)
        proxy = ChaosProxy(upstream, profile, **kwargs)  # type: ignore[arg-type]
        await proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.close()


async def tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A TCP upstream that sends back what it reads until the peer closes."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def tp() -> AsyncIterator[RunningServer]:
    """chaosstream's Toxiproxy-compatible server on a free port, seed 1."""
    running = await start_toxiproxy_server(seed=1)
    yield running
    await running.close()


@pytest.fixture(autouse=True)
def _no_outer_xdist_in_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs on xdist workers (scripts/test.sh): their variables must not reach
    the processes a test starts, or a pytest run inside a test would take the outer
    run's id for its own (the plugin's scopes are named by PYTEST_XDIST_TESTRUNUID)."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """A leaked socket or connection warns (an error here) in the test that leaked it.

    Without this, a leak caught in a reference cycle is collected whenever the
    collector next runs, and its ResourceWarning fails some unrelated later test.
    """
    yield
    gc.collect()
