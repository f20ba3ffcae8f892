"""The mock's Ollama routes: NDJSON shape, and the official ``ollama`` client against them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ollama
import pytest

from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock

TOKENS = 25
SETTINGS = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=TOKENS)
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Tell me about streaming."}]
PROMPT = "Why is the sky blue?"
CHAT_TEXT = answer_text({"messages": MESSAGES}, TOKENS)
GENERATE_TEXT = answer_text({"prompt": PROMPT}, TOKENS)


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(settings=SETTINGS) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def lines(raw: bytes) -> list[dict[str, Any]]:
    """Every NDJSON line of a body, parsed; the body must end with a newline."""
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.split(b"\n")[:-1]]


async def test_chat_streams_ndjson_when_stream_is_absent(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """Without ``stream`` /api/chat streams (Ollama's default): done:false lines, then done:true."""
    async with http.post(mock.url + "/api/chat", json={"model": "m", "messages": MESSAGES}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/x-ndjson"
        parsed = lines(await r.read())
    assert all(p["done"] is False for p in parsed[:-1])
    assert "".join(p["message"]["content"] for p in parsed) == CHAT_TEXT
    final = parsed[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["eval_count"] == TOKENS and final["model"] == "m"
    assert len(parsed) == TOKENS + 1


async def test_generate_stream_false_is_one_json_object(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """/api/generate with stream:false answers one JSON object holding the whole text."""
    body = {"model": "m", "prompt": PROMPT, "stream": False}
    async with http.post(mock.url + "/api/generate", json=body) as r:
        assert r.content_type == "application/json"
        whole = await r.json()
    assert whole["response"] == GENERATE_TEXT
    assert whole["done"] is True and whole["done_reason"] == "stop"


async def test_same_conversation_same_text_as_openai(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """/api/chat and /v1/chat/completions give the same words for the same messages."""
    body = {"model": "m", "messages": MESSAGES, "stream": False}
    async with http.post(mock.url + "/api/chat", json=body) as r:
        ollama_text = (await r.json())["message"]["content"]
    async with http.post(mock.url + "/v1/chat/completions", json=body) as r:
        openai_text = (await r.json())["choices"][0]["message"]["content"]
    assert ollama_text == openai_text == CHAT_TEXT


async def test_error_after_header_ends_with_an_error_line(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """x-chaosstream-mock-error-after: 3 sends three tokens, then one {"error": ...} line."""
    headers = {"x-chaosstream-mock-error-after": "3"}
    body = {"model": "m", "messages": MESSAGES}
    async with http.post(mock.url + "/api/chat", json=body, headers=headers) as r:
        parsed = lines(await r.read())
    assert len(parsed) == 4
    assert set(parsed[-1]) == {"error"}


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        (b"{not json", {}, "invalid request body"),
        (b"[1]", {}, "JSON object"),
        (b'{"messages": "hi"}', {}, "messages"),
        (b'{"messages": [], "stream": "yes"}', {}, "stream"),
        (b'{"messages": []}', {"x-chaosstream-mock-error-after": "-1"}, "error-after"),
    ],
)
async def test_bad_requests_are_400_in_ollama_shape(
    mock: MockServer, http: aiohttp.ClientSession, body: bytes, headers: dict[str, str], needle: str
) -> None:
    """A bad body or header is a 400 with {"error": "..."} naming the problem."""
    async with http.post(mock.url + "/api/chat", data=body, headers=headers) as r:
        assert r.status == 400
        assert needle in (await r.json())["error"]


async def test_tags_and_version(mock: MockServer, http: aiohttp.ClientSession) -> None:
    """/api/tags lists the mock's model and /api/version names a version, as clients probe."""
    async with http.get(mock.url + "/api/tags") as r:
        assert [m["name"] for m in (await r.json())["models"]] == ["chaosstream-mock"]
    async with http.get(mock.url + "/api/version") as r:
        assert (await r.json())["version"]


# --- the official client ------------------------------------------------------------------


async def test_ollama_client_chat_and_generate_streaming_and_not(mock: MockServer) -> None:
    """ollama.AsyncClient(host=mock) gets the same text streamed and whole, chat and generate."""
    async with ollama.AsyncClient(host=mock.url) as client:
        whole = await client.chat(model="m", messages=MESSAGES)
        parts = [p async for p in await client.chat(model="m", messages=MESSAGES, stream=True)]
        gen = await client.generate(model="m", prompt=PROMPT)
        streamed = [p async for p in await client.generate(model="m", prompt=PROMPT, stream=True)]
        models = [m.model for m in (await client.list()).models]
    assert whole.message.content == CHAT_TEXT and whole.done_reason == "stop"
    assert "".join(p.message.content or "" for p in parts) == CHAT_TEXT
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert gen.response == GENERATE_TEXT
    assert "".join(p.response for p in streamed) == GENERATE_TEXT
    assert models == ["chaosstream-mock"]


async def test_ollama_client_raises_response_error_on_error_line_and_on_400(
    mock: MockServer,
) -> None:
    """The client raises its own ResponseError for an in-stream error line and for a 400."""
    seen: list[str] = []
    headers = {"x-chaosstream-mock-error-after": "2"}
    async with ollama.AsyncClient(host=mock.url, headers=headers) as client:
        with pytest.raises(ollama.ResponseError) as info:
            async for part in await client.chat(model="m", messages=MESSAGES, stream=True):
                seen.append(part.message.content or "")
    assert len(seen) == 2 and "running the model" in info.value.error
    async with ollama.AsyncClient(host=mock.url, headers={"x-chaosstream-mock-tokens": "-5"}) as c:
        with pytest.raises(ollama.ResponseError) as bad:
            await c.chat(model="m", messages=MESSAGES)
    assert bad.value.status_code == 400
