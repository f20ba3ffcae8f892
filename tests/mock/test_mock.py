"""The embedded mock model server, driven over real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from chaosstream.mock import (
    STATS,
    MockServer,
    MockSettings,
    answer_text,
    answer_tokens,
    create_app,
    mock_bytes,
    start_mock,
)

FAST = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=12)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(settings=FAST) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _sse_events(raw: bytes) -> list[dict[str, str]]:
    """Split an SSE body into events (field -> value) the simple way: tests only."""
    events = []
    for block in raw.decode("utf-8").split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        events.append(fields)
    return events


def _openai_text(raw: bytes) -> str:
    chunks = [json.loads(e["data"]) for e in _sse_events(raw) if e["data"] != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


# --- deterministic text ---------------------------------------------------------------


def test_same_prompt_same_answer_different_prompt_different_answer() -> None:
    """Answers depend on the prompt only, through a stable hash."""
    assert answer_tokens(CHAT, 30) == answer_tokens(json.dumps(CHAT).encode(), 30)
    other = {**CHAT, "messages": [{"role": "user", "content": "Why is grass green?"}]}
    assert answer_text(CHAT, 30) != answer_text(other, 30)
    assert answer_text("plain", 10) == answer_text({"prompt": "plain"}, 10)


def test_delivery_fields_do_not_change_the_answer() -> None:
    """stream, model and max_tokens are set aside, so a fallback gets the same text."""
    varied = {**CHAT, "stream": True, "model": "other", "max_tokens": 5, "stream_options": {}}
    assert answer_text(varied, 25) == answer_text(CHAT, 25)


def test_tokens_are_word_like_with_a_prefix_property() -> None:
    """The first token has no leading space, later words do, and n tokens prefix n+k."""
    tokens = answer_tokens(CHAT, 60)
    assert not tokens[0].startswith(" ")
    assert all(t.startswith(" ") or t in ",.;:!?" for t in tokens[1:])
    assert answer_tokens(CHAT, 20) == tokens[:20]
    assert answer_tokens(CHAT, 0) == []


def test_answers_exercise_multibyte_utf8() -> None:
    """Some tokens are non-ASCII, so byte splitting inside a character gets tested."""
    text = "".join(answer_text(f"prompt {i}", 40) for i in range(5))
    assert len(text.encode("utf-8")) > len(text)


def test_settings_reject_bad_values() -> None:
    """MockSettings refuses negative or non-integer values with a message."""
    with pytest.raises(ValueError, match="ttft_ms"):
        MockSettings(ttft_ms=-1)
    with pytest.raises(ValueError, match="tokens"):
        MockSettings(tokens=-3)
    with pytest.raises(ValueError, match="tokens_per_s"):
        MockSettings(tokens_per_s=-1)


# --- OpenAI -------------------------------------------------------------------------------


async def test_openai_stream_and_non_stream_give_the_same_text(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """A streaming request and its non-streaming twin return answer_text(body)."""
    url = mock.url + "/v1/chat/completions"
    async with http.post(url, json=CHAT) as resp:
        whole = await resp.json()
    async with http.post(url, json={**CHAT, "stream": True}) as resp:
        streamed = _openai_text(await resp.read())
    assert whole["choices"][0]["message"]["content"] == streamed == answer_text(CHAT, 12)
    assert whole["object"] == "chat.completion"
    assert whole["model"] == "m"
    assert whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"]["completion_tokens"] == 12


async def test_openai_stream_shape(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """Role chunk, one chunk per token, finish_reason stop, usage chunk, then [DONE]."""
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(mock.url + "/v1/chat/completions", json=body) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        raw = await resp.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    events = _sse_events(raw)
    assert all(set(e) == {"data"} for e in events)
    chunks = [json.loads(e["data"]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    token_chunks = chunks[1:13]
    assert [c["choices"][0]["delta"]["content"] for c in token_chunks] == answer_tokens(CHAT, 12)
    assert chunks[13]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[14]["choices"] == []
    assert chunks[14]["usage"]["completion_tokens"] == 12
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


async def test_openai_bad_json_is_a_400_in_openai_shape(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """A body that is not JSON gets OpenAI's invalid_request_error."""
    async with http.post(mock.url + "/v1/chat/completions", data=b"{nope") as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert {"message", "param", "code"} <= set(error)


