"""Gemini: the mock's stream and unary methods; google-genai through the proxy; faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from google import genai
from google.genai import errors, types

from chaosstream.cli.commands import cli
from chaosstream.faults.profile import profile_from_data
from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock
from chaosstream.proxy.server import ChaosProxy

TOKENS = 20
SETTINGS = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=TOKENS)
MODEL, PROMPT = "gemini-test", "Tell me about rivers."
BODY = {"contents": [{"parts": [{"text": PROMPT}], "role": "user"}]}
EXPECTED = answer_text(BODY, TOKENS)
PROGRAM = Path(__file__).parent.parent / "programs" / "gemini_sdk.py"


@contextlib.asynccontextmanager
async def chaos(faults: list[dict[str, Any]]) -> AsyncIterator[tuple[ChaosProxy, str, MockServer]]:
    """A mock behind a proxy running ``faults``."""
    mock = await start_mock(settings=SETTINGS)
    profile = profile_from_data({"version": 1, "name": "t", "faults": faults}, "test")
    proxy = ChaosProxy(mock.url, profile, seed=1)
    url = await proxy.start()
    try:
        yield proxy, url, mock
    finally:
        await proxy.close()
        await mock.close()


def sdk(url: str) -> genai.Client:
    return genai.Client(api_key="x", http_options=types.HttpOptions(base_url=url))


def stream_text(url: str) -> str:
    """generate_content_stream, joining the chunks' text."""
    with sdk(url) as client:
        chunks = client.models.generate_content_stream(model=MODEL, contents=PROMPT)
        return "".join(c.text or "" for c in chunks)


def whole_text(url: str) -> str:
    with sdk(url) as client:
        return client.models.generate_content(model=MODEL, contents=PROMPT).text or ""


async def test_same_text_direct_and_through_the_proxy_streaming_and_not() -> None:
    """google-genai streams and fetches the mock's text, direct and through the proxy."""
    async with chaos([]) as (proxy, url, mock):
        for base in (mock.url, url):
            assert await asyncio.to_thread(stream_text, base) == EXPECTED
            assert await asyncio.to_thread(whole_text, base) == EXPECTED
    streamed, plain = list(proxy.recorder.exchanges)
    assert streamed.provider == plain.provider == "gemini"
    assert streamed.stream and not plain.stream
    assert streamed.client_complete and streamed.tokens == TOKENS
    assert streamed.response_text == plain.response_text == EXPECTED
    # Same request with streaming set aside: the method in the path and alt=sse.
    assert streamed.fingerprint == plain.fingerprint


async def test_last_chunk_has_finish_reason_and_usage() -> None:
    """Every chunk is a whole response; only the last has finishReason and usageMetadata."""
    async with chaos([]) as (_proxy, url, _mock):

        def run() -> list[Any]:
            with sdk(url) as client:
                return list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))

        chunks = await asyncio.to_thread(run)
    assert len(chunks) == TOKENS
    assert [bool(c.candidates[0].finish_reason) for c in chunks] == [False] * (TOKENS - 1) + [True]
    assert chunks[-1].usage_metadata.candidates_token_count == TOKENS


