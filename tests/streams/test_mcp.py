"""MCP Streamable HTTP: the format, the mock's MCP server, and the official ``mcp`` SDK through
the proxy (same result as direct; each fault makes the SDK do what it really does, measured)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from click.testing import CliRunner
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import jsonrpc_message_adapter

from chaosstream.cli import cli
from chaosstream.mock import MockServer, MockSettings, answer_text, mock_answer, start_mock
from chaosstream.proxy.record import Exchange, fingerprint
from chaosstream.streams.mcp import Mcp, sse_message
from chaosstream.streams.registry import format_for, stream_summary
from chaosstream.streams.sse import EventDecoder
from chaosstream.testing import make_request
from tests.conftest import ProxyFactory, make_profile

TOKENS = 12
PROMPT = "Tell me about rivers."
EXPECTED = answer_text(PROMPT, TOKENS)
MCP = Mcp()
CALL = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "tools/call",
    "params": {
        "name": "stream_answer",
        "arguments": {"prompt": PROMPT},
        "_meta": {"progressToken": 3},
    },
}


def frame(message: dict[str, Any]) -> Any:
    return EventDecoder().feed(sse_message(message))[0]


def test_registry_names_the_mcp_endpoint() -> None:
    """/mcp (any prefix, any method) is MCP; other paths are not."""
    assert format_for("POST", "/mcp").name == "mcp"
    assert format_for("GET", "/~/team/mcp").name == "mcp"
    assert format_for("POST", "/v1/chat/completions").name != "mcp"


def test_text_terminal_and_error_frames() -> None:
    """The result is the text and terminal; progress a token; a JSON-RPC error an error."""
    result = {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "hi"}]}}
    progress = {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": 3, "progress": 1, "message": "hi"},
    }
    error = {"jsonrpc": "2.0", "id": 3, "error": {"code": -32603, "message": "boom"}}
    assert (MCP.text(frame(result)), MCP.is_terminal(frame(result))) == ("hi", True)
    assert (MCP.text(frame(progress)), MCP.tokens(frame(progress))) == (None, 1)
    assert not MCP.is_terminal(frame(progress)) and not MCP.is_error(frame(progress))
    assert MCP.is_error(frame(error)) and not MCP.is_terminal(frame(error))


def test_error_frame_is_a_jsonrpc_error_the_sdk_parses_for_the_request() -> None:
    """stream_error's frame parses as the SDK's JSONRPCError, with the progress token as id."""
    last = frame(
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 7}}
    )
    ev = EventDecoder().feed(MCP.error_frame("overloaded", last))[0]
    parsed = jsonrpc_message_adapter.validate_json(ev.data, by_name=False)
    assert type(parsed).__name__ == "JSONRPCError" and parsed.id == 7
    assert MCP.is_error(ev)
    body = json.loads(MCP.error_body(404))
    assert body["error"]["code"] == -32001 and body["id"] is None


def test_stream_flag_and_equivalence() -> None:
    """tools/call and a resuming GET stream; a retry with a new id and token is equivalent."""
    assert MCP.wants_stream(make_request("/mcp", body=CALL))
    assert not MCP.wants_stream(
        make_request("/mcp", body={"jsonrpc": "2.0", "id": 1, "method": "initialize"})
    )
    assert MCP.wants_stream(make_request("/mcp", method="GET", headers={"Last-Event-ID": "1-2"}))
    assert not MCP.wants_stream(make_request("/mcp", method="GET"))
    retry = json.loads(json.dumps(CALL))
    retry["id"] = 9
    retry["params"]["_meta"]["progressToken"] = 9
    fp = [fingerprint("POST", "/mcp", "", json.dumps(b).encode(), "mcp") for b in (CALL, retry)]
    assert fp[0] == fp[1]
    assert mock_answer("mcp", json.dumps(CALL).encode(), TOKENS) == EXPECTED


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(
        settings=MockSettings(ttft_ms=5, tokens_per_s=400, tokens=TOKENS)
    ) as s:
        yield s


async def _session(http: aiohttp.ClientSession, url: str) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25"},
    }
    async with http.post(url, json=init) as r:
        assert r.status == 200
        assert (await r.json())["result"]["protocolVersion"] == "2025-11-25"
        return r.headers["Mcp-Session-Id"]


async def test_mock_streams_progress_then_result_and_resumes_after_an_event_id(
    mock: MockServer,
) -> None:
    """The mock's tool: a priming id, progress per token, the result; a GET resumes after an id."""
    url = mock.url + "/mcp"
    async with aiohttp.ClientSession() as http:
        sid = await _session(http, url)
        headers = {"Mcp-Session-Id": sid, "Accept": "application/json, text/event-stream"}
        async with http.post(url, json=CALL, headers=headers) as r:
            assert r.content_type == "text/event-stream"
            body = await r.read()
        summary = stream_summary(body, "mcp")
        assert summary.text == EXPECTED and summary.terminated
        assert summary.events == TOKENS + 2 and summary.tokens == 1
        assert summary.last_event_id == f"1-{TOKENS + 1}"
        async with http.get(url, headers={**headers, "Last-Event-ID": "1-5"}) as r:
            events = EventDecoder().feed(await r.read())
        assert events[0].id == "1-6" and MCP.is_terminal(events[-1])
        async with http.get(url, headers=headers) as r:
            assert r.status == 405  # no standalone stream
        async with http.post(url, json=CALL, headers={**headers, "Mcp-Session-Id": "dead"}) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == -32001
        async with http.delete(url, headers=headers) as r:
            assert r.status == 200
        async with http.post(url, json=CALL, headers=headers) as r:
            assert r.status == 404  # a deleted session is gone


