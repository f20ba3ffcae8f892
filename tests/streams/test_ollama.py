"""Tests for chaosstream.streams.ollama: Ollama's NDJSON frames, and the ollama client through
the proxy under the fault catalog (ollama 0.6: what it raises, and what the recorder saw)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import pytest

from chaosstream.faults import RequestInfo
from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock
from chaosstream.proxy.record import Exchange
from chaosstream.streams.ndjson import NDJSON_FRAMER, LineSplitter
from chaosstream.streams.ollama import Ollama
from chaosstream.streams.registry import format_for, framer_for, get, stream_summary
from tests.conftest import ProxyFactory, make_profile

FMT = Ollama()
TOKENS = 20
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Tell me about streaming."}]
EXPECTED = answer_text({"messages": MESSAGES}, TOKENS)
LINE = b'{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}\n'
DONE = (
    b'{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}\n'
)


def frame(raw: bytes) -> Any:
    return NDJSON_FRAMER.parse(raw, False)


def test_registry_names_ollama_paths_and_its_framing() -> None:
    """/api/chat and /api/generate (any prefix) are Ollama, framed as NDJSON lines."""
    assert format_for("POST", "/api/chat").name == "ollama"
    assert format_for("POST", "/gw/ollama/api/generate?x=1").name == "ollama"
    assert framer_for("ollama") is NDJSON_FRAMER
    assert get("ollama").media_type == "application/x-ndjson"


def test_text_terminal_and_error_lines() -> None:
    """Text comes from message.content or response; done:true ends; a truthy error is an error."""
    assert FMT.text(frame(LINE)) == "Hi"
    assert FMT.text(frame(b'{"response":" there","done":false}\n')) == " there"
    assert FMT.text(frame(DONE)) is None and FMT.is_terminal(frame(DONE))
    assert not FMT.is_terminal(frame(LINE))
    assert FMT.is_error(frame(b'{"error":"boom"}\n'))
    assert not FMT.is_error(frame(b'{"error":""}\n'))
    assert FMT.text(frame(b"\n")) is None and not frame(b"\n").has_data
    assert FMT.text(frame(b'{"message":{"content":"x"\n')) is None


def test_made_frames_are_what_the_client_reads() -> None:
    """error_frame, terminal_frame and error_body are single JSON lines in Ollama's shape."""
    for kind in ("overloaded", "server_error", "rate_limit"):
        raw = FMT.error_frame(kind)
        assert LineSplitter().feed(raw) == [raw] and FMT.is_error(frame(raw))
    assert FMT.is_terminal(frame(FMT.terminal_frame()))
    assert json.loads(FMT.error_body(404, "model 'x' not found")) == {
        "error": "model 'x' not found"
    }
    assert "busy" in json.loads(FMT.error_body(503))["error"]


def test_stream_flag_defaults_to_streaming() -> None:
    """stream absent or true streams; only stream:false asks for one JSON object."""

    def info(body: Any) -> RequestInfo:
        return RequestInfo("POST", "/api/chat", "", {}, b"", "ollama", True, json=body)

    assert FMT.wants_stream(info({"model": "m"}))
    assert FMT.wants_stream(info({"model": "m", "stream": True}))
    assert not FMT.wants_stream(info({"model": "m", "stream": False}))


def test_summary_rebuilds_text_and_sees_the_end() -> None:
    """A recorded body's text is every line's text; done:true marks it terminated."""
    summary = stream_summary(LINE * 3 + DONE, "ollama")
    assert summary.text == "HiHiHi" and summary.tokens == 3 and summary.terminated
    assert not stream_summary(LINE * 3, "ollama").terminated


def test_equivalent_sets_the_stream_flag_aside() -> None:
    """A stream:false fallback is the same request once stream is set aside."""
    a = FMT.equivalent("/api/chat", "", {"model": "m", "messages": MESSAGES, "stream": True})
    b = FMT.equivalent("/api/chat", "", {"model": "m", "messages": MESSAGES, "stream": False})
    assert a == b


# --- the ollama client through the proxy ------------------------------------------------


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(
        settings=MockSettings(ttft_ms=5, tokens_per_s=0, tokens=TOKENS)
    ) as s:
        yield s


async def chat(url: str, stream: bool) -> tuple[str, BaseException | None]:
    """Run ollama.AsyncClient.chat; the text it yielded and what it raised (None if nothing)."""
    parts: list[str] = []
    async with ollama.AsyncClient(host=url) as client:
        try:
            if not stream:
                return (await client.chat(model="m", messages=MESSAGES)).message.content or "", None
            async for part in await client.chat(model="m", messages=MESSAGES, stream=True):
                parts.append(part.message.content or "")
        except Exception as exc:  # what the SDK raises is the result under test
            return "".join(parts), exc
    return "".join(parts), None


