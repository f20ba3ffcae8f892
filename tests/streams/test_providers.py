"""Tests for chaosstream.streams.providers: stream shapes, and errors the real SDKs raise on."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from chaosstream.streams.providers import (
    Provider,
    error_body,
    error_event,
    is_error,
    is_terminal,
    provider_for,
    response_text,
    stream_summary,
    terminal_event,
    token_text,
)
from chaosstream.streams.sse import format_event, parse_event


def openai_chunk(content: str | None, *, finish: str | None = None) -> bytes:
    """One Chat Completions chunk as the OpenAI API streams it."""
    delta = {} if content is None else {"content": content}
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return format_event(json.dumps(chunk))


def anthropic_event(kind: str, **fields: object) -> bytes:
    """One Messages stream event: the event name repeated as the data's type."""
    return format_event(json.dumps({"type": kind, **fields}), event=kind)


def anthropic_text(text: str) -> bytes:
    """A content_block_delta carrying answer text."""
    return anthropic_event(
        "content_block_delta", index=0, delta={"type": "text_delta", "text": text}
    )


ANTHROPIC_START = anthropic_event(
    "message_start",
    message={
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "chaosstream-mock",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    },
) + anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""})

OPENAI_STREAM = (
    b"".join(openai_chunk(t) for t in ["", "Hello", ", ", "world"])
    + openai_chunk(None, finish="stop")
    + terminal_event("openai")
)
ANTHROPIC_STREAM = (
    ANTHROPIC_START
    + b'event: ping\ndata: {"type": "ping"}\n\n'
    + b"".join(anthropic_text(t) for t in ["Hello", ", ", "world"])
    + anthropic_event("content_block_stop", index=0)
    + anthropic_event("message_delta", delta={"stop_reason": "end_turn"}, usage={})
    + terminal_event("anthropic")
)


# --- provider_for ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "provider"),
    [
        ("/v1/chat/completions", "openai"),
        ("/openai/v1/chat/completions?x=1", "openai"),
        ("/openai/deployments/gpt/chat/completions", "openai"),
        ("/v1/messages", "anthropic"),
        ("/proxy/anthropic/v1/messages/", "anthropic"),
        ("/sse", "sse"),
        ("/v1/models", "sse"),
    ],
)
def test_provider_for_reads_the_path_tail(path: str, provider: Provider) -> None:
    """The API is named by the path's tail, whatever prefix a gateway adds."""
    assert provider_for(path) == provider


# --- events -----------------------------------------------------------------------


def test_openai_stream_summary() -> None:
    """An OpenAI stream yields its text pieces, ends with [DONE] and has no error."""
    summary = stream_summary(OPENAI_STREAM, "openai")
    assert (summary.text, summary.tokens, summary.events) == ("Hello, world", 3, 6)
    assert summary.terminated and not summary.errored


def test_anthropic_stream_summary() -> None:
    """An Anthropic stream yields text_delta pieces and ends with message_stop."""
    summary = stream_summary(ANTHROPIC_STREAM, "anthropic")
    assert (summary.text, summary.tokens) == ("Hello, world", 3)
    assert summary.terminated and not summary.errored


def test_generic_sse_stream_summary() -> None:
    """A generic stream's message data is its text; event done ends it; ids are tracked."""
    body = (
        format_event("Hel", id="1")
        + format_event("lo", id="2", retry=1000)
        + format_event("meta", event="info", id="3")
        + format_event("[DONE]", event="done")
    )
    summary = stream_summary(body, "sse")
    assert (summary.text, summary.tokens, summary.events) == ("Hello", 2, 4)
    assert summary.terminated and summary.last_event_id == "3"


