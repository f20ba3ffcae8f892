"""The content fault: in memory on both formats, then through the proxy with the real SDKs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chaosstream.faults.content import REASONING, REFUSAL, Content
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
    r = await run_fault(
        Content(kind="length", after_tokens=1), chunks, request=make_request("/sse")
    )
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


def _openai_chunks(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: {")]


def _tool_calls(data: bytes) -> dict[int, dict[str, str]]:
    """Tool calls joined by index, as openai-python's stream helper joins them."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in _openai_chunks(data):
        for call in chunk["choices"][0]["delta"].get("tool_calls") or []:
            got = calls.setdefault(call["index"], {"id": "", "arguments": ""})
            got["id"] = call.get("id") or got["id"]
            got["arguments"] += call["function"].get("arguments", "")
    return calls


@pytest.mark.parametrize(
    ("kind", "stop", "valid"),
    [("tool_args_broken", "tool_calls", False), ("tool_args_cut", "length", False)],
)
async def test_content_tool_arguments_openai(kind: str, stop: str, valid: bool) -> None:
    """After the text, a tool call whose joined arguments are not JSON, then the stop."""
    r = await run_fault(Content(kind=kind, after_tokens=2), STREAM)  # type: ignore[arg-type]
    calls = _tool_calls(r.data)
    assert list(calls) == [0] and calls[0]["id"].startswith("call_")
    with pytest.raises(json.JSONDecodeError):
        json.loads(calls[0]["arguments"])
    assert _openai_stop(r.data)[-1] == stop and r.data.endswith(b"data: [DONE]\n\n")
    assert stream_summary(r.data, "openai").text == "t0 t1 "


async def test_content_duplicate_tool_ids_are_seeded() -> None:
    """Two tool calls share one id; the same seed gives the same id, another seed another."""
    fault = Content(kind="duplicate_tool_ids", after_tokens=0)
    calls = _tool_calls((await run_fault(fault, STREAM, seed=3)).data)
    assert len(calls) == 2 and calls[0]["id"] == calls[1]["id"]
    assert [json.loads(c["arguments"])["city"] for c in calls.values()] == ["Paris", "Tokyo"]
    again = _tool_calls((await run_fault(fault, STREAM, seed=3)).data)
    other = _tool_calls((await run_fault(fault, STREAM, seed=4)).data)
    assert again[0]["id"] == calls[0]["id"] != other[0]["id"]


async def test_content_reasoning_only_openai() -> None:
    """reasoning_only sends reasoning_content pieces, no text, and a clean stop."""
    r = await run_fault(Content(kind="reasoning_only"), STREAM)
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in _openai_chunks(r.data)
    )
    assert reasoning == REASONING and stream_summary(r.data, "openai").text == ""
    assert _openai_stop(r.data)[-1] == "stop" and r.log[0].detail == "openai: stop"


async def _anthropic_final(fault: dict[str, Any]) -> Any:
    import anthropic

    from tests.test_fault_e2e import chaos

    async with chaos([fault]) as (_p, url, _m):
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
        try:
            async with client.messages.stream(
                model="m", max_tokens=50, messages=[{"role": "user", "content": "tell me"}]
            ) as stream:
                return await stream.get_final_message()
        finally:
            await client.close()


async def test_content_tools_and_reasoning_with_the_anthropic_sdk() -> None:
    """anthropic-python: broken arguments raise; cut ones leave a partial input and
    max_tokens; duplicate ids arrive as two tool_use blocks; reasoning-only has no text."""
    with pytest.raises(ValueError, match="Unable to parse tool parameter JSON"):
        await _anthropic_final({"type": "content", "kind": "tool_args_broken"})
    cut = await _anthropic_final({"type": "content", "kind": "tool_args_cut", "after_tokens": 2})
    assert cut.stop_reason == "max_tokens"
    assert [b.type for b in cut.content] == ["text", "tool_use"]
    assert cut.content[1].input == {"city": "Paris"}  # partial JSON, parsed as far as it goes
    dup = await _anthropic_final({"type": "content", "kind": "duplicate_tool_ids"})
    uses = [b for b in dup.content if b.type == "tool_use"]
    assert dup.stop_reason == "tool_use" and len(uses) == 2 and uses[0].id == uses[1].id
    assert [u.input["city"] for u in uses] == ["Paris", "Tokyo"]
    thought = await _anthropic_final({"type": "content", "kind": "reasoning_only"})
    assert [b.type for b in thought.content] == ["thinking"]
    assert (thought.content[0].thinking, thought.stop_reason) == (REASONING, "end_turn")


