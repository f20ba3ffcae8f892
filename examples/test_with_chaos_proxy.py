"""Chaos tests for a streaming chat client, with the official openai SDK.

chaosstream's pytest plugin (installed with chaosstream) gives the fixtures:
``chaos_proxy`` starts a proxy in front of ``chaos_mock``, the embedded mock
model, on free loopback ports; no keys, no network. Run::

    pytest examples/test_with_chaos_proxy.py
"""

from __future__ import annotations

import httpx
import openai
import pytest

from chaosstream.integrations.pytest_plugin import assert_verdicts

MESSAGES = [{"role": "user", "content": "Tell me about streaming."}]


class Truncated(Exception):
    """The stream ended without a finish_reason: the answer is not whole."""


# The client under test: streams, treats a stream without finish_reason as cut,
# and retries up to three attempts. Replace it with your own code.
def ask(client: openai.OpenAI, attempts: int = 3) -> str:
    error: Exception | None = None
    for _ in range(attempts):
        text, finished = "", False
        try:
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,  # type: ignore[arg-type]
            )
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finished = finished or chunk.choices[0].finish_reason is not None
            if not finished:
                raise Truncated(f"stream ended after {len(text)} characters")
            return text
        except (openai.APIError, httpx.HTTPError, Truncated) as e:
            error = e  # a reset surfaces as an httpx error while iterating
    assert error is not None
    raise error


@pytest.mark.chaos_profile("clean", "midstream-reset", "midstream-close")
def test_client_completes_under_chaos(chaos_proxy) -> None:  # type: ignore[no-untyped-def]
    """The client ends with the whole answer under each profile, retrying when cut."""
    proxy = chaos_proxy()  # the marker's profile, in front of chaos_mock
    with openai.OpenAI(base_url=proxy.openai_base_url, api_key="test", max_retries=0) as client:
        text = ask(client)
    assert_verdicts(proxy, completes=True, text=text)
    if proxy.fault_log:  # a fault fired: the client must have retried, without a storm
        assert_verdicts(proxy, retries={"max_attempts": 3})


@pytest.mark.asyncio
async def test_async_client_surfaces_a_reset(chaos_proxy) -> None:  # type: ignore[no-untyped-def]
    """The async SDK, without retries, surfaces the mid-stream reset instead of hiding it."""
    proxy = chaos_proxy("midstream-reset")
    text, error = "", None
    async with openai.AsyncOpenAI(
        base_url=proxy.openai_base_url, api_key="test", max_retries=0
    ) as client:
        try:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,  # type: ignore[arg-type]
            )
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except (openai.APIError, httpx.HTTPError) as e:
            error = e
    assert error is not None
    assert_verdicts(proxy, surfaces_error=True, retries=False, text=text, error=error)
