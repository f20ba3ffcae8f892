"""OpenAI Realtime over WebSocket: the format, the mock's /v1/realtime, openai-python's realtime
connection through the proxy (same text as direct; each fault makes the SDK do what it really
does, measured), and run/check on an SDK program."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from openai import AsyncOpenAI

from chaosstream.cli import cli
from chaosstream.clients.command import client_env
from chaosstream.mock import MockServer, MockSettings, answer_text, mock_answer, start_mock
from chaosstream.proxy.record import Exchange
from chaosstream.streams.openai_realtime import OpenAIRealtime
from chaosstream.streams.registry import format_for
from chaosstream.streams.sse import Event
from tests.conftest import ProxyFactory, make_profile

TOKENS = 12
PROMPT = "Tell me about rivers."
EXPECTED = answer_text(PROMPT, TOKENS)
RT = OpenAIRealtime()
ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}


def frame(obj: dict[str, Any]) -> Event:
    return Event(raw=b"", data=json.dumps(obj), data_lines=1)


def test_registry_names_the_realtime_path() -> None:
    """/v1/realtime is OpenAI Realtime on the ws-json framing."""
    fmt = format_for("GET", "/v1/realtime")
    assert fmt.name == "openai-realtime" and fmt.framing == "ws-json"


def test_text_terminal_and_error_events() -> None:
    """Text and transcript deltas are text; response.done ends; error and a failed done err."""
    assert RT.text(frame({"type": "response.output_text.delta", "delta": "hi"})) == "hi"
    assert RT.text(frame({"type": "response.output_audio_transcript.delta", "delta": "a"})) == "a"
    assert RT.text(frame({"type": "rate_limits.updated", "rate_limits": []})) is None
    done = {"type": "response.done", "response": {"status": "completed"}}
    assert RT.is_terminal(frame(done)) and not RT.is_error(frame(done))
    failed = {"type": "response.done", "response": {"status": "failed"}}
    assert RT.is_terminal(frame(failed)) and RT.is_error(frame(failed))
    error = json.loads(RT.error_frame("rate_limit"))
    assert error["type"] == "error" and error["error"]["code"] == "rate_limit_exceeded"
    assert RT.is_error(frame(error)) and RT.is_terminal(frame(json.loads(RT.terminal_frame())))


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    settings = MockSettings(ttft_ms=5, tokens_per_s=400, tokens=TOKENS)
    async with await start_mock(settings=settings) as s:
        yield s


async def talk(base_url: str, timeout_s: float = 3) -> tuple[str, str | None, str | None]:
    """openai-python's realtime connection: (text, response.done status, error), where the
    error is an `error` event's message or what the SDK raised ("hang" on a silent socket)."""
    client = AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0)
    pieces: list[str] = []

    async def run() -> tuple[str | None, str | None]:
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await conn.conversation.item.create(item=ITEM)  # type: ignore[arg-type]
            await conn.response.create()
            async for event in conn:
                if event.type == "response.output_text.delta":
                    pieces.append(event.delta)
                elif event.type == "error":
                    return None, f"error event: {event.error.message}"
                elif event.type == "response.done":
                    return event.response.status, None
        return None, "the events ended"

    try:
        status, error = await asyncio.wait_for(run(), timeout_s)
    except asyncio.TimeoutError:
        status, error = None, "hang"
    except Exception as exc:  # what the SDK raises is the result under test
        status, error = None, f"{type(exc).__name__}: {exc}"
    return "".join(pieces), status, error