def first_error(exc: BaseException) -> str:
    """The SDK's own exception inside anyio's exception groups, as "Type: message"."""
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}"


async def sdk_call(url: str, timeout_s: float = 15) -> tuple[str | None, str | None]:
    """The official SDK's tools/call with a progress callback: (result text, error raised)."""

    async def progress(done: float, total: float | None, message: str | None) -> None:
        """Asking for progress makes the SDK send a progressToken, so the tool streams."""

    async def run() -> str:
        http = httpx2.AsyncClient(timeout=httpx2.Timeout(10, read=3))
        async with (
            http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool(
                "stream_answer",
                {"prompt": PROMPT},
                progress_callback=progress,
                read_timeout_seconds=8,
            )
            return "".join(getattr(b, "text", "") for b in result.content)

    try:
        return await asyncio.wait_for(run(), timeout_s), None
    except Exception as exc:  # what the SDK raises is the result under test
        return None, first_error(exc)


async def settled(proxy: Any) -> list[Exchange]:
    for _ in range(200):
        exchanges = list(proxy.recorder.exchanges)
        if exchanges and all(e.ended is not None for e in exchanges):
            break
        await asyncio.sleep(0.01)
    return list(proxy.recorder.exchanges)


def _call_exchange(exchanges: list[Exchange]) -> Exchange:
    return next(e for e in exchanges if e.stream and e.method == "POST")


async def test_the_sdk_gets_the_same_result_through_the_proxy(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """Without faults the SDK's tools/call result through the proxy is the direct one."""
    direct = await sdk_call(mock.url + "/mcp")
    proxy = await proxy_factory(mock.url)
    assert await sdk_call(proxy.url + "/mcp") == direct == (EXPECTED, None)
    call = _call_exchange(await settled(proxy))
    assert call.provider == "mcp" and call.client_text == EXPECTED and call.client_complete
    assert call.events == TOKENS + 2  # the priming event, a progress per token, the result


FIRST_CALL: dict[str, Any] = {"match": {"stream": True}, "requests": [1]}


@pytest.mark.parametrize(
    ("fault", "error", "resumed"),
    [
        # A resumable stream survives a cut: the SDK GETs with Last-Event-ID (after 1 s:
        # DEFAULT_RECONNECTION_DELAY_MS) and the mock replays the rest.
        ({"type": "disconnect", "after_tokens": 3, "mode": "reset"}, None, True),
        ({"type": "disconnect", "after_tokens": 3, "mode": "close"}, None, True),
        ({"type": "polite_close", "after_events": 4, "retry_ms": 200}, None, True),
        ({"type": "polite_close", "before_terminal": True, "retry_ms": None}, None, True),
        # No JSON-RPC response: the SDK resumes too, and the replay carries it.
        ({"type": "corrupt", "action": "drop_terminal"}, None, True),
        # An in-stream JSON-RPC error is the call's error (MCPError), at once.
        ({"type": "stream_error", "after_events": 3}, "MCPError: Server overloaded", False),
        (
            {"type": "corrupt", "action": "malformed_json", "after_events": 3},
            "MCPError: Failed to parse SSE message",
            False,
        ),
        # A 404 on the session: the SDK surfaces the body's JSON-RPC error; no re-initialise.
        ({"type": "session_expiry"}, "MCPError: Session not found", False),
        ({"type": "http_error", "status": 503}, "MCPError: Server error: HTTP 503", False),
    ],
)
async def test_faults_make_the_sdk_do_what_it_really_does(
    mock: MockServer,
    proxy_factory: ProxyFactory,
    fault: dict[str, Any],
    error: str | None,
    resumed: bool,
) -> None:
    """Each fault fires on the tools/call; the SDK resumes, or raises its own error."""
    proxy = await proxy_factory(mock.url, make_profile([{**fault, **FIRST_CALL}]))
    text, raised = await sdk_call(proxy.url + "/mcp")
    exchanges = await settled(proxy)
    call = _call_exchange(exchanges)
    assert {f.type for f in call.faults} == {fault["type"]}
    if error is None:
        assert (text, raised) == (EXPECTED, None)
    else:
        assert text is None and raised is not None and raised.startswith(error), raised
    resumes = [e for e in exchanges if e.method == "GET" and e.last_event_id]
    assert bool(resumes) is resumed
    if resumed:
        # The GET names the last event the client was sent, and its replay ends the answer.
        assert resumes[0].last_event_id == call.delivered_event_id
        assert not call.client_complete and resumes[0].client_text == EXPECTED


async def test_the_sdk_waits_the_retry_a_polite_close_sends(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """After `retry: 400` the SDK's GET comes about 400 ms after the close, not its 1 s default."""
    fault = {"type": "polite_close", "after_events": 4, "retry_ms": 400, **FIRST_CALL}
    proxy = await proxy_factory(mock.url, make_profile([fault]))
    assert await sdk_call(proxy.url + "/mcp") == (EXPECTED, None)
    exchanges = await settled(proxy)
    call = _call_exchange(exchanges)
    resume = next(e for e in exchanges if e.method == "GET" and e.last_event_id)
    assert call.ended is not None
    gap = resume.started - call.ended
    assert 0.35 <= gap < 0.9, gap


async def test_an_expired_session_stays_dead_and_a_new_one_lives(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """session_expiry: the expiring request and every later one on that id get 404; a new
    initialize passes and its session lives (`sessions: 1`)."""
    proxy = await proxy_factory(
        mock.url, make_profile([{"type": "session_expiry", "after_requests": 1}])
    )
    url = proxy.url + "/mcp"
    async with aiohttp.ClientSession() as http:
        sid = await _session(http, url)
        headers = {"Mcp-Session-Id": sid, "Accept": "application/json, text/event-stream"}
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        statuses = []
        for _ in range(3):
            async with http.post(url, json=ping, headers=headers) as r:
                statuses.append(r.status)
        assert statuses == [200, 404, 404]
        fresh = await _session(http, url)
        for _ in range(3):
            async with http.post(url, json=ping, headers={**headers, "Mcp-Session-Id": fresh}) as r:
                assert r.status == 200


# --- run and check on an SDK program ---------------------------------------------------

PROGRAM = Path(__file__).parent.parent / "programs" / "mcp_sdk.py"
SCENARIOS = """\
version: 1
scenarios:
  - name: polite-close
    profile:
      version: 1
      name: polite-close
      faults:
        - {type: polite_close, after_events: 5, retry_ms: 100, match: {stream: true}, requests: [1]}
    expect: [resumes, completes]
  - name: session-expiry
    profile:
      version: 1
      name: session-expiry
      faults: [{type: session_expiry, match: {stream: true}}]
    expect: [reinitializes, completes]
"""


def _run(tmp_path: Path, mode: str) -> dict[str, Any]:
    path = tmp_path / "scenarios.yaml"
    path.write_text(SCENARIOS, encoding="utf-8")
    report = tmp_path / f"{mode}.json"
    args = ["run", str(path), "--seed", "3", "--json", str(report), "--"]
    result = CliRunner().invoke(cli, [*args, sys.executable, str(PROGRAM), mode])
    assert report.exists(), result.output
    data: dict[str, Any] = json.loads(report.read_text())
    return {s["name"]: s for s in data["scenarios"]}


def test_run_judges_resumption_and_reinitialisation_of_the_sdk(tmp_path: Path) -> None:
    """`resumes` sees the SDK's GET with Last-Event-ID; `reinitializes` fails a client that gives
    up on a 404 and passes one that opens a new session."""
    careful = _run(tmp_path, "careful")
    assert careful["polite-close"]["passed"], careful["polite-close"]["expectations"]
    assert careful["session-expiry"]["passed"], careful["session-expiry"]["expectations"]
    naive = _run(tmp_path, "naive")["session-expiry"]
    verdicts = {v["name"]: v for v in naive["expectations"]}
    assert verdicts["reinitializes"]["verdict"] == "fail"
    assert (
        "sent nothing after" in verdicts["reinitializes"]["evidence"]
        or "dead" in (verdicts["reinitializes"]["evidence"])
    )
    assert naive["observed"]["surfaced_error"] and not naive["observed"]["silent_truncation"]


def test_check_passes_the_sdk_client_unchanged(tmp_path: Path) -> None:
    """`check`'s stream scenarios, unchanged, against the SDK: resumable cuts complete (the SDK
    resumes), in-stream errors surface. (The whole battery passes too; its timed scenarios are
    left out here for the suite's time.)"""
    report = tmp_path / "report.json"
    only = ["midstream-reset", "midstream-close", "overloaded-in-stream", "malformed-event"]
    args = ["check", "--seed", "3", "--json", str(report)]
    args += [item for name in only for item in ("--only", name)]
    result = CliRunner().invoke(cli, [*args, "--", sys.executable, str(PROGRAM), "careful"])
    assert report.exists(), result.output
    data = json.loads(report.read_text())
    failed = [(s["name"], s["expectations"]) for s in data["scenarios"] if not s["passed"]]
    assert not failed, failed
    resumed = {s["name"] for s in data["scenarios"] if s["observed"]["resumed"]}
    assert resumed == {"midstream-reset", "midstream-close"}
