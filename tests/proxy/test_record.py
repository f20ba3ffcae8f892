"""The recorder: full per-exchange records through a real proxy and mock, and the JSONL sink."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from chaosstream.faults.profile import load_profile, profile_from_data
from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock
from chaosstream.proxy.record import Exchange, JsonlSink, Recorder, fingerprint
from chaosstream.proxy.server import ChaosProxy

FAST = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=20)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Why is the sea salty?"}]}


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(settings=FAST) as server:
        yield server


async def _proxy(
    mock: MockServer, profile: str | dict[str, object], recorder: Recorder
) -> ChaosProxy:
    loaded = load_profile(profile) if isinstance(profile, str) else profile_from_data(profile, "t")
    proxy = ChaosProxy(mock.url, loaded, seed=1, recorder=recorder)
    await proxy.start()
    return proxy


async def _post(url: str, body: dict[str, object]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/chat/completions", json=body) as r:
        try:
            return r.status, await r.read()
        except aiohttp.ClientPayloadError:
            return r.status, b""


def test_fingerprint_sets_the_stream_flag_aside() -> None:
    """Equivalent = same endpoint and body apart from stream/stream_options, key order ignored."""
    a = fingerprint("POST", "/v1/chat/completions", "", b'{"stream": true, "model": "m", "x": 1}')
    b = fingerprint("POST", "/v1/chat/completions", "", b'{"x":1,"model":"m","stream_options":{}}')
    c = fingerprint("POST", "/v1/chat/completions", "", b'{"x": 2, "model": "m"}')
    d = fingerprint("POST", "/v1/messages", "", b'{"x": 1, "model": "m"}')
    assert a == b and a != c and a != d
    assert fingerprint("GET", "/sse", "prompt=a", b"") != fingerprint(
        "GET", "/sse", "prompt=b", b""
    )


async def test_clean_stream_record(mock: MockServer) -> None:
    """A clean stream is complete: the mock's full answer in both texts, events counted."""
    recorder = Recorder()
    proxy = await _proxy(mock, "clean", recorder)
    try:
        status, _ = await _post(proxy.url, {**CHAT, "stream": True})
    finally:
        await proxy.close()
    (ex,) = recorder.exchanges
    row = ex.record()
    assert status == 200 and row["status"] == 200 and row["outcome"] == "complete"
    assert row["response_text"] == row["client_text"] == answer_text(CHAT, FAST.tokens)
    assert row["tokens"] == FAST.tokens and row["events"] > FAST.tokens
    assert row["stream"] is True and row["upstream_complete"] is True and ex.client_complete
    assert row["ttft_ms"] is not None and row["ttlt_ms"] >= row["ttft_ms"]
    assert row["faults"] == [] and row["retry_after"] is None


async def test_cut_stream_record(mock: MockServer) -> None:
    """A cut stream: outcome fault, the fault's position, the client's text a strict prefix."""
    recorder = Recorder()
    proxy = await _proxy(mock, "midstream-close", recorder)
    try:
        await _post(proxy.url, {**CHAT, "stream": True})
    finally:
        await proxy.close()
    (ex,) = recorder.exchanges
    assert ex.outcome == "fault" and ex.failed
    assert ex.faults[0].type == "disconnect" and ex.faults[0].events == 12
    full = answer_text(CHAT, FAST.tokens)
    assert full.startswith(ex.client_text) and len(ex.client_text) < len(full)
    assert ex.events == 12


async def test_refusal_records_retry_after(mock: MockServer) -> None:
    """A 429 keeps status, Retry-After and outcome refused; a JSON answer is rebuilt too."""
    recorder = Recorder()
    profile = {
        "version": 1,
        "name": "rl",
        "faults": [{"type": "http_error", "status": 429, "retry_after_s": 2, "requests": [1]}],
    }
    proxy = await _proxy(mock, profile, recorder)
    try:
        await _post(proxy.url, {**CHAT, "stream": True})
        await _post(proxy.url, {**CHAT, "stream": False})
    finally:
        await proxy.close()
    first, second = recorder.exchanges
    assert (first.status, first.retry_after, first.outcome) == (429, "2", "refused")
    assert first.failed and first.fingerprint == second.fingerprint
    assert second.stream is False and second.response_text == answer_text(CHAT, FAST.tokens)
    assert second.client_complete


