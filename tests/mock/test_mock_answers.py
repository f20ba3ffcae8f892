"""mock_answer: the mock's whole answer to a recorded request, per wire format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from chaosstream.mock import MockServer, MockSettings, answer_text, mock_answer, start_mock

TOKENS = 12


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(
        settings=MockSettings(ttft_ms=0, tokens_per_s=0, tokens=TOKENS)
    ) as server:
        yield server


async def post(mock: MockServer, path: str, body: dict[str, object]) -> bytes:
    async with aiohttp.ClientSession() as http, http.post(mock.url + path, json=body) as r:
        assert r.status == 200, await r.text()
        return await r.read()


async def test_ollama_chat_and_generate(mock: MockServer) -> None:
    """What /api/chat and /api/generate answer, images and options in the body notwithstanding."""
    chat = {
        "model": "m",
        "stream": False,
        "options": {"temperature": 0},
        "messages": [{"role": "user", "content": "Tell me about rivers.", "images": ["aGk="]}],
    }
    got = json.loads(await post(mock, "/api/chat", chat))["message"]["content"]
    assert mock_answer("ollama", json.dumps(chat).encode(), TOKENS) == got
    # The images change the body but not the answer, so answer_text(body) would be wrong.
    assert answer_text(chat, TOKENS) != got
    generate = {"model": "m", "stream": False, "prompt": "Why is the sky blue?"}
    got = json.loads(await post(mock, "/api/generate", generate))["response"]
    assert mock_answer("ollama", json.dumps(generate).encode(), TOKENS) == got


async def test_ui_message_stream_chat(mock: MockServer) -> None:
    """What /api/ui/chat streams for useChat's body (random ids, parts) is the answer given."""
    body = {
        "id": "c-random",
        "trigger": "submit-message",
        "messages": [
            {"id": "m-random", "role": "user", "parts": [{"type": "text", "text": "Hi there."}]}
        ],
    }
    raw = await post(mock, "/api/ui/chat", body)
    parts = [json.loads(b[6:]) for b in raw.split(b"\n\n") if b.startswith(b"data: {")]
    got = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    assert mock_answer("ui-message-stream", json.dumps(body).encode(), TOKENS) == got


def test_formats_that_key_on_the_body_and_unknown_ones() -> None:
    """OpenAI-shaped bodies answer as answer_text; an unknown format or a broken body is None."""
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    assert mock_answer("openai", body, TOKENS) == answer_text(body, TOKENS)
    assert mock_answer("openai-responses", b'{"input":"hi"}', 3) == answer_text(
        b'{"input":"hi"}', 3
    )
    assert mock_answer("sse", body, TOKENS) is None
    assert mock_answer("ollama", b"not json", TOKENS) is None
    assert mock_answer("ui-message-stream", b'{"messages": 3}', TOKENS) is None
