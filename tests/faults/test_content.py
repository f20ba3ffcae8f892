"""The content fault: in memory on both formats, then through the proxy with the real SDKs."""

from __future__ import annotations

import json

import pytest

from chaosstream.faults.content import REFUSAL, Content
from chaosstream.streams.providers import stream_summary
from chaosstream.testing import make_request, run_fault
from tests.faults._streams import STREAM


def _openai_stop(data: bytes) -> list[object]:
    return [
        json.loads(line[6:])["choices"][0].get("finish_reason")
        for line in data.split(b"\n")
        if line.startswith(b"data: {")
    ]


@pytest.mark.parametrize("kind", ["length", "content_filter"])
async def test_content_stop_mid_answer_openai(kind: str) -> None:
    """After N tokens the OpenAI stream stops with that finish_reason, then [DONE]."""
    r = await run_fault(Content(kind=kind, after_tokens=3), STREAM)  # type: ignore[arg-type]
    summary = stream_summary(r.data, "openai")
    assert (summary.text, summary.terminated) == ("t0 t1 t2 ", True)
    assert _openai_stop(r.data)[-1] == kind
    assert (r.log[0].action, r.log[0].events) == (kind, 3)


async def test_content_refusal_and_empty_openai() -> None:
    """refusal sends delta.refusal and finish_reason stop; empty sends no text at all."""
    r = await run_fault(Content(kind="refusal", after_tokens=0), STREAM)
    assert REFUSAL in r.data.decode() and stream_summary(r.data, "openai").text == ""
    r = await run_fault(Content(kind="empty"), STREAM)
    assert stream_summary(r.data, "openai").text == "" and _openai_stop(r.data)[-1] == "stop"


async def test_content_other_formats_pass_untouched() -> None:
    """On a plain SSE stream the fault does not fire and the bytes pass as they came."""
    chunks = [b"data: a\n\n", b"data: b\n\n"]
    r = await run_fault(Content(kind="length", after_tokens=1), chunks, request=make_request("/sse"))
    assert (r.chunks_out, r.log) == (chunks, [])


async def test_content_length_with_the_openai_sdk() -> None:
    """The OpenAI SDK sees finish_reason "length" after 4 tokens and a clean end."""
    import openai

    from tests.test_fault_e2e import CHAT, chaos

    async with chaos([{"type": "content", "kind": "length", "after_tokens": 4}]) as (_p, url, _m):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        texts, reasons = [], []
        async for part in await client.chat.completions.create(**CHAT):
            if part.choices:
                texts.append(part.choices[0].delta.content or "")
                reasons.append(part.choices[0].finish_reason)
        await client.close()
    assert len([t for t in texts if t]) == 4
    assert reasons[-1] == "length"


@pytest.mark.parametrize(
    ("kind", "reason"), [("length", "max_tokens"), ("refusal", "refusal"), ("empty", "end_turn")]
)
async def test_content_with_the_anthropic_sdk(kind: str, reason: str) -> None:
    """The Anthropic SDK's final message carries the stop_reason, with the text cut."""
    import anthropic

    from tests.test_fault_e2e import chaos

    async with chaos([{"type": "content", "kind": kind, "after_tokens": 3}]) as (_p, url, _m):
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
        async with client.messages.stream(
            model="m", max_tokens=50, messages=[{"role": "user", "content": "tell me"}]
        ) as stream:
            message = await stream.get_final_message()
        await client.close()
    assert message.stop_reason == reason
    text = "".join(b.text for b in message.content if b.type == "text")
    assert (len(message.content) == 0) if kind == "empty" else text
