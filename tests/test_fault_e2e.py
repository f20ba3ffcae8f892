"""Every fault family end to end: the real proxy, the embedded mock, real clients."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from chaosstream.faults.profile import profile_from_data
from chaosstream.mock import MockServer, MockSettings, answer_text, answer_tokens, start_mock
from chaosstream.proxy.server import ChaosProxy
from chaosstream.streams.providers import stream_summary
from chaosstream.streams.sse import EventDecoder

FAST = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=20)
PROMPT = "tell me"
CHAT = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
ANSWER = answer_text(CHAT, 20)


@contextlib.asynccontextmanager
async def chaos(
    faults: list[dict[str, Any]],
    *,
    network: dict[str, Any] | None = None,
    settings: MockSettings = FAST,
    seed: int = 1,
) -> AsyncIterator[tuple[ChaosProxy, str, MockServer]]:
    """A mock behind a proxy running a profile made of ``faults``."""
    data: dict[str, Any] = {"version": 1, "name": "e2e", "faults": faults}
    if network:
        data["network"] = network
    mock = await start_mock(settings=settings)
    proxy = ChaosProxy(mock.url, profile_from_data(data, "test"), seed=seed)
    url = await proxy.start()
    try:
        yield proxy, url, mock
    finally:
        await proxy.close()
        await mock.close()


async def stream_chat(
    url: str, body: dict[str, Any] | None = None
) -> tuple[int, list[tuple[float, bytes]], BaseException | None]:
    """POST a streaming chat; (status, [(seconds since send, chunk)], error)."""
    chunks: list[tuple[float, bytes]] = []
    error: BaseException | None = None
    start = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=body or CHAT) as resp,
    ):
        try:
            async for data in resp.content.iter_any():
                chunks.append((time.monotonic() - start, data))
        except aiohttp.ClientError as e:
            error = e
        return resp.status, chunks, error


def joined(chunks: list[tuple[float, bytes]]) -> bytes:
    return b"".join(c for _, c in chunks)


def event_times(chunks: list[tuple[float, bytes]]) -> list[float]:
    """Arrival time of each complete data event."""
    decoder, times = EventDecoder(), []
    for t, data in chunks:
        times += [t] * len(decoder.feed(data))
    return times


async def test_latency_first_byte_fidelity() -> None:
    """first_byte_ms 300: the first byte arrives 300 ms (+ tolerance) after the request."""
    async with chaos([{"type": "latency", "first_byte_ms": 300}]) as (_, url, _m):
        status, chunks, error = await stream_chat(url)
    assert (status, error) == (200, None)
    assert 0.3 <= chunks[0][0] < 0.6
    assert stream_summary(joined(chunks), "openai").text == ANSWER


async def test_throttle_events_per_s_fidelity() -> None:
    """events_per_s 20: events arrive 20/s between the first and the last (+/- 20 %)."""
    async with chaos([{"type": "throttle", "events_per_s": 20}]) as (_, url, _m):
        _, chunks, _ = await stream_chat(url)
    times = event_times(chunks)
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 16 <= rate <= 24, rate
    assert stream_summary(joined(chunks), "openai").terminated


async def test_loss_keeps_bytes_and_adds_stalls() -> None:
    """loss: the answer is whole and in order, with retransmission stalls logged."""
    paced = MockSettings(ttft_ms=5, tokens_per_s=200, tokens=20)  # one write per event
    async with chaos([{"type": "loss", "rate": 0.25}], settings=paced, seed=4) as (
        proxy,
        url,
        _m,
    ):
        _, chunks, error = await stream_chat(url)
    summary = stream_summary(joined(chunks), "openai")
    assert error is None
    assert (summary.text, summary.terminated) == (ANSWER, True)
    stalls = [e for e in proxy.fault_log if e.action == "stall"]
    assert stalls
    assert chunks[-1][0] >= 0.2 * len(stalls) * 0.9


async def test_disconnect_reset_and_close() -> None:
    """reset breaks the client's read; close ends cleanly without [DONE]."""
    async with chaos([{"type": "disconnect", "after_events": 5, "mode": "reset"}]) as (_, url, _m):
        _, chunks, error = await stream_chat(url)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert stream_summary(joined(chunks), "openai").events == 5
    async with chaos([{"type": "disconnect", "after_events": 5, "mode": "close"}]) as (_, url, _m):
        _, chunks, error = await stream_chat(url)
    summary = stream_summary(joined(chunks), "openai")
    assert (error, summary.events, summary.terminated) == (None, 5, False)