@pytest.mark.parametrize(
    ("fault", "raises"),
    [
        # google-genai reads the body through httpx (httpx2 in 3.x) and lets its errors out.
        ({"type": "disconnect", "after_tokens": 5, "mode": "reset"}, "ReadError"),
        # A clean close: the iteration just ends; only a missing finishReason tells.
        ({"type": "disconnect", "after_tokens": 5, "mode": "close"}, None),
        ({"type": "corrupt", "action": "drop_terminal"}, None),
        ({"type": "stream_error", "after_events": 6, "kind": "overloaded"}, "ServerError"),
        ({"type": "stream_error", "after_events": 6, "kind": "rate_limit"}, "ClientError"),
        (
            {"type": "corrupt", "action": "malformed_json", "after_events": 6},
            "UnknownApiResponseError",
        ),
        ({"type": "http_error", "status": 429}, "ClientError"),
        ({"type": "http_error", "status": 503}, "ServerError"),
    ],
)
async def test_faults_make_the_sdk_raise_what_it_really_does(
    fault: dict[str, Any], raises: str | None
) -> None:
    """Each battery fault on a Gemini stream: the SDK's own exception, and the record agrees."""
    async with chaos([fault]) as (proxy, url, _mock):
        try:
            text = await asyncio.to_thread(stream_text, url)
            raised = None
        except Exception as e:  # the class (httpx2's too) is what is asserted
            raised, text = type(e).__name__, ""
    assert raised == raises, fault
    if raises is None:
        assert text and text != EXPECTED and EXPECTED.startswith(text)
    (ex,) = proxy.recorder.exchanges
    assert ex.faults and ex.client_complete is (fault.get("action") == "malformed_json")


async def test_stream_error_is_in_geminis_shape() -> None:
    """The injected chunk is {"error": {code, message, status}} and maps to the SDK's code."""
    fault = {"type": "stream_error", "after_events": 3, "kind": "overloaded"}
    async with chaos([fault]) as (proxy, url, _mock):
        with pytest.raises(errors.ServerError) as info:
            await asyncio.to_thread(stream_text, url)
    assert info.value.code == 503 and info.value.status == "UNAVAILABLE"
    body = bytes(proxy.recorder.exchanges[0].client_chunks or b"").decode()
    assert json.loads(body.rstrip().rsplit("data: ", 1)[1])["error"]["code"] == 503


async def test_throttle_and_latency_count_gemini_chunks() -> None:
    """tokens_per_s paces the text chunks; per_event_ms delays each; the text arrives intact."""
    faults = [{"type": "throttle", "tokens_per_s": 100}, {"type": "latency", "per_event_ms": 2}]
    async with chaos(faults) as (proxy, url, _mock):
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await asyncio.to_thread(stream_text, url) == EXPECTED
        took = loop.time() - start
    assert 0.18 <= took < 5.0  # 20 tokens at 100/s; generous upper bound
    assert proxy.recorder.exchanges[0].client_complete


SCENARIOS = """\
  - name: clean
    profile: clean
    expect: [completes]
  - name: close-no-terminal
    profile: midstream-close
    expect: [resilient]
  - name: overloaded
    profile: overloaded-in-stream
    expect: [resilient]
"""


def run_cli(tmp_path: Path, mode: str) -> dict[str, Any]:
    """`chaosstream run` on the google-genai client (base URL and key from its env)."""
    path = tmp_path / "scenarios.yaml"
    path.write_text("version: 1\nscenarios:\n" + SCENARIOS, encoding="utf-8")
    report = tmp_path / "report.json"
    args = ["run", str(path), "--seed", "3", "--json", str(report), "--"]
    result = CliRunner().invoke(cli, [*args, sys.executable, str(PROGRAM), mode])
    assert report.exists(), result.output
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def test_run_judges_the_sdk_client_from_the_finish_reason(tmp_path: Path) -> None:
    """A naive client shows a cut answer as whole (silent truncation); a careful one falls back."""
    naive = {s["name"]: s["observed"] for s in run_cli(tmp_path, "naive")["scenarios"]}
    assert naive["clean"]["completed"] and not naive["clean"]["silent_truncation"]
    assert naive["close-no-terminal"]["silent_truncation"] is True
    assert naive["overloaded"]["surfaced_error"] and not naive["overloaded"]["silent_truncation"]
    careful = {s["name"]: s for s in run_cli(tmp_path, "careful")["scenarios"]}
    for name in ("close-no-terminal", "overloaded"):
        obs = careful[name]["observed"]
        assert obs["fell_back"] and obs["completed"] and not obs["silent_truncation"], name
        assert careful[name]["passed"], careful[name]["expectations"]