@pytest.mark.parametrize(
    ("raw", "provider", "text"),
    [
        (b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n', "openai", None),
        (b'data: {"choices":[{"delta":{"content":null}}]}\n\n', "openai", None),
        (b'data: {"choices":[]}\n\n', "openai", None),
        (b'data: {"choices":[{"text":"legacy"}]}\n\n', "openai", "legacy"),
        (b"data: [DONE]\n\n", "openai", None),
        (b'data: {"choices":[{"delta":{"content":\n\n', "openai", None),
        (b"data: [1, 2]\n\n", "openai", None),
        (b'data: {"choices":"x"}\n\n', "openai", None),
        (
            b'event: content_block_delta\ndata: {"type":"content_block_delta",'
            b'"delta":{"type":"thinking_delta","thinking":"hm"}}\n\n',
            "anthropic",
            None,
        ),
        (b"event: content_block_delta\ndata: {oops\n\n", "anthropic", None),
        (
            b'event: content_block_delta\ndata: {"type":"content_block_delta"}\n\n',
            "anthropic",
            None,
        ),
        (b"data: [DONE]\n\n", "sse", None),
        (b"event: done\ndata: bye\n\n", "sse", None),
        (b"id: 4\n\n", "sse", None),
        (b"data: plain text\n\n", "sse", "plain text"),
    ],
)
def test_token_text_edge_cases(raw: bytes, provider: Provider, text: str | None) -> None:
    """Events without answer text, and malformed JSON, give None instead of raising."""
    assert token_text(parse_event(raw), provider) == text


def test_malformed_json_never_raises() -> None:
    """Broken, deep or odd JSON is never fatal for any helper or provider."""
    nasty = [b"{", b"[" * 100_000, b'{"error":', b"\xff\xfe", b"null", b'"str"', b"1e999999"]
    for payload in nasty:
        ev = parse_event(b"event: error\ndata: " + payload + b"\n\n")
        for provider in ("openai", "anthropic", "sse"):
            token_text(ev, provider)
            is_terminal(ev, provider)
            is_error(ev, provider)
            response_text(payload, "application/json", provider)
            response_text(payload, None, provider)
            stream_summary(b"data: " + payload + b"\n\n", provider)


def test_terminal_events_are_recognised() -> None:
    """Each provider's terminal_event() is what is_terminal() recognises, and nothing else."""
    for provider in ("openai", "anthropic", "sse"):
        assert is_terminal(parse_event(terminal_event(provider)), provider)
        assert not is_terminal(parse_event(b"data: hi\n\n"), provider)
    assert is_terminal(parse_event(b'data: {"type":"message_stop"}\n\n'), "anthropic")
    assert is_terminal(parse_event(b"data: [DONE]\n\n"), "sse")


@pytest.mark.parametrize("kind", ["overloaded", "server_error", "rate_limit"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "sse"])
def test_error_events_are_recognised(provider: Provider, kind: str) -> None:
    """error_event() output is an error to is_error(), never text nor terminal."""
    ev = parse_event(error_event(provider, kind))  # type: ignore[arg-type]
    assert is_error(ev, provider)
    assert token_text(ev, provider) is None and not is_terminal(ev, provider)


def test_error_event_shapes_match_the_apis() -> None:
    """The in-stream errors carry the providers' documented field names and types."""
    ant = parse_event(error_event("anthropic", "overloaded"))
    assert ant.event == "error"
    assert json.loads(ant.data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert json.loads(parse_event(error_event("anthropic", "server_error")).data)["error"][
        "type"
    ] == ("api_error")
    oai = json.loads(parse_event(error_event("openai", "rate_limit")).data)
    assert oai == {
        "error": {
            "message": oai["error"]["message"],
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert not is_error(parse_event(b'data: {"error": null}\n\n'), "openai")


# --- response_text ------------------------------------------------------------------


def test_response_text_for_streams_and_json_bodies() -> None:
    """Streamed and non-streamed bodies both reconstruct the whole answer text."""
    assert response_text(OPENAI_STREAM, "text/event-stream; charset=utf-8", "openai") == (
        "Hello, world"
    )
    assert response_text(ANTHROPIC_STREAM, None, "anthropic") == "Hello, world"
    oai = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}}]}
    assert response_text(json.dumps(oai).encode(), "application/json", "openai") == "Hi there"
    ant = {
        "content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "Hi "},
            {"type": "text", "text": "there"},
        ]
    }
    assert response_text(json.dumps(ant).encode(), "application/json", "anthropic") == "Hi there"
    assert response_text(b"\xff\xfe{", "application/json", "openai") == ""
    assert response_text(b"plain", "text/plain", "sse") == "plain"


def test_response_text_drops_an_unterminated_last_event() -> None:
    """A cut stream's half-written last event is not counted, as clients drop it too."""
    cut = OPENAI_STREAM[: OPENAI_STREAM.index(b"world") + 3]
    assert response_text(cut, "text/event-stream", "openai") == "Hello, "
    assert not stream_summary(cut, "openai").terminated


# --- the real SDKs --------------------------------------------------------------------


@dataclass
class Canned:
    """The one response a test server sends."""

    status: int
    body: bytes
    content_type: str


CANNED = web.AppKey("canned", Canned)
ServerFactory = Callable[[Canned], Awaitable[TestServer]]


