"""The reference chat page (chaosstream/web) in a real headless Chromium.

Happy-path tests run against the embedded mock; failure modes use a tiny scripted
upstream defined here (it serves the same page, so the page stays same-origin).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect

import chaosstream
from chaosstream.clients.browser import PageDriver
from chaosstream.mock import MockSettings, answer_text, start_mock

pytestmark = pytest.mark.browser

WEB_DIR = Path(chaosstream.__file__).parent / "web"
SHOTS = Path("/tmp/cs")
PROMPT = "Why do streams break on mobile networks?"
# Multi-byte text on purpose: the page must decode UTF-8 split across reads.
TOKENS = ["Hello", ", wor", "ld — ", "café ", "☕ ", "日本語", " and ", "naïve ", "🚀", "."]
FULL = "".join(TOKENS)


def body_for(prompt: str) -> dict[str, Any]:
    """The part of the page's request body that the mock keys its answer on."""
    return {"messages": [{"role": "user", "content": prompt}]}


# --------------------------------------------------------------------------- browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium (as `check --browser` finds one), one per test."""
    async with PageDriver() as driver:
        yield driver.browser


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page that records layout shifts from its first frame."""
    context = await browser.new_context(viewport={"width": 900, "height": 820})
    await context.add_init_script(
        """
        window.__shifts = [];
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) window.__shifts.push(e.value);
        }).observe({type: "layout-shift", buffered: true});
        """
    )
    pg = await context.new_page()
    try:
        yield pg
    finally:
        await context.close()


async def ask(page: Page, url: str, prompt: str = PROMPT) -> None:
    """Open the page at ``url``, type ``prompt`` and click Send."""
    await page.goto(url)
    await page.get_by_test_id("input").fill(prompt)
    await page.get_by_test_id("send").click()


async def final_state(page: Page, timeout_s: float = 15.0) -> str:
    """Wait until the page settles in a terminal state and return it."""
    await page.wait_for_function(
        "['complete','stopped','incomplete','error'].includes(window.chaosChat.state)",
        timeout=timeout_s * 1000,
    )
    return str(await page.evaluate("window.chaosChat.state"))


# --------------------------------------------------------------------------- scripted upstream

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class Scripted:
    """An upstream whose n-th chat request is answered by ``script[n]`` (last one repeats)."""

    script: list[Handler]
    url: str = ""
    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


def chunk(payload: dict[str, Any], crlf: bool = False) -> bytes:
    """One SSE event carrying ``payload`` as JSON."""
    end = "\r\n" if crlf else "\n"
    return f"data: {json.dumps(payload, ensure_ascii=False)}{end}{end}".encode()


def delta(text: str, finish: str | None = None) -> dict[str, Any]:
    """An OpenAI ``chat.completion.chunk`` with one content delta."""
    d = {"content": text} if text else {}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }


async def open_sse(request: web.Request) -> web.StreamResponse:
    """Start a 200 event-stream response."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    return resp