async def test_jsonl_sink_writes_whole_lines(mock: MockServer, tmp_path: Path) -> None:
    """Each finished exchange becomes exactly one JSON line, flushed at once."""
    path = tmp_path / "rec.jsonl"
    recorder = Recorder()
    sink = JsonlSink(path)
    recorder.listeners.append(sink)
    proxy = await _proxy(mock, "clean", recorder)
    try:
        for _ in range(3):
            await _post(proxy.url, {**CHAT, "stream": True})
            assert path.read_text(encoding="utf-8").endswith("\n")
    finally:
        await proxy.close()
        sink.close()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert {r["fingerprint"] for r in rows} == {recorder.exchanges[0].fingerprint}


def test_texts_are_computed_once() -> None:
    """The derived texts are parsed lazily and cached: later chunk changes do not re-parse."""
    ex = Exchange(id=1, method="GET", path="/sse", provider="sse", stream=True, started=0.0)
    ex.content_type = "text/event-stream"
    ex.upstream_chunks.append(b"id: 1\ndata: hello\n\n")
    assert ex.response_text == "hello" and ex.delivered_event_id == "1"
    ex.upstream_chunks.append(b"id: 2\ndata: again\n\n")
    assert ex.response_text == "hello"


def test_stamps_are_opt_in_capped_and_counted() -> None:
    """Recorder(stamps=True) times each body append with the bytes kept; capped; in the budget."""
    from chaosstream.proxy.record import STAMP_LIMIT

    assert Recorder().body().times() == []
    body = Recorder(stamps=True).body()
    body.append(b"data: a\n\n")
    body.append(b"data: bb\n\n")
    (t1, n1), (t2, n2) = body.times()
    assert (n1, n2) == (9, 19) and t1 <= t2
    assert body.held == 19 + 4 * 8  # two (time, bytes) pairs of doubles
    for _ in range(STAMP_LIMIT + 10):
        body.append(b"x")
    assert len(body.times()) == STAMP_LIMIT
    assert len(bytes(body)) == 19 + STAMP_LIMIT + 10  # the bytes are all kept


async def test_stamped_recorder_times_every_delivery_through_the_proxy(mock: MockServer) -> None:
    """Through a real proxy, a stamped recorder's last stamp covers the whole body sent."""
    recorder = Recorder(stamps=True)
    proxy = await _proxy(mock, "clean", recorder)
    try:
        _, body = await _post(proxy.url, {**CHAT, "stream": True})
    finally:
        await proxy.close()
    (ex,) = recorder.exchanges
    times = ex.upstream_chunks.times()
    assert times and times[-1][1] == len(body)
    assert ex.started <= times[0][0] <= times[-1][0] <= (ex.ended or 0.0)


async def test_scoped_records_name_their_scope(mock: MockServer) -> None:
    """A scoped exchange's record and JSONL line carry its scope; an unscoped one's is null."""
    recorder = Recorder()
    proxy = await _proxy(mock, "clean", recorder)
    scoped: list[Exchange] = []
    proxy.scopes.listeners.append(lambda _scope, ex: scoped.append(ex))
    try:
        await _post(proxy.url, CHAT)
        await _post(f"{proxy.url}/~/test-7", CHAT)
    finally:
        await proxy.close()
    (plain,) = recorder.exchanges
    (ex,) = scoped
    assert plain.record()["scope"] is None
    assert ex.scope == "test-7" and json.loads(json.dumps(ex.record()))["scope"] == "test-7"