async def last_exchange(proxy: Any) -> Exchange:
    """The proxy's last finished exchange (the recorder gets it right after the response)."""
    for _ in range(100):
        if proxy.recorder.exchanges and proxy.recorder.exchanges[-1].ended is not None:
            break
        await asyncio.sleep(0.01)
    ex: Exchange = proxy.recorder.exchanges[-1]
    return ex


async def test_same_text_through_the_proxy_streaming_and_not(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """Without faults the client gets the mock's text through the proxy, streamed and whole."""
    proxy = await proxy_factory(mock.url)
    for stream in (True, False):
        text, error = await chat(proxy.url, stream)
        assert (text, error) == (EXPECTED, None)
        ex = await last_exchange(proxy)
        assert ex.provider == "ollama" and ex.stream is stream
        assert ex.client_text == EXPECTED and ex.client_complete


@pytest.mark.parametrize(
    ("fault", "raises", "delivered"),
    [
        # A reset: httpx's own ReadError comes through (the client wraps only connect errors).
        ({"type": "disconnect", "after_tokens": 5, "mode": "reset"}, httpx.ReadError, 5),
        # A clean close without the done line: the iteration just ends, no error at all.
        ({"type": "disconnect", "after_tokens": 5, "mode": "close"}, None, 5),
        (
            {"type": "stream_error", "after_events": 5, "kind": "overloaded"},
            ollama.ResponseError,
            5,
        ),
        (
            {"type": "corrupt", "action": "malformed_json", "after_events": 5},
            json.JSONDecodeError,
            TOKENS - 1,  # the proxy sends the rest; the client stopped at the broken line
        ),
        # No done line but every token: the client cannot tell.
        ({"type": "corrupt", "action": "drop_terminal"}, None, TOKENS),
        ({"type": "throttle", "tokens_per_s": 200}, None, TOKENS),
        ({"type": "latency", "per_event_ms": 5}, None, TOKENS),
    ],
)
async def test_faults_make_the_client_do_what_it_really_does(
    mock: MockServer,
    proxy_factory: ProxyFactory,
    fault: dict[str, object],
    raises: type[BaseException] | None,
    delivered: int,
) -> None:
    """Each fault fires on the NDJSON stream; the client raises its own error (or nothing)."""
    proxy = await proxy_factory(mock.url, make_profile([fault]))
    text, error = await chat(proxy.url, stream=True)
    if raises is None:
        assert error is None
    else:
        assert isinstance(error, raises), repr(error)
    ex = await last_exchange(proxy)
    assert [f.type for f in ex.faults] == [fault["type"]]
    assert ex.tokens == delivered
    assert text == ex.client_text or raises is not None
    if fault["type"] in ("throttle", "latency"):
        assert ex.client_complete and text == EXPECTED
    elif fault.get("action") != "malformed_json":
        assert not ex.client_complete  # the recorder knows the answer did not end well


async def test_client_env_points_a_default_ollama_client_at_the_proxy(
    mock: MockServer, proxy_factory: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run/check give the client OLLAMA_HOST: ollama.AsyncClient() with no host uses the proxy."""
    from chaosstream.clients.command import client_env

    proxy = await proxy_factory(mock.url)
    monkeypatch.setenv("OLLAMA_HOST", client_env(proxy.url, "s", mock=True)["OLLAMA_HOST"])
    async with ollama.AsyncClient() as client:
        whole = await client.chat(model="m", messages=MESSAGES)
    assert whole.message.content == EXPECTED
    assert (await last_exchange(proxy)).path == "/api/chat"


async def test_a_stream_false_retry_after_a_cut_is_an_equivalent_fallback(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A cut stream, then stream:false: same fingerprint, first failed, second not streaming."""
    cut = {"type": "disconnect", "after_tokens": 3, "mode": "reset", "requests": [1]}
    proxy = await proxy_factory(mock.url, make_profile([cut]))
    _, error = await chat(proxy.url, stream=True)
    assert error is not None
    text, error = await chat(proxy.url, stream=False)
    assert (text, error) == (EXPECTED, None)
    await last_exchange(proxy)
    first, second = list(proxy.recorder.exchanges)[-2:]
    assert first.fingerprint == second.fingerprint
    assert first.stream and first.failed
    assert not second.stream and second.client_complete
