"""Tests for chaosstream.streams.ui_message_stream: the AI SDK UI message stream's parts, and the
ai package's own chat client (ai 6.0.325 on Node) through the proxy under the fault catalog."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock
from chaosstream.proxy.record import Exchange
from chaosstream.streams.registry import (
    format_for,
    format_for_response,
    get,
    stream_summary,
)
from chaosstream.streams.sse import parse_event
from chaosstream.streams.ui_message_stream import UiMessageStream
from tests.conftest import ProxyFactory, make_profile
from tests.mock.test_mock_ui_stream import PROMPT, run_ui_chat

FMT = UiMessageStream()
TOKENS = 20
EXPECTED = answer_text({"messages": [{"role": "user", "content": PROMPT}]}, TOKENS)
DELTA = b'data: {"type":"text-delta","id":"t","delta":"Hi"}\n\n'
FINISH = b'data: {"type":"finish","finishReason":"stop"}\n\n'
DONE = b"data: [DONE]\n\n"


def test_recognised_by_the_response_header_on_any_route() -> None:
    """An app's own route (plain SSE by path) becomes the UI stream when its response says so."""
    plain = format_for("POST", "/my/app/chat")
    assert plain.name == "sse"
    header = {"x-vercel-ai-ui-message-stream": "v1"}
    assert format_for_response(plain, "text/event-stream", header).name == "ui-message-stream"
    assert format_for_response(plain, "text/event-stream", {}).name == "sse"
    # Ollama's /api/chat is also useChat's default route: an SSE answer with the header wins.
    ollama = format_for("POST", "/api/chat")
    assert format_for_response(ollama, "text/event-stream", header).name == "ui-message-stream"
    assert format_for_response(ollama, "application/x-ndjson", {}).name == "ollama"
    # A path's SSE format is never overruled.
    openai = format_for("POST", "/v1/chat/completions")
    assert format_for_response(openai, "text/event-stream", header) is openai
    assert format_for("POST", "/api/ui/chat").name == "ui-message-stream"


def test_text_terminal_and_error_parts() -> None:
    """text-delta carries text; finish (not [DONE]) completes; an error part is an error."""
    assert FMT.text(parse_event(DELTA)) == "Hi"
    assert FMT.is_terminal(parse_event(FINISH)) and not FMT.is_terminal(parse_event(DONE))
    assert not FMT.is_terminal(parse_event(b'data: {"type":"abort"}\n\n'))
    error = FMT.error_frame("overloaded")
    assert error.endswith(DONE) and FMT.is_error(parse_event(error.split(b"\n\n")[0] + b"\n\n"))
    assert FMT.is_terminal(parse_event(FMT.terminal_frame()))
    assert FMT.text(parse_event(b"data: {broken\n\n")) is None


def test_summary_and_equivalence() -> None:
    """The recorder rebuilds the text; a regenerate() retry is equivalent to the first request."""
    summary = stream_summary(DELTA * 2 + FINISH + DONE, get("ui-message-stream"))
    assert (summary.text, summary.terminated) == ("HiHi", True)
    assert not stream_summary(DELTA * 2 + DONE, "ui-message-stream").terminated
    first = {"id": "c", "messages": [{"id": "u1"}], "trigger": "submit-message"}
    retry = {"id": "c", "messages": [{"id": "u1"}], "trigger": "regenerate-message"}
    assert FMT.equivalent("/api/chat", "", first) == FMT.equivalent("/api/chat", "", retry)


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(
        settings=MockSettings(ttft_ms=5, tokens_per_s=0, tokens=TOKENS)
    ) as s:
        yield s


async def last_exchange(proxy: Any) -> Exchange:
    """The proxy's last finished exchange."""
    for _ in range(100):
        if proxy.recorder.exchanges and proxy.recorder.exchanges[-1].ended is not None:
            break
        await asyncio.sleep(0.01)
    ex: Exchange = proxy.recorder.exchanges[-1]
    return ex


@pytest.mark.parametrize("route", ["/api/ui/chat", "/api/chat"])
async def test_same_text_through_the_proxy(
    mock: MockServer, proxy_factory: ProxyFactory, route: str
) -> None:
    """Without faults the SDK's chat ends ready with the mock's text; the recorder agrees."""
    proxy = await proxy_factory(mock.url)
    code, _, summary = await run_ui_chat(proxy.url + route)
    assert (code, summary["status"], summary["text"]) == (0, "ready", EXPECTED)
    ex = await last_exchange(proxy)
    assert ex.provider == "ui-message-stream" and ex.client_complete
    assert ex.client_text == EXPECTED


@pytest.mark.parametrize(
    ("fault", "status", "error", "finish"),
    [
        # undici's body read fails: a TypeError "terminated" (not "fetch"/"network", so
        # the SDK does not call it a disconnect).
        ({"type": "disconnect", "after_tokens": 5, "mode": "reset"}, "error", "TypeError", None),
        # A clean close without finish: status ready, no error -- only finishReason is missing.
        ({"type": "disconnect", "after_tokens": 5, "mode": "close"}, "ready", None, None),
        ({"type": "stream_error", "after_events": 5, "kind": "overloaded"}, "error", "Error", None),
        (
            {"type": "corrupt", "action": "malformed_json", "after_events": 5},
            "error",
            "AI_JSONParseError",
            None,
        ),
        ({"type": "corrupt", "action": "drop_terminal"}, "ready", None, None),
        ({"type": "throttle", "tokens_per_s": 200}, "ready", None, "stop"),
        ({"type": "latency", "per_event_ms": 5}, "ready", None, "stop"),
    ],
)
async def test_faults_make_the_sdk_do_what_it_really_does(
    mock: MockServer,
    proxy_factory: ProxyFactory,
    fault: dict[str, object],
    status: str,
    error: str | None,
    finish: str | None,
) -> None:
    """Each fault fires on the UI stream; the SDK's chat ends as it really does; records agree."""
    proxy = await proxy_factory(mock.url, make_profile([fault]))
    code, _, summary = await run_ui_chat(proxy.url + "/api/ui/chat")
    assert summary["status"] == status and code == (1 if status == "error" else 0)
    assert (summary["error"] or {}).get("name") == error, json.dumps(summary)
    assert summary["finishReason"] == finish
    ex = await last_exchange(proxy)
    assert [f.type for f in ex.faults] == [fault["type"]]
    if fault["type"] in ("throttle", "latency"):
        assert ex.client_complete and summary["text"] == EXPECTED
    elif fault.get("action") != "malformed_json":
        assert not ex.client_complete
        assert summary["text"] == ex.client_text