@pytest.fixture
def serve(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> ServerFactory:
    """Start a loopback server answering every POST with a canned response."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        canned = request.app[CANNED]
        headers = {"Content-Type": canned.content_type}
        if canned.status >= 400:
            return web.Response(status=canned.status, body=canned.body, headers=headers)
        response = web.StreamResponse(status=canned.status, headers=headers)
        await response.prepare(request)
        # Events in separate writes, as a real server flushes them.
        for block in canned.body.split(b"\n\n"):
            if block:
                await response.write(block + b"\n\n")
        await response.write_eof()
        return response

    async def start(canned: Canned) -> TestServer:
        app = web.Application()
        app[CANNED] = canned
        app.router.add_post("/{tail:.*}", handler)
        return await aiohttp_server(app, host="127.0.0.1")

    return start


async def openai_stream_texts(server: TestServer, seen: list[str]) -> None:
    """Stream a chat completion through the official openai SDK, collecting the text."""
    async with openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")), api_key="sk-test", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)


async def anthropic_stream_texts(server: TestServer, seen: list[str]) -> None:
    """Stream a message through the official anthropic SDK, collecting the text."""
    async with anthropic.AsyncAnthropic(
        base_url=str(server.make_url("")), api_key="sk-ant-test", max_retries=0
    ) as client:
        stream = await client.messages.create(
            model="chaosstream-mock",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                seen.append(event.delta.text)


async def test_openai_sdk_reads_a_clean_stream(serve: ServerFactory) -> None:
    """The openai SDK reads our OpenAI-shaped stream to the end without complaint."""
    server = await serve(Canned(200, OPENAI_STREAM, "text/event-stream"))
    seen: list[str] = []
    await openai_stream_texts(server, seen)
    assert "".join(seen) == "Hello, world"


async def test_anthropic_sdk_reads_a_clean_stream(serve: ServerFactory) -> None:
    """The anthropic SDK reads our Anthropic-shaped stream to the end without complaint."""
    server = await serve(Canned(200, ANTHROPIC_STREAM, "text/event-stream"))
    seen: list[str] = []
    await anthropic_stream_texts(server, seen)
    assert "".join(seen) == "Hello, world"


@pytest.mark.parametrize("kind", ["overloaded", "server_error", "rate_limit"])
async def test_openai_sdk_raises_on_our_in_stream_error(serve: ServerFactory, kind: str) -> None:
    """After a few tokens, error_event("openai") makes the SDK raise openai.APIError."""
    body = OPENAI_STREAM[: OPENAI_STREAM.index(b"world") - 40]
    body = body[: body.rindex(b"\n\n") + 2] + error_event("openai", kind)  # type: ignore[arg-type]
    server = await serve(Canned(200, body, "text/event-stream"))
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        await openai_stream_texts(server, seen)
    assert "".join(seen) == "Hello, "
    assert isinstance(info.value.body, dict) and info.value.message == info.value.body["message"]


@pytest.mark.parametrize(
    ("kind", "err_type"),
    [
        ("overloaded", "overloaded_error"),
        ("server_error", "api_error"),
        ("rate_limit", "rate_limit_error"),
    ],
)
async def test_anthropic_sdk_raises_on_our_in_stream_error(
    serve: ServerFactory, kind: str, err_type: str
) -> None:
    """After a few tokens, error_event("anthropic") makes the SDK raise APIStatusError."""
    body = ANTHROPIC_START + anthropic_text("Hello") + error_event("anthropic", kind)  # type: ignore[arg-type]
    server = await serve(Canned(200, body, "text/event-stream"))
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        await anthropic_stream_texts(server, seen)
    assert seen == ["Hello"]
    assert info.value.type == err_type


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
        (400, openai.BadRequestError),
    ],
)
async def test_openai_sdk_maps_our_error_bodies(
    serve: ServerFactory, status: int, exc: type[openai.APIStatusError]
) -> None:
    """error_body("openai") with its status gives the SDK's class and keeps the message."""
    server = await serve(Canned(status, error_body("openai", status), "application/json"))
    with pytest.raises(exc) as info:
        await openai_stream_texts(server, [])
    assert info.value.status_code == status
    expected = json.loads(error_body("openai", status))["error"]
    assert info.value.body == expected and info.value.code == expected["code"]


@pytest.mark.parametrize(
    ("status", "exc", "err_type"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.ServiceUnavailableError, "overloaded_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_anthropic_sdk_maps_our_error_bodies(
    serve: ServerFactory, status: int, exc: type[anthropic.APIStatusError], err_type: str
) -> None:
    """error_body("anthropic") with its status gives the SDK's class and error type."""
    body = error_body("anthropic", status, "custom message")
    server = await serve(Canned(status, body, "application/json"))
    with pytest.raises(exc) as info:
        await anthropic_stream_texts(server, [])
    assert (info.value.status_code, info.value.type) == (status, err_type)
    assert info.value.api_message == "custom message"