async def stream_ok(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """A complete, well-formed stream of TOKENS."""
    resp = await open_sse(request)
    for tok in TOKENS:
        await resp.write(chunk(delta(tok)))
    await resp.write(chunk(delta("", "stop")) + b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def stream_cut(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Three tokens, then a clean close with no terminal event."""
    resp = await open_sse(request)
    for tok in TOKENS[:3]:
        await resp.write(chunk(delta(tok)))
    await resp.write_eof()
    return resp


async def stream_reset(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Three tokens, then the TCP connection is aborted."""
    resp = await open_sse(request)
    for tok in TOKENS[:3]:
        await resp.write(chunk(delta(tok)))
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    return resp


async def stream_stall(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Three tokens, then silence with the socket open."""
    resp = await open_sse(request)
    for tok in TOKENS[:3]:
        await resp.write(chunk(delta(tok)))
    await asyncio.sleep(5)
    return resp


async def stream_error_event(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Three tokens, then an in-stream error chunk."""
    resp = await open_sse(request)
    for tok in TOKENS[:3]:
        await resp.write(chunk(delta(tok)))
    await resp.write(chunk({"error": {"message": "Overloaded", "type": "overloaded_error"}}))
    await resp.write_eof()
    return resp


async def stream_malformed(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Three tokens, then an event whose JSON is cut in half."""
    resp = await open_sse(request)
    for tok in TOKENS[:3]:
        await resp.write(chunk(delta(tok)))
    await resp.write(b'data: {"choices": [{"delta": {"cont\n\n')
    for tok in TOKENS[3:]:
        await resp.write(chunk(delta(tok)))
    await resp.write(chunk(delta("", "stop")) + b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def stream_no_finish(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Three tokens and ``[DONE]``, but no chunk ever carries a finish_reason."""
    resp = await open_sse(request)
    for tok in TOKENS[:3]:
        await resp.write(chunk(delta(tok)))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def stream_dribble(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """A complete CRLF stream written in 1-3 byte pieces, splitting characters and CRLFs."""
    resp = await open_sse(request)
    raw = b": keep-alive\r\n\r\n" + b"".join(chunk(delta(t), crlf=True) for t in TOKENS)
    raw += chunk(delta("", "stop"), crlf=True) + b"data: [DONE]\r\n\r\n"
    sizes = [1, 2, 3]
    i = 0
    for n in range(len(raw)):  # bounded: at most one piece per byte
        if i >= len(raw):
            break
        piece = raw[i : i + sizes[n % 3]]
        i += len(piece)
        await resp.write(piece)
        if n % 8 == 0:
            await asyncio.sleep(0.002)  # let Chromium see separate reads
    await resp.write_eof()
    return resp


async def busy_429(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """A 429 refusal asking the client to come back in one second."""
    return web.json_response(
        {"error": {"message": "Rate limit reached.", "type": "rate_limit_error"}},
        status=429,
        headers={"Retry-After": "1"},
    )


async def stream_cut_or_whole(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Streaming requests are cut mid-answer; non-streaming ones get the whole answer."""
    if body.get("stream") is True:
        return await stream_cut(request, body)
    return web.json_response(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": FULL},
                    "finish_reason": "stop",
                }
            ],
        }
    )


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[Scripted]]]:
    """Start scripted upstreams that also serve the page; all are closed at the end."""
    runners: list[web.AppRunner] = []

    async def start(*script: Handler) -> Scripted:
        up = Scripted(list(script))

        async def chat(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            up.seen.append((time.monotonic(), body))
            handler = up.script[min(len(up.seen), len(up.script)) - 1]
            return await handler(request, body)

        async def index(request: web.Request) -> web.FileResponse:
            return web.FileResponse(WEB_DIR / "index.html")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/", index)
        app.router.add_static("/", WEB_DIR)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        up.url = f"http://127.0.0.1:{port}"
        return up

    yield start
    for runner in runners:
        await runner.cleanup()


# --------------------------------------------------------------------------- against the mock


async def test_complete_answer_renders_exact_text(page: Page) -> None:
    """A clean stream renders exactly the mock's answer and ends in state complete."""
    server = await start_mock(
        port=0, settings=MockSettings(ttft_ms=50, tokens_per_s=400, tokens=60)
    )
    try:
        await ask(page, server.url + "/")
        assert await final_state(page) == "complete"
        text = await page.get_by_test_id("output").text_content()
        assert text == answer_text(body_for(PROMPT), 60)
        await expect(page.get_by_test_id("error")).to_be_hidden()
        await expect(page.get_by_test_id("send")).to_be_enabled()
        await expect(page.get_by_test_id("stop")).to_be_disabled()
        await page.screenshot(path=str(SHOTS / "page-complete.png"))
    finally:
        await server.close()


async def test_typing_indicator_covers_the_ttft_gap(page: Page) -> None:
    """The typing indicator shows from Send until the first token, then hides."""
    server = await start_mock(
        port=0, settings=MockSettings(ttft_ms=800, tokens_per_s=200, tokens=20)
    )
    try:
        await ask(page, server.url + "/")
        sent = time.monotonic()
        typing = page.get_by_test_id("typing")
        assert await typing.is_visible()
        assert await page.get_by_test_id("output").text_content() == ""
        await page.wait_for_function("document.querySelector('[data-testid=output]').textContent")
        assert time.monotonic() - sent >= 0.6  # the first token came after the TTFT gap
        await expect(typing).to_be_hidden()
        assert await final_state(page) == "complete"
        await expect(typing).to_be_hidden()
    finally:
        await server.close()


async def test_stop_aborts_the_request(page: Page) -> None:
    """Stop closes the upstream stream, marks the answer stopped and re-enables Send."""
    server = await start_mock(
        port=0, settings=MockSettings(ttft_ms=50, tokens_per_s=30, tokens=300)
    )
    try:
        stats = server.stats
        await ask(page, server.url + "/")
        await page.wait_for_function(
            "document.querySelector('[data-testid=output]').textContent.length > 20"
        )
        await page.get_by_test_id("stop").click()
        assert await final_state(page) == "stopped"
        assert await stats.wait_until(lambda s: s.closed_early >= 1, timeout_s=5)
        assert stats.completed_streams == 0
        await expect(page.get_by_test_id("send")).to_be_enabled()
        await expect(page.get_by_test_id("stop")).to_be_disabled()
        text = await page.get_by_test_id("output").text_content()
        assert text and answer_text(body_for(PROMPT), 300).startswith(text)
    finally:
        await server.close()


async def test_layout_stays_stable_while_streaming(page: Page) -> None:
    """Cumulative layout shift over a long streamed answer stays far below 0.1."""
    server = await start_mock(
        port=0, settings=MockSettings(ttft_ms=300, tokens_per_s=150, tokens=400)
    )
    try:
        await ask(page, server.url + "/")
        assert await final_state(page) == "complete"
        shifts: list[float] = await page.evaluate("window.__shifts")
        cls = sum(shifts)
        assert cls < 0.01, f"layout shifts {shifts}"
        # The answer overflowed its box, so the box scrolled instead of growing.
        overflow = await page.evaluate(
            "(() => { const o = document.querySelector('[data-testid=output]');"
            " return o.scrollHeight > o.clientHeight })()"
        )
        assert overflow
    finally:
        await server.close()


# --------------------------------------------------------------------------- failure modes


@pytest.mark.parametrize(
    ("handler", "words"),
    [
        (stream_cut, "closed before the answer finished"),
        (stream_reset, "connection was lost"),
        (stream_stall, "stalled"),
        (stream_error_event, "Overloaded"),
        (stream_malformed, "corrupted"),
        (stream_no_finish, "without a finish reason"),
    ],
    ids=["close", "reset", "stall", "error-event", "malformed", "no-finish"],
)
async def test_midstream_failure_shows_error_and_keeps_partial_text(
    page: Page, scripted: Callable[..., Awaitable[Scripted]], handler: Handler, words: str
) -> None:
    """A broken stream ends incomplete with a human error, the partial text and a Retry."""
    up = await scripted(handler)
    await ask(page, up.url + "/?max_attempts=1&stall_ms=600")
    assert await final_state(page) == "incomplete"
    output = page.get_by_test_id("output")
    assert await output.text_content() == "".join(TOKENS[:3])
    error = page.get_by_test_id("error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text(words)
    await expect(page.get_by_test_id("retry")).to_be_visible()
    await expect(page.get_by_test_id("send")).to_be_enabled()
    assert len(up.seen) == 1
    shifts: list[float] = await page.evaluate("window.__shifts")
    assert sum(shifts) < 0.01, f"the error state moved the page: {shifts}"
    if handler is stream_cut:
        await page.screenshot(path=str(SHOTS / "page-error.png"))


async def test_retry_button_recovers(
    page: Page, scripted: Callable[..., Awaitable[Scripted]]
) -> None:
    """After a failure, Retry sends the same prompt again and can complete."""
    up = await scripted(stream_cut, stream_ok)
    await ask(page, up.url + "/?max_attempts=1")
    assert await final_state(page) == "incomplete"
    await page.get_by_test_id("retry").click()
    await page.wait_for_function("window.chaosChat.state === 'complete'", timeout=10_000)
    assert await page.get_by_test_id("output").text_content() == FULL
    await expect(page.get_by_test_id("error")).to_be_hidden()
    assert [body for _, body in up.seen] == [up.seen[0][1]] * 2


async def test_429_retry_waits_for_retry_after(
    page: Page, scripted: Callable[..., Awaitable[Scripted]]
) -> None:
    """A 429 with Retry-After: 1 is retried automatically, no sooner than one second later."""
    up = await scripted(busy_429, stream_ok)
    await ask(page, up.url + "/")
    status = page.get_by_test_id("status")
    await expect(status).to_contain_text("Retrying in 1s")
    assert await final_state(page) == "complete"
    assert await page.get_by_test_id("output").text_content() == FULL
    assert len(up.seen) == 2
    gap = up.seen[1][0] - up.seen[0][0]
    assert gap >= 1.0, f"retried after {gap:.3f}s"
    assert up.seen[0][1] == up.seen[1][1]


async def test_two_stream_failures_fall_back_to_non_streaming(
    page: Page, scripted: Callable[..., Awaitable[Scripted]]
) -> None:
    """Two cut streams in a row make the page ask once without streaming and complete."""
    up = await scripted(stream_cut_or_whole)
    await ask(page, up.url + "/")
    assert await final_state(page) == "complete"
    assert await page.get_by_test_id("output").text_content() == FULL
    await expect(page.get_by_test_id("note")).to_have_text("(delivered without streaming)")
    await expect(page.get_by_test_id("error")).to_be_hidden()
    flags = [body["stream"] for _, body in up.seen]
    assert flags == [True, True, False]
    # An equivalent request: the same body once the stream flag is set aside.
    rest = [{k: v for k, v in body.items() if k != "stream"} for _, body in up.seen]
    assert rest[0] == rest[1] == rest[2]
    await page.screenshot(path=str(SHOTS / "page-fallback.png"))


async def test_sse_split_across_reads_with_crlf_and_utf8(
    page: Page, scripted: Callable[..., Awaitable[Scripted]]
) -> None:
    """CRLF events dribbled in 1-3 byte pieces, splitting characters, decode exactly."""
    up = await scripted(stream_dribble)
    await ask(page, up.url + "/")
    assert await final_state(page) == "complete"
    assert await page.get_by_test_id("output").text_content() == FULL


async def test_stop_during_backoff_cancels_the_retry(
    page: Page, scripted: Callable[..., Awaitable[Scripted]]
) -> None:
    """Stop pressed while waiting out Retry-After ends the round; no retry is sent."""
    up = await scripted(busy_429, stream_ok)
    await ask(page, up.url + "/")
    await expect(page.get_by_test_id("status")).to_contain_text("Retrying in")
    await page.get_by_test_id("stop").click()
    assert await final_state(page) == "stopped"
    await asyncio.sleep(1.3)  # past the Retry-After: a leaked timer would fire by now
    assert len(up.seen) == 1
    await expect(page.get_by_test_id("send")).to_be_enabled()
