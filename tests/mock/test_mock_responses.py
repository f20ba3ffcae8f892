"""OpenAI Responses: the mock's /v1/responses; openai-python through proxy and mock; faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from chaosstream.cli.commands import cli
from chaosstream.faults.profile import profile_from_data
from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock
from chaosstream.proxy.server import ChaosProxy

TOKENS = 20
SETTINGS = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=TOKENS)
ARGS: dict[str, Any] = {"model": "gpt-test", "input": "Tell me about rivers."}
EXPECTED = answer_text({"input": ARGS["input"]}, TOKENS)
PROGRAM = Path(__file__).parent.parent / "programs" / "responses_sdk.py"


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


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=5.0)


def stream_text(url: str) -> str:
    """responses.create(stream=True), joining the deltas."""
    with sdk(url) as client:
        events = client.responses.create(**ARGS, stream=True)
        return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def final_text(url: str) -> str:
    """responses.stream(...).get_final_response().output_text."""
    with sdk(url) as client, client.responses.stream(**ARGS) as stream:
        for _ in stream:
            pass
        return stream.get_final_response().output_text


def plain(url: str) -> Any:
    """responses.create() without streaming."""
    with sdk(url) as client:
        return client.responses.create(**ARGS)


async def test_same_text_direct_and_through_the_proxy_streaming_and_not() -> None:
    """Both SDK streaming calls and the plain call give the mock's text, direct and proxied."""
    async with chaos([]) as (proxy, url, mock):
        for base in (mock.url, url):
            assert await asyncio.to_thread(stream_text, base) == EXPECTED
            assert await asyncio.to_thread(final_text, base) == EXPECTED
            whole = await asyncio.to_thread(plain, base)
            assert whole.output_text == EXPECTED and whole.status == "completed"
    streamed = [ex for ex in proxy.recorder.exchanges if ex.stream]
    assert len(streamed) == 2 and all(ex.provider == "openai-responses" for ex in streamed)
    assert all(ex.client_complete and ex.tokens == TOKENS for ex in streamed)
    assert all(ex.response_text == EXPECTED for ex in proxy.recorder.exchanges)
    # The non-streaming call is the streaming one's equivalent (a fallback).
    assert len({ex.fingerprint for ex in proxy.recorder.exchanges}) == 1


async def test_event_sequence_numbers_and_incomplete_on_max_output_tokens() -> None:
    """Events count sequence_number from 0; max_output_tokens ends with response.incomplete."""
    async with chaos([]) as (_proxy, url, _mock):

        def run() -> list[Any]:
            with sdk(url) as client:
                return list(client.responses.create(**ARGS, max_output_tokens=5, stream=True))

        events = await asyncio.to_thread(run)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == answer_text({"input": ARGS["input"]}, 5)


async def test_resume_a_response_after_a_sequence_number() -> None:
    """GET /v1/responses/{id}?stream=true&starting_after=N replays the events after N."""
    async with chaos([]) as (proxy, url, _mock):

        def run() -> tuple[list[Any], list[Any]]:
            with sdk(url) as client:
                first = list(client.responses.create(**ARGS, stream=True, background=True))
                rid = first[0].response.id
                rest = list(client.responses.retrieve(rid, stream=True, starting_after=6))
                return first, rest

        first, rest = await asyncio.to_thread(run)
    assert [e.sequence_number for e in rest] == list(range(7, len(first)))
    assert [e.model_dump() for e in rest] == [e.model_dump() for e in first[7:]]
    resumed = proxy.recorder.exchanges[-1]
    assert resumed.method == "GET" and resumed.stream and resumed.provider == "openai-responses"
    assert resumed.client_complete


