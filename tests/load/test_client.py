"""One user's attempt on real loopback sockets against the embedded mock, faults on its side."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from chaosstream.faults.trigger import Injector
from chaosstream.load.client import stream_attempt
from chaosstream.load.metrics import Attempt
from chaosstream.load.plan import FORMATS, LoadPlan, parse_mix
from chaosstream.mock import MockServer, MockSettings, start_mock
from chaosstream.streams.registry import get

TTFT_MS = 200.0
TOKENS_PER_S = 50.0


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    settings = MockSettings(ttft_ms=TTFT_MS, tokens_per_s=TOKENS_PER_S, tokens=20)
    async with await start_mock(settings=settings) as server:
        yield server


@pytest.fixture
async def fast_mock() -> AsyncIterator[MockServer]:
    """The mock paced fast (20 ms TTFT, 1,000 tokens/s) for the per-format tests."""
    settings = MockSettings(ttft_ms=20, tokens_per_s=1000, tokens=20)
    async with await start_mock(settings=settings) as server:
        yield server


async def _attempt(
    mock: MockServer, profile: str, timeout_s: float = 5.0, fmt: str = "openai-chat"
) -> Attempt:
    plan = LoadPlan(upstream=mock.url, mix=parse_mix(f"{profile}=1"), format=fmt)
    body = plan.body("hello")
    injector = Injector(plan.mix[0].profile.all_faults(), 7)
    return await stream_attempt(
        plan.target, plan.headers(), body, injector, plan.request_info(body), timeout_s=timeout_s
    )


async def test_clean_stream_has_the_mocks_timing(mock: MockServer) -> None:
    """On clean, TTFT is the mock's 200 ms and tokens come 20 ms apart (50 tokens/s)."""
    a = await _attempt(mock, "clean")
    assert a.outcome == "complete" and a.status == 200 and len(a.token_times) == 20
    assert 0.19 <= a.token_times[0] <= 0.35
    gaps = [b - a for a, b in zip(a.token_times, a.token_times[1:], strict=False)]
    assert 0.015 <= sorted(gaps)[len(gaps) // 2] <= 0.03


async def test_mobile_3g_slows_the_first_token(mock: MockServer) -> None:
    """mobile-3g adds its 200 ms each way and its 400 kbit/s: TTFT well above clean."""
    a = await _attempt(mock, "mobile-3g")
    assert a.outcome == "complete"
    assert a.token_times[0] >= 0.55  # 200 ms mock + 2 x 200 ms link, plus the bytes' time


async def test_reset_cut_aborts_the_users_connection(mock: MockServer) -> None:
    """midstream-reset cuts after 10 events: the user resets, and the mock sees it leave early."""
    a = await _attempt(mock, "midstream-reset")
    assert a.outcome == "reset" and a.status == 200
    assert 5 <= len(a.token_times) < 20
    deadline = time.monotonic() + 3
    while mock.closed_early < 1 and time.monotonic() < deadline:
        import asyncio

        await asyncio.sleep(0.05)
    assert mock.closed_early == 1


async def test_refusal_answers_without_the_server(mock: MockServer) -> None:
    """rate-limited-429 answers its first request in the user: 429, Retry-After, no request sent."""
    a = await _attempt(mock, "rate-limited-429")
    assert a.outcome == "http_429" and a.retry_after_s is not None and a.retry_after_s > 0
    assert mock.requests == []


async def test_stall_holds_until_the_read_timeout(mock: MockServer) -> None:
    """silent-stall: the user holds the socket open, silent, for its read timeout."""
    start = time.monotonic()
    a = await _attempt(mock, "silent-stall", timeout_s=0.6)
    assert a.outcome == "stall"
    assert time.monotonic() - start >= 0.6 + TTFT_MS / 1000.0 - 0.05


async def test_unreachable_upstream_is_a_connect_error() -> None:
    """Nothing listening: the attempt ends as `connect`, never raises."""
    plan = LoadPlan(upstream="http://127.0.0.1:9", mix=parse_mix("clean=1"))
    body = plan.body("x")
    a = await stream_attempt(plan.target, plan.headers(), body, None, plan.request_info(body))
    assert a.outcome == "connect" and a.status is None


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_every_format_streams_from_the_mock(fast_mock: MockServer, fmt: str) -> None:
    """Each --format's request reaches the mock's endpoint and its frames (SSE, NDJSON,
    event stream) are read through the registry: 20 tokens, then the terminal frame."""
    a = await _attempt(fast_mock, "clean", fmt=fmt)
    assert a.outcome == "complete" and a.status == 200, (fmt, a)
    assert len(a.token_times) == 20
    assert fast_mock.requests[-1].path.startswith(FORMATS[fmt].path.split("{")[0].split("?")[0])


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_every_format_meets_event_faults(fast_mock: MockServer, fmt: str) -> None:
    """midstream-reset counts events in each format's own framing: cut after 12 events."""
    a = await _attempt(fast_mock, "midstream-reset", fmt=fmt)
    assert a.outcome == "reset", (fmt, a)
    # Formats open with frames that carry no text (Anthropic's message_start...).
    assert 3 <= len(a.token_times) <= 12


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_every_format_reads_its_error_frame(fast_mock: MockServer, fmt: str) -> None:
    """An in-stream error in the format's own shape (stream_error fault) ends the attempt
    as stream_error, whichever the framing."""
    a = await _attempt(fast_mock, "overloaded-in-stream", fmt=fmt)
    assert a.outcome == "stream_error", (fmt, get(FORMATS[fmt].wire).name, a)