async def settled(proxy: Any) -> Exchange:
    for _ in range(300):
        exchanges = list(proxy.recorder.exchanges)
        if exchanges and exchanges[-1].ended is not None:
            return exchanges[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("no finished exchange")


async def test_the_sdk_gets_the_same_text_through_the_proxy_and_the_recorder_rebuilds_it(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """Without faults the SDK's text through the proxy is the direct one; the exchange records
    the messages, so its text, its terminal and the mock's answer to its request are known."""
    direct = await talk(mock.url + "/v1")
    proxy = await proxy_factory(mock.url)
    assert await talk(proxy.url + "/v1") == direct == (EXPECTED, "completed", None)
    ex = await settled(proxy)
    assert ex.provider == "openai-realtime" and ex.status == 101
    assert ex.response_text == EXPECTED and ex.upstream_complete
    assert mock_answer(ex.provider, ex.request_body, TOKENS) == EXPECTED


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        # A cut socket: websockets' ConnectionClosedError out of the SDK's event loop.
        ({"type": "disconnect", "after_tokens": 3, "mode": "reset"}, "ConnectionClosedError"),
        ({"type": "disconnect", "after_tokens": 3, "mode": "close"}, "ConnectionClosedError"),
        # An in-stream error is just an event the SDK yields: the application must look.
        ({"type": "stream_error", "after_events": 8}, "error event: The server is overloaded."),
        # No response.done: nothing in the SDK notices; the loop waits for ever.
        ({"type": "corrupt", "action": "drop_terminal"}, "hang"),
        # A mangled event: the SDK's parse raises the JSON error.
        ({"type": "corrupt", "action": "malformed_json", "after_events": 8}, "JSONDecodeError"),
        # A refused handshake: websockets raises InvalidStatus (no retry by the SDK).
        ({"type": "http_error", "status": 429}, "InvalidStatus"),
    ],
)
async def test_faults_make_the_sdk_do_what_it_really_does(
    mock: MockServer, proxy_factory: ProxyFactory, fault: dict[str, Any], error: str
) -> None:
    """Each fault fires on the Realtime socket; the SDK raises, yields an error, or hangs."""
    proxy = await proxy_factory(mock.url, make_profile([fault]))
    text, status, raised = await talk(proxy.url + "/v1")
    assert raised is not None and raised.startswith(error), raised
    assert status is None
    ex = await settled(proxy)
    assert {f.type for f in ex.faults} == {fault["type"]}
    assert ex.client_text.startswith(text)  # the recorder saw what the SDK got, and more
    if fault["type"] == "disconnect":
        assert ex.tokens == 3 and ex.client_text == text


async def test_client_env_points_the_sdk_at_the_proxy(
    mock: MockServer, proxy_factory: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPENAI_BASE_URL (run/check give it) is all the SDK needs: it derives ws://.../realtime."""
    proxy = await proxy_factory(mock.url)
    env = client_env(proxy.url, "s", mock=True)
    monkeypatch.setenv("OPENAI_BASE_URL", env["OPENAI_BASE_URL"])
    monkeypatch.setenv("OPENAI_API_KEY", env["OPENAI_API_KEY"])
    client = AsyncOpenAI(max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
    assert (await settled(proxy)).path == "/v1/realtime"


PROGRAM = Path(__file__).parent.parent / "programs" / "realtime_sdk.py"
SCENARIOS = """\
version: 1
scenarios:
  - name: clean
    profile: clean
    expect: [completes]
  - name: no-response-done
    profile:
      version: 1
      name: no-response-done
      faults: [{type: corrupt, action: drop_terminal}]
    expect: [surfaces_error]
    timeout_s: 6
"""


def test_run_judges_completion_and_a_missing_terminal(tmp_path: Path) -> None:
    """A careful client completes clean and surfaces a missing response.done (its own timeout);
    a naive one hangs on it (the SDK never notices)."""
    path = tmp_path / "scenarios.yaml"
    path.write_text(SCENARIOS, encoding="utf-8")
    seen: dict[str, dict[str, Any]] = {}
    for mode in ("careful", "naive"):
        report = tmp_path / f"{mode}.json"
        args = ["run", str(path), "--seed", "3", "--json", str(report), "--"]
        result = CliRunner().invoke(cli, [*args, sys.executable, str(PROGRAM), mode])
        assert report.exists(), result.output
        seen[mode] = {s["name"]: s for s in json.loads(report.read_text())["scenarios"]}
    assert seen["careful"]["clean"]["passed"] and seen["careful"]["no-response-done"]["passed"]
    assert seen["careful"]["clean"]["observed"]["completed"]
    hung = seen["naive"]["no-response-done"]
    assert not hung["passed"] and "hung" in hung["expectations"][0]["evidence"]


def test_check_stream_scenarios_pass_a_careful_sdk_client(tmp_path: Path) -> None:
    """`check`'s stream scenarios, unchanged, against the Realtime SDK: each error surfaces."""
    report = tmp_path / "report.json"
    only = ["midstream-reset", "overloaded-in-stream", "malformed-event", "rate-limited-429"]
    args = ["check", "--seed", "3", "--json", str(report)]
    args += [item for name in only for item in ("--only", name)]
    result = CliRunner().invoke(cli, [*args, "--", sys.executable, str(PROGRAM), "careful"])
    assert report.exists(), result.output
    data = json.loads(report.read_text())
    failed = [(s["name"], s["expectations"]) for s in data["scenarios"] if not s["passed"]]
    assert not failed, failed
    assert all(s["observed"]["surfaced_error"] for s in data["scenarios"])