async def test_content_tools_with_the_openai_sdk() -> None:
    """openai-python's stream helper: duplicate ids in one message; broken arguments stay
    a string json cannot read; reasoning_content reaches the delta as an extra field."""
    import openai

    from tests.test_fault_e2e import CHAT, chaos

    args = {k: v for k, v in CHAT.items() if k != "stream"}
    finals: dict[str, Any] = {}
    refused: list[str] = []
    for kind in ("duplicate_tool_ids", "tool_args_broken", "tool_args_cut"):
        async with chaos([{"type": "content", "kind": kind}]) as (_p, url, _m):
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
            try:
                async with client.chat.completions.stream(**args) as stream:
                    finals[kind] = await stream.get_final_completion()
            except openai.LengthFinishReasonError as e:  # the helper refuses a length stop
                finals[kind] = e.completion
                refused.append(kind)
            await client.close()
    assert refused == ["tool_args_cut"]
    dup = finals["duplicate_tool_ids"].choices[0]
    ids = [c.id for c in dup.message.tool_calls or []]
    assert dup.finish_reason == "tool_calls" and len(ids) == 2 and ids[0] == ids[1]
    for kind, stop in (("tool_args_broken", "tool_calls"), ("tool_args_cut", "length")):
        choice = finals[kind].choices[0]
        assert choice.finish_reason == stop
        with pytest.raises(json.JSONDecodeError):
            json.loads((choice.message.tool_calls or [])[0].function.arguments)
    async with chaos([{"type": "content", "kind": "reasoning_only"}]) as (_p, url, _m):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        parts = [
            (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
            async for c in await client.chat.completions.create(**CHAT)
            if c.choices
        ]
        await client.close()
    assert "".join(parts) == REASONING


async def test_content_stops_in_the_newer_formats_with_their_sdks() -> None:
    """Responses ends response.incomplete (max_output_tokens) / completed with a refusal
    part, Gemini MAX_TOKENS / SAFETY, Ollama done_reason length: each read by its SDK."""
    import asyncio

    import ollama
    import openai
    from google import genai
    from google.genai import types

    from tests.test_fault_e2e import chaos

    seen: dict[str, Any] = {}
    for kind in ("length", "content_filter", "refusal"):
        fault = {"type": "content", "kind": kind, "after_tokens": 3}
        async with chaos([fault]) as (_p, url, _m):
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
            events = [
                e async for e in await client.responses.create(model="m", input="hi", stream=True)
            ]
            await client.close()
            seen[f"responses {kind}"] = events

            def gemini(base: str = url) -> list[Any]:
                options = types.HttpOptions(base_url=base)
                with genai.Client(api_key="x", http_options=options) as g:
                    return list(g.models.generate_content_stream(model="m", contents="hi"))

            seen[f"gemini {kind}"] = await asyncio.to_thread(gemini)
            async with ollama.AsyncClient(host=url) as o:
                chat = await o.chat(
                    model="m", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                seen[f"ollama {kind}"] = [part async for part in chat]
    done = seen["responses length"][-1]
    assert (done.type, done.response.incomplete_details.reason) == (
        "response.incomplete",
        "max_output_tokens",
    )
    deltas = [e.delta for e in seen["responses length"] if e.type == "response.output_text.delta"]
    assert len(deltas) == 3 and done.response.output[0].content[0].text == "".join(deltas)
    assert (
        seen["responses content_filter"][-1].response.incomplete_details.reason == "content_filter"
    )
    refusal = seen["responses refusal"]
    assert refusal[-1].type == "response.completed"
    assert [e.delta for e in refusal if e.type == "response.refusal.delta"] == [REFUSAL]
    reasons = {
        k: seen[f"gemini {k}"][-1].candidates[0].finish_reason for k in ("length", "content_filter")
    }
    assert reasons == {"length": "MAX_TOKENS", "content_filter": "SAFETY"}
    assert sum(1 for c in seen["gemini length"] if c.text) == 3
    assert REFUSAL in "".join(c.text or "" for c in seen["gemini refusal"])
    assert seen["ollama length"][-1].done_reason == "length"
    assert len([p for p in seen["ollama length"] if p.message.content]) == 3
    # Ollama has no filter stop: the fault leaves the stream alone.
    assert seen["ollama content_filter"][-1].done_reason == "stop"
    assert REFUSAL in "".join(p.message.content or "" for p in seen["ollama refusal"])