async def test_disconnect_split_event_tears_utf8_on_the_wire() -> None:
    """split_event: the client's last bytes end inside a multi-byte character."""
    # Event 0 is the role event; token k is event k + 1. Tear the first non-ASCII token.
    wide = next(i for i, t in enumerate(answer_tokens(CHAT, 20)) if not t.isascii())
    fault = {"type": "disconnect", "after_events": wide + 1, "mode": "close", "split_event": True}
    async with chaos([fault]) as (_, url, _m):
        _, chunks, _ = await stream_chat(url)
    tail = joined(chunks).rsplit(b"\n\n", 1)[-1]
    assert tail.startswith(b"data: ")
    with pytest.raises(UnicodeDecodeError):
        tail.decode("utf-8")


async def test_http_error_with_the_openai_sdk() -> None:
    """http_error 429: the openai SDK raises RateLimitError and sees Retry-After."""
    fault = {"type": "http_error", "status": 429, "retry_after_s": 2, "requests": [1]}
    async with chaos([fault]) as (_, url, _m):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        async with client:
            with pytest.raises(openai.RateLimitError) as info:
                await client.chat.completions.create(model="m", messages=CHAT["messages"])
            assert info.value.response.headers["retry-after"] == "2"
            ok = await client.chat.completions.create(model="m", messages=CHAT["messages"])
    assert ok.choices[0].message.content == ANSWER


async def test_stream_error_with_the_openai_sdk() -> None:
    """stream_error: the openai SDK raises APIError mid-stream after the given events."""
    async with chaos([{"type": "stream_error", "after_events": 4}]) as (_, url, _m):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        got = 0
        async with client:
            stream = await client.chat.completions.create(
                model="m", messages=CHAT["messages"], stream=True
            )
            with pytest.raises(openai.APIError, match="overloaded"):
                async for _ in stream:
                    got += 1
    assert got == 4


async def test_corrupt_malformed_json_and_drop_terminal() -> None:
    """corrupt: one event's JSON is cut; drop_terminal ends the answer without [DONE]."""
    fault = {"type": "corrupt", "action": "malformed_json", "after_events": 2}
    async with chaos([fault]) as (_, url, _m):
        _, chunks, _ = await stream_chat(url)
    events = EventDecoder().feed(joined(chunks))
    assert not events[2].data.endswith("}")
    async with chaos([{"type": "corrupt", "action": "drop_terminal"}]) as (_, url, _m):
        _, chunks, error = await stream_chat(url)
    summary = stream_summary(joined(chunks), "openai")
    assert (error, summary.terminated, summary.text) == (None, False, ANSWER)


async def test_buffer_delivers_everything_at_the_end() -> None:
    """buffer: nothing until upstream ends, then every event within a few ms."""
    paced = MockSettings(ttft_ms=5, tokens_per_s=50, tokens=15)  # about 0.3 s upstream
    async with chaos([{"type": "buffer"}], settings=paced) as (_, url, _m):
        _, chunks, _ = await stream_chat(url)
    times = event_times(chunks)
    assert times[0] >= 0.25
    assert times[-1] - times[0] < 0.05
    assert stream_summary(joined(chunks), "openai").terminated


async def test_concurrency_limit_refuses_then_releases() -> None:
    """concurrency_limit 1: a second stream while one is open gets 429; later ones pass."""
    slow = MockSettings(ttft_ms=5, tokens_per_s=40, tokens=12)
    fault = {"type": "concurrency_limit", "max_streams": 1, "retry_after_s": 1}
    async with chaos([fault], settings=slow) as (_, url, _m):
        first = asyncio.ensure_future(stream_chat(url))
        await asyncio.sleep(0.1)
        status, chunks, _ = await stream_chat(url)
        assert status == 429
        assert b"rate_limit_exceeded" in joined(chunks)
        assert (await first)[0] == 200
        assert (await stream_chat(url))[0] == 200


