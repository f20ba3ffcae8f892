"""The mock's AI SDK UI message stream route, read by the ``ai`` package's own chat client."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chaosstream.mock import MockServer, MockSettings, answer_text, answer_tokens, start_mock

TOKENS = 20
SETTINGS = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=TOKENS)
PROMPT = "Tell me about streaming."
CONVERSATION = {"messages": [{"role": "user", "content": PROMPT}]}
EXPECTED = answer_text(CONVERSATION, TOKENS)
EXPECTED_TOKENS = answer_tokens(CONVERSATION, TOKENS)
NODE_DIR = Path(__file__).resolve().parents[1] / "node"
UI_CHAT = NODE_DIR / "ui_chat.mjs"


async def run_ui_chat(
    url: str, headers: dict[str, str] | None = None, timeout_s: float = 30
) -> tuple[int, str, dict[str, Any]]:
    """Run tests/node/ui_chat.mjs against ``url``: exit code, stdout, its JSON summary."""
    node = shutil.which("node")
    assert node, "Node.js 20+ is needed (scripts/test.sh installs the test's npm packages)"
    assert (NODE_DIR / "node_modules" / "ai").is_dir(), "run `npm ci --prefix tests/node` first"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(UI_CHAT),
        url,
        PROMPT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "UI_CHAT_HEADERS": json.dumps(headers or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    summary = json.loads(err.decode().strip().splitlines()[-1])
    return proc.returncode, out.decode(), summary


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(settings=SETTINGS) as server:
        yield server


def parts(raw: bytes) -> list[Any]:
    """The data of every SSE event in a body ("[DONE]" stays a string)."""
    out: list[Any] = []
    for block in raw.decode().split("\n\n")[:-1]:
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_stream_shape_and_header(mock: MockServer) -> None:
    """The route sends the SDK's header and parts: start ... text-delta ... finish, then [DONE]."""
    body = {"id": "c1", "messages": [], "trigger": "submit-message"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(mock.url + "/api/ui/chat", json=body) as r,
    ):
        assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert r.content_type == "text/event-stream"
        got = parts(await r.read())
    types = [p if isinstance(p, str) else p["type"] for p in got]
    assert types[:3] == ["start", "start-step", "text-start"]
    assert types[-4:] == ["text-end", "finish-step", "finish", "[DONE]"]
    assert types.count("text-delta") == TOKENS
    assert got[-2]["finishReason"] == "stop"


async def test_api_chat_serves_ollama_or_the_ui_stream_by_body(mock: MockServer) -> None:
    """/api/chat answers useChat's body (with trigger) as a UI stream and Ollama's as NDJSON."""
    ui = {"id": "c1", "messages": [], "trigger": "submit-message"}
    async with aiohttp.ClientSession() as http:
        async with http.post(mock.url + "/api/chat", json=ui) as r:
            assert r.headers.get("x-vercel-ai-ui-message-stream") == "v1"
        async with http.post(mock.url + "/api/chat", json={"model": "m", "messages": []}) as r:
            assert r.content_type == "application/x-ndjson"
            assert "x-vercel-ai-ui-message-stream" not in r.headers


async def test_bad_request_is_a_plain_400(mock: MockServer) -> None:
    """A body without a messages list is a 400 whose text says so (the SDK shows it as is)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(mock.url + "/api/ui/chat", data=b'{"trigger":"x"}') as r,
    ):
        assert r.status == 400
        assert "messages" in await r.text()


async def test_ai_sdk_chat_reads_the_whole_answer(mock: MockServer) -> None:
    """The ai package's AbstractChat ends ready with the mock's text and finishReason stop."""
    code, out, summary = await run_ui_chat(mock.url + "/api/ui/chat")
    assert code == 0, summary
    assert summary["status"] == "ready" and summary["error"] is None
    assert summary["text"] == EXPECTED and out.strip() == EXPECTED.strip()
    assert summary["finishReason"] == "stop"


async def test_ai_sdk_chat_on_an_error_part_ends_in_error(mock: MockServer) -> None:
    """An error part puts the SDK's chat in status error with the part's errorText (exit 1)."""
    code, _, summary = await run_ui_chat(
        mock.url + "/api/ui/chat", {"x-chaosstream-mock-error-after": "4"}
    )
    assert code == 1
    assert summary["status"] == "error" and summary["isError"] is True
    assert summary["error"]["message"] == "An error occurred."
    assert summary["text"] == "".join(EXPECTED_TOKENS[:4])


async def test_ai_sdk_chat_on_an_abort_part_ends_ready_with_partial_text(mock: MockServer) -> None:
    """An abort part ends the SDK's chat ready, no error, the partial text and no finishReason."""
    code, _, summary = await run_ui_chat(
        mock.url + "/api/ui/chat", {"x-chaosstream-mock-abort-after": "4"}
    )
    assert code == 0
    assert summary["status"] == "ready" and summary["error"] is None
    assert summary["text"] == "".join(EXPECTED_TOKENS[:4])
    assert summary["finishReason"] is None