@pytest.mark.parametrize(
    ("fault", "create_raises", "stream_raises"),
    [
        # A reset: httpx's RemoteProtocolError/ReadError, wrapped as APIConnectionError.
        ({"type": "disconnect", "after_tokens": 5, "mode": "reset"}, "APIConnectionError", None),
        # A clean close without response.completed: create() iterates to the end quietly,
        # the stream helper's get_final_response() raises RuntimeError.
        ({"type": "disconnect", "after_tokens": 5, "mode": "close"}, None, "RuntimeError"),
        ({"type": "corrupt", "action": "drop_terminal"}, None, "RuntimeError"),
        ({"type": "stream_error", "after_events": 6, "kind": "overloaded"}, "APIError", None),
        ({"type": "stream_error", "after_events": 6, "kind": "rate_limit"}, "APIError", None),
        (
            {"type": "corrupt", "action": "malformed_json", "after_events": 6},
            "JSONDecodeError",
            None,
        ),
        ({"type": "http_error", "status": 429}, "RateLimitError", None),
        ({"type": "http_error", "status": 503}, "InternalServerError", None),
    ],
)
async def test_faults_make_the_sdk_raise_what_it_really_does(
    fault: dict[str, Any], create_raises: str | None, stream_raises: str | None
) -> None:
    """Each battery fault on a Responses stream: the SDK's own exception, and the record agrees."""
    stream_raises = stream_raises or create_raises
    async with chaos([fault]) as (proxy, url, _mock):
        for call, expected in ((stream_text, create_raises), (final_text, stream_raises)):
            try:
                await asyncio.to_thread(call, url)
                raised = None
            except Exception as e:
                raised = type(e).__name__
            assert raised == expected, (call.__name__, fault)
    # The recorder judges from the terminal event: only a malformed event (a lost
    # token, the stream still completed) leaves a record of a whole delivery.
    malformed = fault.get("action") == "malformed_json"
    for ex in proxy.recorder.exchanges:
        assert ex.faults and ex.client_complete is malformed


async def test_stream_error_continues_the_sequence_numbers() -> None:
    """The injected error event carries the next sequence_number and the nested error object."""
    async with chaos([{"type": "stream_error", "after_events": 6}]) as (proxy, url, _mock):
        with pytest.raises(openai.APIError) as info:
            await asyncio.to_thread(stream_text, url)
    assert info.value.message == "The server is overloaded or not ready yet."
    body = bytes(proxy.recorder.exchanges[0].client_chunks or b"").decode()
    last = json.loads(body.rstrip().rsplit("data: ", 1)[1])
    assert last["type"] == "error" and last["sequence_number"] == 6
    assert last["error"]["type"] == "server_error" and last["message"] == last["error"]["message"]


async def test_latency_and_throttle_count_responses_tokens() -> None:
    """tokens_per_s paces text deltas only; per_event_ms delays every event; text intact."""
    faults = [{"type": "throttle", "tokens_per_s": 100}, {"type": "latency", "per_event_ms": 2}]
    async with chaos(faults) as (proxy, url, _mock):
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await asyncio.to_thread(stream_text, url) == EXPECTED
        took = loop.time() - start
    # 20 tokens at 100/s is at least 0.19 s; generous upper bound for a shared CI box.
    assert 0.18 <= took < 5.0
    assert proxy.recorder.exchanges[0].client_complete


def run_cli(tmp_path: Path, scenarios: str, mode: str) -> dict[str, Any]:
    """`chaosstream run` on the Responses SDK client; the JSON report."""
    path = tmp_path / "scenarios.yaml"
    path.write_text("version: 1\nscenarios:\n" + scenarios, encoding="utf-8")
    report = tmp_path / "report.json"
    args = ["run", str(path), "--seed", "3", "--json", str(report), "--"]
    result = CliRunner().invoke(cli, [*args, sys.executable, str(PROGRAM), mode])
    assert report.exists(), result.output
    data: dict[str, Any] = json.loads(report.read_text())
    return data


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


def test_run_judges_the_sdk_client_from_the_responses_terminal_event(tmp_path: Path) -> None:
    """A naive client shows a cut answer as whole (silent truncation); a careful one falls back."""
    naive = {s["name"]: s["observed"] for s in run_cli(tmp_path, SCENARIOS, "naive")["scenarios"]}
    assert naive["clean"]["completed"] and not naive["clean"]["silent_truncation"]
    assert naive["close-no-terminal"]["silent_truncation"] is True
    assert naive["close-no-terminal"]["exit_code"] == 0
    assert naive["overloaded"]["surfaced_error"] is True
    assert not naive["overloaded"]["silent_truncation"]
    careful = {s["name"]: s for s in run_cli(tmp_path, SCENARIOS, "careful")["scenarios"]}
    for name in ("close-no-terminal", "overloaded"):
        obs = careful[name]["observed"]
        assert obs["fell_back"] and obs["completed"] and not obs["silent_truncation"], name
        assert careful[name]["passed"], careful[name]["expectations"]
