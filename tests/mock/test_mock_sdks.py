"""The official openai and anthropic SDKs work against the mock unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock

TOKENS = 30
SETTINGS = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=TOKENS)
MESSAGES: list[Any] = [{"role": "user", "content": "Tell me about streaming."}]
EXPECTED = answer_text({"messages": MESSAGES}, TOKENS)


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(settings=SETTINGS) as server:
        yield server


# --- openai -------------------------------------------------------------------------------


async def test_async_openai_non_stream_and_stream(mock: MockServer) -> None:
    """AsyncOpenAI gets answer_text both from create() and from a stream of chunks."""
    async with openai.AsyncOpenAI(base_url=mock.url + "/v1", api_key="x", max_retries=0) as c:
        whole = await c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert whole.choices[0].message.content == EXPECTED
        assert whole.model == "gpt-test"
        assert whole.choices[0].finish_reason == "stop"
        stream = await c.chat.completions.create(
            model="gpt-test",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        finish: list[str | None] = []
        usage = None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
                finish.append(chunk.choices[0].finish_reason)
            usage = chunk.usage or usage
    assert "".join(parts) == EXPECTED
    assert finish[-1] == "stop"
    assert usage is not None
    assert usage.completion_tokens == TOKENS


async def test_sync_openai_stream_and_models(mock: MockServer) -> None:
    """The sync OpenAI client streams the same text and lists the mock's models."""

    def run() -> tuple[str, str | None, list[str]]:
        with openai.OpenAI(base_url=mock.url + "/v1", api_key="x", max_retries=0) as client:
            stream = client.chat.completions.create(
                model="gpt-test", messages=MESSAGES, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            whole = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
            models = [m.id for m in client.models.list()]
        return text, whole.choices[0].message.content, models

    text, whole, models = await asyncio.to_thread(run)
    assert text == whole == EXPECTED
    assert "chaosstream-mock" in models


# --- anthropic ----------------------------------------------------------------------------


async def test_async_anthropic_create_and_raw_stream(mock: MockServer) -> None:
    """AsyncAnthropic create() and create(stream=True) both give answer_text."""
    async with anthropic.AsyncAnthropic(base_url=mock.url, api_key="x", max_retries=0) as c:
        message = await c.messages.create(model="claude-test", max_tokens=100, messages=MESSAGES)
        assert message.content[0].type == "text"
        assert message.content[0].text == EXPECTED
        assert message.stop_reason == "end_turn"
        assert message.model == "claude-test"
        stream = await c.messages.create(
            model="claude-test", max_tokens=100, messages=MESSAGES, stream=True
        )
        kinds: list[str] = []
        parts: list[str] = []
        async for event in stream:
            kinds.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                parts.append(event.delta.text)
    assert "".join(parts) == EXPECTED
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"


async def test_async_anthropic_messages_stream_helper(mock: MockServer) -> None:
    """messages.stream() yields text_stream and a final message with the full answer."""
    async with (
        anthropic.AsyncAnthropic(base_url=mock.url, api_key="x", max_retries=0) as c,
        c.messages.stream(model="claude-test", max_tokens=100, messages=MESSAGES) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == EXPECTED
    assert final.content[0].type == "text"
    assert final.content[0].text == EXPECTED
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == TOKENS


async def test_sync_anthropic_stream_helper_with_system(mock: MockServer) -> None:
    """The sync Anthropic client streams; a system prompt is part of the prompt."""
    system = "Answer like a pirate."

    def run() -> tuple[str, str]:
        with (
            anthropic.Anthropic(base_url=mock.url, api_key="x", max_retries=0) as client,
            client.messages.stream(
                model="claude-test", max_tokens=100, system=system, messages=MESSAGES
            ) as stream,
        ):
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        block = final.content[0]
        assert block.type == "text"
        return text, block.text

    text, final_text = await asyncio.to_thread(run)
    assert text == final_text == answer_text({"system": system, "messages": MESSAGES}, TOKENS)
    assert text != EXPECTED