async def test_network_block_both_directions() -> None:
    """network: latency on both ways, upload at up_kbps, download at down_kbps, loss kept whole."""
    network = {"latency_ms": 50, "up_kbps": 800, "down_kbps": 400, "loss": 0.05}
    body = {**CHAT, "padding": "x" * 20_000}  # 20 kB up at 100 kB/s: >= 0.2 s
    async with chaos([], network=network) as (_, url, _m):
        start = time.monotonic()
        _, chunks, error = await stream_chat(url, body)
        elapsed = time.monotonic() - start
    assert error is None
    assert stream_summary(joined(chunks), "openai").text == ANSWER
    size = len(joined(chunks))
    assert elapsed >= 0.1 + 0.2 + size / 50_000 * 0.9


async def test_seeded_replay_gives_identical_fault_logs() -> None:
    """Two fresh proxies, same profile and seed, 50 requests: the same faults at the same points."""
    faults = [
        {"type": "disconnect", "after_events": 3, "mode": "close", "probability": 0.3},
        {"type": "corrupt", "action": "drop_event", "rate": 0.1},
        {"type": "latency", "per_event_ms": 1, "jitter_ms": 1, "probability": 0.2},
    ]
    tiny = MockSettings(ttft_ms=0, tokens_per_s=0, tokens=6)
    logs = []
    for _ in range(2):
        async with chaos(faults, settings=tiny, seed=42) as (proxy, url, _m):
            for _ in range(50):
                await stream_chat(url)
            logs.append([e.position() for e in proxy.fault_log])
    assert logs[0] == logs[1]
    assert {p[1] for p in logs[0]} == {"disconnect", "corrupt", "latency"}


async def ws_tokens(url: str, prompt: str = "hi") -> tuple[list[str], int | None, float]:
    """Send one prompt over /ws; the message texts, the close code and the time taken."""
    start = time.monotonic()
    texts: list[str] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws") as ws:
        await ws.send_json({"prompt": prompt})
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            texts.append(msg.data)
            if '"done"' in msg.data:
                break
        code = ws.close_code
    return texts, code, time.monotonic() - start


async def test_websocket_disconnect_codes() -> None:
    """WS disconnect after 3 messages: reset -> 1006 (no close frame), close -> 1011."""
    ws_settings = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=10)
    for mode, code in (("reset", 1006), ("close", 1011)):
        fault = {"type": "disconnect", "after_events": 3, "mode": mode}
        async with chaos([fault], settings=ws_settings) as (_, url, _m):
            texts, got, _ = await ws_tokens(url)
        assert (len(texts), got) == (3, code)


async def test_websocket_latency_and_duplicate() -> None:
    """WS: per-message latency paces messages; duplicate_event repeats one message."""
    ws_settings = MockSettings(ttft_ms=0, tokens_per_s=0, tokens=5)
    async with chaos([{"type": "latency", "per_event_ms": 60}], settings=ws_settings) as (
        _,
        url,
        _m,
    ):
        texts, _, elapsed = await ws_tokens(url)
    assert len(texts) == 6 and elapsed >= 0.06
    fault = {"type": "corrupt", "action": "duplicate_event", "after_events": 1}
    async with chaos([fault], settings=ws_settings) as (_, url, _m):
        texts, _, _ = await ws_tokens(url)
    assert len(texts) == 7 and texts[1] == texts[2]


async def test_recurring_outage_hits_an_open_stream() -> None:
    """A recurring buffer window holds an open stream's events, then releases them at once."""
    paced = MockSettings(ttft_ms=0, tokens_per_s=40, tokens=50)  # about 1.25 s of events
    fault = {"type": "buffer", "window": {"every_s": 1.0, "for_s": 0.4}}
    async with chaos([fault], settings=paced) as (proxy, url, _m):
        # Windows count from the last reset: start the stream half a second into the
        # cycle, so the outage at 1.0-1.4 s falls in its middle however slow set-up was.
        proxy.reset()
        await asyncio.sleep(0.5)
        _, chunks, error = await stream_chat(url)
    assert error is None
    assert stream_summary(joined(chunks), "openai").text == answer_text(CHAT, 50)
    times = event_times(chunks)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # The outage at 1.0-1.4 s: nothing for most of it, then what it held in one burst.
    assert max(gaps) >= 0.25
    burst = gaps.index(max(gaps)) + 1
    assert times[burst + 5] - times[burst] < 0.02
    assert [e.action for e in proxy.fault_log].count("flush") >= 1