async def test_bad_override_header_is_a_400(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """An unparsable x-chaosstream-mock-* header is named in the 400 message."""
    headers = {"x-chaosstream-mock-tokens": "lots"}
    async with http.post(mock.url + "/v1/chat/completions", json=CHAT, headers=headers) as resp:
        assert resp.status == 400
        assert "x-chaosstream-mock-tokens" in (await resp.json())["error"]["message"]


async def test_models_list(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """GET /v1/models lists models and /v1/models/{id} echoes any id."""
    async with http.get(mock.url + "/v1/models") as resp:
        listing = await resp.json()
    assert listing["object"] == "list"
    assert listing["data"][0]["object"] == "model"
    async with http.get(mock.url + "/v1/models/gpt-x") as resp:
        assert (await resp.json())["id"] == "gpt-x"


# --- Anthropic ----------------------------------------------------------------------------


async def test_anthropic_non_stream_message(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """A non-streaming /v1/messages returns a message object with the answer."""
    body = {**CHAT, "system": "be brief", "max_tokens": 100}
    async with http.post(mock.url + "/v1/messages", json=body) as resp:
        message = await resp.json()
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": answer_text(body, 12)}]
    assert message["stop_reason"] == "end_turn"
    assert message["stop_sequence"] is None
    assert message["usage"]["output_tokens"] == 12


async def test_anthropic_stream_event_order(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """Events follow Anthropic's order, with pings, and names match the data's type."""
    headers = {"x-chaosstream-mock-tokens": "25"}
    body = {**CHAT, "stream": True}
    async with http.post(mock.url + "/v1/messages", json=body, headers=headers) as resp:
        events = _sse_events(await resp.read())
    names = [e["event"] for e in events]
    assert all(json.loads(e["data"])["type"] == e["event"] for e in events)
    without_pings = [n for n in names if n != "ping"]
    assert without_pings == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 25,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert names[2] == "ping"
    assert names.count("ping") == 3
    deltas = [json.loads(e["data"]) for e in events if e["event"] == "content_block_delta"]
    assert "".join(d["delta"]["text"] for d in deltas) == answer_text(body, 25)
    assert json.loads(events[-2]["data"])["delta"]["stop_reason"] == "end_turn"


async def test_anthropic_bad_json_is_a_400_in_anthropic_shape(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """A body that is not JSON gets Anthropic's error envelope."""
    async with http.post(mock.url + "/v1/messages", data=b"[1,") as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"


# --- generic SSE and WebSocket ------------------------------------------------------------


async def test_sse_ids_retry_and_done(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """Every event has a 1-based id, the first a retry, and the last is done/[DONE]."""
    async with http.get(mock.url + "/sse", params={"prompt": "hello", "tokens": "5"}) as resp:
        events = _sse_events(await resp.read())
    assert events[0]["retry"] == "1000"
    assert all("retry" not in e for e in events[1:])
    assert [e["id"] for e in events] == ["1", "2", "3", "4", "5", "6"]
    assert "".join(e["data"] for e in events[:-1]) == answer_text("hello", 5)
    assert events[-1] == {"id": "6", "event": "done", "data": "[DONE]"}


async def test_sse_resumes_after_last_event_id(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """A reconnect with Last-Event-ID: k continues at token k + 1."""
    params = {"prompt": "resume me", "tokens": "8"}
    headers = {"Last-Event-ID": "3"}
    async with http.get(mock.url + "/sse", params=params, headers=headers) as resp:
        events = _sse_events(await resp.read())
    assert events[0]["id"] == "4"
    assert events[0]["retry"] == "1000"
    rest = "".join(e["data"] for e in events[:-1])
    assert "".join(answer_tokens("resume me", 8)[:3]) + rest == answer_text("resume me", 8)


async def test_sse_bad_last_event_id_is_a_400(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """A Last-Event-ID that is not a token index is refused with a JSON error."""
    for bad in ("abc", "-2", "999"):
        async with http.get(mock.url + "/sse", headers={"Last-Event-ID": bad}) as resp:
            assert resp.status == 400
            assert "Last-Event-ID" in (await resp.json())["error"]["message"]


async def test_websocket_tokens_done_and_errors(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """Each prompt gets indexed token messages then done; bad messages get an error."""
    async with http.ws_connect(mock.url + "/ws") as ws:
        for prompt in ("first", "second"):
            await ws.send_json({"prompt": prompt, "tokens": 4})
            replies = [await ws.receive_json(timeout=5) for _ in range(5)]
            assert [r.get("index") for r in replies] == [1, 2, 3, 4, None]
            assert "".join(r["text"] for r in replies[:4]) == answer_text(prompt, 4)
            assert replies[4] == {"type": "done"}
        await ws.send_str("not json")
        error = await ws.receive_json(timeout=5)
    assert error["type"] == "error"
    assert "JSON" in error["message"]


# --- timing -------------------------------------------------------------------------------


async def _token_times(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[float, list[float]]:
    started = time.monotonic()
    times: list[float] = []
    async with http.get(url, headers=headers) as resp:
        headers_at = time.monotonic() - started
        async for line in resp.content:
            if line.startswith(b"id: "):
                times.append(time.monotonic() - started)
    return headers_at, times


async def test_ttft_is_honoured_and_headers_come_first(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """Headers arrive at once; the first token waits for the TTFT."""
    headers = {"x-chaosstream-mock-ttft-ms": "300", "x-chaosstream-mock-tokens": "2"}
    headers_at, times = await _token_times(http, mock.url + "/sse", headers)
    assert headers_at < 0.25
    assert 0.29 <= times[0] < 2.0


async def test_pacing_is_roughly_honoured(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """11 tokens at 50 tokens/s span about 200 ms after the first."""
    headers = {
        "x-chaosstream-mock-ttft-ms": "0",
        "x-chaosstream-mock-tokens-per-s": "50",
        "x-chaosstream-mock-tokens": "11",
    }
    _, times = await _token_times(http, mock.url + "/sse", headers)
    span = times[10] - times[0]
    assert 0.18 <= span < 1.5
    gaps = [b - a for a, b in itertools.pairwise(times[:10])]
    # The median, not the smallest: a starved test process reads two tokens in one go.
    assert statistics.median(gaps) > 0.005


# --- bytes, echo, health, static, history -------------------------------------------------


async def test_bytes_are_deterministic(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """/bytes serves mock_bytes(n, seed) with a Content-Length."""
    async with http.get(mock.url + "/bytes", params={"n": "200000", "seed": "9"}) as resp:
        assert resp.headers["Content-Length"] == "200000"
        body = await resp.read()
    assert body == mock_bytes(200000, "9")
    assert body != mock_bytes(200000, "10")


async def test_echo_returns_the_body_verbatim(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """/echo answers with the exact bytes, their Content-Type and SHA-256."""
    payload = bytes(range(256)) * 40 + "café".encode()
    headers = {"Content-Type": "application/x-test"}
    async with http.post(mock.url + "/echo", data=payload, headers=headers) as resp:
        body = await resp.read()
        assert resp.headers["Content-Type"] == "application/x-test"
        assert resp.headers["x-chaosstream-sha256"] == hashlib.sha256(payload).hexdigest()
    assert body == payload


async def test_healthz_and_request_history(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """/healthz answers ok and every request lands in the history."""
    async with http.get(mock.url + "/healthz?x=1", headers={"X-Probe": "yes"}) as resp:
        assert await resp.json() == {"ok": True}
    method, path, headers, body, _ = mock.requests[-1]
    assert (method, path, body) == ("GET", "/healthz?x=1", b"")
    assert headers["x-probe"] == "yes"


async def test_static_page_is_served_from_web_dir(tmp_path: Path) -> None:
    """The web folder's index.html is served at / without hiding the API."""
    (tmp_path / "index.html").write_text("<h1>hi</h1>")
    (tmp_path / "app.js").write_text("1;")
    async with TestClient(TestServer(create_app(FAST, web_dir=tmp_path))) as client:
        assert await (await client.get("/")).text() == "<h1>hi</h1>"
        assert await (await client.get("/app.js")).text() == "1;"
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/missing")).status == 404


# --- abandoned streams --------------------------------------------------------------------


async def _abandon_stream(url: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session:
        resp = await session.post(url, json=body, headers={"x-chaosstream-mock-tokens": "500"})
        await resp.content.readline()
        resp.close()


async def test_client_disconnect_is_counted_without_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client leaving mid-stream ends the handler quietly and counts as closed_early."""
    slow = MockSettings(ttft_ms=0, tokens_per_s=20, tokens=40)
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with await start_mock(settings=slow) as server:
        await _abandon_stream(server.url + "/v1/chat/completions", {**CHAT, "stream": True})
        await _abandon_stream(server.url + "/v1/messages", {**CHAT, "stream": True})
        assert await server.stats.wait_until(lambda s: s.closed_early == 2, timeout_s=5)
        assert server.open_streams == 0
        assert server.stats.completed_streams == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_client_gone_before_headers_is_not_a_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that hangs up right after sending its request leaves no error in the log."""
    fast = MockSettings(ttft_ms=0, tokens_per_s=0, tokens=3000)
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    body = json.dumps({**CHAT, "stream": True})
    request = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    async with await start_mock(settings=fast) as server:
        for _ in range(10):
            _, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(request)
            await writer.drain()
            writer.transport.abort()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_disconnect_is_noticed_without_handler_cancellation() -> None:
    """Under a runner that does not cancel handlers, a client leaving is still seen soon."""
    slow = MockSettings(ttft_ms=0, tokens_per_s=2, tokens=40)
    app = create_app(slow)
    async with TestServer(app) as server:
        url = str(server.make_url("/sse"))
        async with aiohttp.ClientSession() as session:
            resp = await session.get(url)
            await resp.content.readline()
            resp.close()
        stats = app[STATS]
        assert await stats.wait_until(lambda s: s.closed_early == 1, timeout_s=3)
        assert stats.open_streams == 0


async def test_websocket_close_mid_answer_is_counted(mock: MockServer) -> None:
    """A WebSocket client that closes during an answer ends it as closed_early."""
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(mock.url + "/ws")
        await ws.send_json({"prompt": "long", "tokens": 100, "tokens_per_s": 10})
        assert (await ws.receive_json(timeout=5))["index"] == 1
        await asyncio.wait_for(ws.close(), 5)
    assert await mock.stats.wait_until(lambda s: s.closed_early == 1, timeout_s=3)
    assert mock.open_streams == 0


# --- run_mock -----------------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_run_mock_reports_its_url_and_stops_on_a_signal(stop_signal: int) -> None:
    """run_mock calls on_ready with the URL, serves, and exits 0 on Ctrl-C or SIGTERM."""
    code = (
        "from chaosstream.mock import run_mock; run_mock(on_ready=lambda u: print(u, flush=True))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as resp:
            assert resp.status == 200
        proc.send_signal(stop_signal)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _ignore_sigint() -> None:
    """What a non-interactive shell does to a command it starts with ``&`` (POSIX)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def test_run_mock_stops_on_sigint_inherited_ignored() -> None:
    """A script's background job starts with SIGINT ignored, so no KeyboardInterrupt ever
    comes; run_mock still stops on `kill -INT` and exits 0, as the proxy does."""
    code = (
        "import signal; assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN; "
        "from chaosstream.mock import run_mock; run_mock(on_ready=lambda u: print(u, flush=True))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, preexec_fn=_ignore_sigint
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert url.startswith("http://127.0.0.1:"), url
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- CORS (a page on its own origin calling the API directly) --------------------------------


async def test_cors_preflight_and_streamed_answer_allow_any_origin(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """A preflight gets 204 with leave for the method and headers asked (not recorded as a
    request); the streamed answer to a request with an Origin carries Allow-Origin *."""
    url = f"{mock.url}/v1/chat/completions"
    before = len(mock.stats.history)
    asked = "authorization, content-type"
    async with http.options(
        url,
        headers={
            "Origin": "http://127.0.0.1:9",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked,
        },
    ) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Headers"] == asked
    assert len(mock.stats.history) == before
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(url, json=body, headers={"Origin": "http://127.0.0.1:9"}) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["Access-Control-Expose-Headers"] == "*"
        assert "[DONE]" in (await r.read()).decode()
    async with http.post(url, json=body) as r:  # no Origin: no CORS headers, as before
        assert "Access-Control-Allow-Origin" not in r.headers
        await r.read()
