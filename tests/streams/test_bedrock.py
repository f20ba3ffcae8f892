"""Tests for chaosstream.streams.bedrock: Converse event stream messages, the mock's Bedrock
routes, and boto3's bedrock-runtime client through the proxy under the fault catalog."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import EventStreamError
from click.testing import CliRunner

from chaosstream.cli import cli
from chaosstream.faults import RequestInfo
from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock
from chaosstream.proxy.record import Exchange
from chaosstream.streams.bedrock import Bedrock, event_message, exception_message
from chaosstream.streams.eventstream import EVENTSTREAM_FRAMER
from chaosstream.streams.registry import format_for, framer_for, get, stream_summary
from tests.conftest import ProxyFactory, make_profile

FMT = Bedrock()
TOKENS = 20
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": [{"text": "Tell me a story."}]}]
EXPECTED = answer_text({"messages": MESSAGES}, TOKENS)
DELTA = event_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
STOP = event_message("messageStop", {"stopReason": "end_turn"})


def frame(raw: bytes) -> Any:
    return EVENTSTREAM_FRAMER.parse(raw, False)


def botocore_reads(raw: bytes) -> list[Any]:
    """botocore's own decoder over our bytes: the reference for what a client accepts."""
    buf = EventStreamBuffer()
    buf.add_data(raw)
    return list(buf)


def test_registry_names_bedrock_paths_and_its_framing() -> None:
    """converse-stream and converse under /model/{id}/ are Bedrock, framed as event stream."""
    assert format_for("POST", f"/model/{MODEL}/converse-stream").name == "bedrock"
    assert format_for("POST", "/gw/model/m/converse").name == "bedrock"
    assert format_for("POST", "/model/m/invoke").name != "bedrock"
    assert framer_for("bedrock") is EVENTSTREAM_FRAMER
    assert get("bedrock").media_type == "application/vnd.amazon.eventstream"


def test_text_terminal_and_exceptions() -> None:
    """Text from contentBlockDelta; messageStop ends; exception messages are errors."""
    assert FMT.text(frame(DELTA)) == "Hi"
    assert FMT.is_terminal(frame(STOP)) and FMT.text(frame(STOP)) is None
    assert not FMT.is_terminal(frame(DELTA)) and not FMT.is_error(frame(DELTA))
    boom = exception_message("modelStreamErrorException", "boom")
    assert FMT.is_error(frame(boom)) and FMT.text(frame(boom)) is None
    # An exception whose type is named like an event is still no text.
    odd = exception_message("contentBlockDelta", "x")
    assert FMT.text(frame(odd)) is None and FMT.is_error(frame(odd))


def test_made_frames_pass_botocores_own_decoder() -> None:
    """Every frame we make has valid CRCs and the headers botocore reads."""
    for kind in ("overloaded", "server_error", "rate_limit"):
        raw = FMT.error_frame(kind)
        (msg,) = botocore_reads(raw)
        assert msg.headers[":message-type"] == "exception"
        assert msg.headers[":exception-type"].endswith("Exception")
        assert FMT.is_error(frame(raw))
    (msg,) = botocore_reads(FMT.terminal_frame())
    assert msg.headers[":event-type"] == "messageStop"
    assert json.loads(msg.payload) == {"stopReason": "end_turn"}
    body = json.loads(FMT.error_body(429))
    assert body["__type"] == "ThrottlingException" and body["message"]


def test_a_flipped_bit_fails_botocores_crc_check() -> None:
    """corrupt bit_flip keeps the length, so only the CRC tells: botocore raises."""
    raw = bytearray(DELTA)
    start, end = EVENTSTREAM_FRAMER.payload(bytes(raw))
    raw[(start + end) // 2] ^= 1
    with pytest.raises(ChecksumMismatch):
        botocore_reads(bytes(raw))
    damaged = frame(bytes(raw))
    assert FMT.text(damaged) is None and FMT.is_error(damaged)  # an error, never answer text


def test_stream_flag_is_the_operation() -> None:
    """converse-stream streams, converse does not; both are equivalent requests."""

    def info(path: str) -> RequestInfo:
        return RequestInfo("POST", path, "", {}, b"", "bedrock", True, json={})

    assert FMT.wants_stream(info("/model/m/converse-stream"))
    assert not FMT.wants_stream(info("/model/m/converse"))
    body = {"messages": MESSAGES}
    assert FMT.equivalent("/model/m/converse-stream", "", dict(body)) == FMT.equivalent(
        "/model/m/converse", "", dict(body)
    )


def test_summary_rebuilds_text_and_sees_the_end() -> None:
    """A recorded body's text is every delta's text; messageStop marks it terminated."""
    summary = stream_summary(DELTA * 3 + STOP, "bedrock")
    assert summary.text == "HiHiHi" and summary.tokens == 3 and summary.terminated
    assert not stream_summary(DELTA * 3, "bedrock").terminated
    assert stream_summary(DELTA + FMT.error_frame("overloaded"), "bedrock").errored


# --- the mock and boto3 through the proxy ----------------------------------------------


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(
        settings=MockSettings(ttft_ms=5, tokens_per_s=0, tokens=TOKENS)
    ) as s:
        yield s


def _client(url: str, attempts: int = 1) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="chaosstream",
        aws_secret_access_key="chaosstream",
        config=Config(retries={"total_max_attempts": attempts}, read_timeout=10),
    )


def _converse(url: str, stream: bool) -> tuple[str, str | None, BaseException | None]:
    """Run boto3's converse(_stream): the text it gave, the stopReason, what it raised."""
    client = _client(url)
    parts: list[str] = []
    stop: str | None = None
    response: dict[str, Any] | None = None
    try:
        if not stream:
            out = client.converse(modelId=MODEL, messages=MESSAGES)
            content = out["output"]["message"]["content"]
            return "".join(c["text"] for c in content), out["stopReason"], None
        response = client.converse_stream(modelId=MODEL, messages=MESSAGES)
        for event in response["stream"]:
            if "contentBlockDelta" in event:
                parts.append(event["contentBlockDelta"]["delta"]["text"])
            if "messageStop" in event:
                stop = event["messageStop"]["stopReason"]
    except Exception as exc:  # what the SDK raises is the result under test
        return "".join(parts), stop, exc
    finally:
        # A cut stream leaves urllib3's socket open until garbage collection (and then a
        # ResourceWarning in whichever test runs): close the stream and the client's pool.
        if response is not None:
            response["stream"].close()
        client.close()
    return "".join(parts), stop, None


async def converse(url: str, stream: bool) -> tuple[str, str | None, BaseException | None]:
    # boto3 is synchronous: a thread, so the proxy and mock keep running on this loop.
    return await asyncio.to_thread(_converse, url, stream)


async def last_exchange(proxy: Any) -> Exchange:
    """The proxy's last finished exchange (the recorder gets it right after the response)."""
    for _ in range(200):
        if proxy.recorder.exchanges and proxy.recorder.exchanges[-1].ended is not None:
            break
        await asyncio.sleep(0.01)
    ex: Exchange = proxy.recorder.exchanges[-1]
    return ex


async def test_boto3_gets_the_same_text_through_the_proxy_streaming_and_not(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """Without faults boto3 gets the mock's text through the proxy, streamed and whole."""
    proxy = await proxy_factory(mock.url)
    for stream in (True, False):
        assert await converse(proxy.url, stream) == (EXPECTED, "end_turn", None)
        ex = await last_exchange(proxy)
        assert ex.provider == "bedrock" and ex.stream is stream
        assert ex.client_text == EXPECTED and ex.client_complete


async def test_the_mock_stream_error_header_is_a_model_stream_exception(
    mock: MockServer,
) -> None:
    """x-chaosstream-mock-error-after ends the stream with modelStreamErrorException."""
    client = _client(mock.url)

    def add_header(request: Any, **_: Any) -> None:
        request.headers["x-chaosstream-mock-error-after"] = "3"

    client.meta.events.register("before-send.bedrock-runtime.ConverseStream", add_header)

    def run() -> tuple[list[str], BaseException | None]:
        parts: list[str] = []
        stream = client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]
        try:
            for event in stream:
                if "contentBlockDelta" in event:
                    parts.append(event["contentBlockDelta"]["delta"]["text"])
        except EventStreamError as exc:
            return parts, exc
        finally:
            stream.close()  # the broken stream's socket, now rather than at collection
            client.close()
        return parts, None

    parts, error = await asyncio.to_thread(run)
    assert len(parts) == 3 and isinstance(error, EventStreamError)
    assert error.response["Error"]["Code"] == "modelStreamErrorException"


@pytest.mark.parametrize(
    ("fault", "raises", "delivered"),
    [
        # A reset mid-stream: urllib3's protocol error, wrapped by nothing (boto3 does not
        # retry once the stream began).
        ({"type": "disconnect", "after_tokens": 5, "mode": "reset"}, "ProtocolError", 5),
        # A reset inside a message (after_bytes lands mid-frame): the same.
        ({"type": "disconnect", "after_bytes": 700, "mode": "reset"}, "ProtocolError", None),
        # A clean close without messageStop: the iteration just ends, no error at all.
        ({"type": "disconnect", "after_tokens": 5, "mode": "close"}, None, 5),
        (
            {"type": "stream_error", "after_events": 5, "kind": "overloaded"},
            "EventStreamError",
            4,  # messageStart is the first of the 5 events
        ),
        ({"type": "corrupt", "action": "bit_flip", "after_events": 5}, "ChecksumMismatch", None),
        # The payload cut short: the prelude's length now reaches into the next message,
        # so botocore's CRC check is what fails.
        (
            {"type": "corrupt", "action": "malformed_json", "after_events": 5},
            "ChecksumMismatch",
            None,
        ),
        # No messageStop but every token: the client cannot tell (it never checks).
        ({"type": "corrupt", "action": "drop_terminal"}, None, TOKENS),
        ({"type": "throttle", "tokens_per_s": 400}, None, TOKENS),
        ({"type": "latency", "per_event_ms": 3}, None, TOKENS),
        ({"type": "buffer"}, None, TOKENS),
    ],
)
async def test_faults_make_boto3_do_what_it_really_does(
    mock: MockServer,
    proxy_factory: ProxyFactory,
    fault: dict[str, object],
    raises: str | None,
    delivered: int | None,
) -> None:
    """Each fault fires on the binary stream; boto3 raises its own error (or nothing)."""
    proxy = await proxy_factory(mock.url, make_profile([fault]))
    text, stop, error = await converse(proxy.url, stream=True)
    if raises is None:
        assert error is None
    else:
        assert error is not None and raises in type(error).__name__, repr(error)
    ex = await last_exchange(proxy)
    assert {f.type for f in ex.faults} == {fault["type"]}
    if delivered is not None:
        assert ex.tokens == delivered
    assert ex.client_text.startswith(text)
    if fault["type"] in ("throttle", "latency", "buffer"):
        assert ex.client_complete and text == EXPECTED and stop == "end_turn"
    else:
        assert not ex.client_complete  # the recorder knows the answer did not end well
        assert stop is None


async def test_client_env_points_a_default_boto3_client_at_the_proxy(
    mock: MockServer, proxy_factory: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run/check give AWS_ENDPOINT_URL_BEDROCK_RUNTIME and dummy keys: boto3 needs nothing else."""
    from chaosstream.clients.command import client_env

    proxy = await proxy_factory(mock.url)
    env = client_env(proxy.url, "s", mock=True)
    for name in (
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.setenv(name, env[name])
    client = boto3.client("bedrock-runtime")
    out = await asyncio.to_thread(client.converse, modelId=MODEL, messages=MESSAGES)
    assert out["output"]["message"]["content"][0]["text"] == EXPECTED
    assert (await last_exchange(proxy)).path == f"/model/{MODEL}/converse"


async def test_a_converse_after_a_cut_stream_is_an_equivalent_fallback(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A cut converse-stream, then converse: same fingerprint, first failed, second whole."""
    cut = {"type": "disconnect", "after_tokens": 3, "mode": "reset", "requests": [1]}
    proxy = await proxy_factory(mock.url, make_profile([cut]))
    assert (await converse(proxy.url, stream=True))[2] is not None
    assert await converse(proxy.url, stream=False) == (EXPECTED, "end_turn", None)
    await last_exchange(proxy)
    first, second = list(proxy.recorder.exchanges)[-2:]
    assert first.fingerprint == second.fingerprint
    assert first.stream and first.failed
    assert not second.stream and second.client_complete


# --- run and check on a boto3 program ---------------------------------------------------

PROGRAM = Path(__file__).parent.parent / "programs" / "bedrock_sdk.py"
SCENARIOS = """\
version: 1
scenarios:
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


def test_run_judges_a_naive_boto3_client_by_the_missing_message_stop(tmp_path: Path) -> None:
    """A client that ignores messageStop shows a closed stream as whole: silent truncation."""
    path = tmp_path / "scenarios.yaml"
    path.write_text(SCENARIOS, encoding="utf-8")
    report = tmp_path / "report.json"
    args = ["run", str(path), "--seed", "3", "--json", str(report), "--"]
    result = CliRunner().invoke(cli, [*args, sys.executable, str(PROGRAM), "naive"])
    assert report.exists(), result.output
    seen = {s["name"]: s["observed"] for s in json.loads(report.read_text())["scenarios"]}
    assert seen["clean"]["completed"] and not seen["clean"]["silent_truncation"]
    assert seen["close-no-terminal"]["silent_truncation"] is True
    assert seen["overloaded"]["surfaced_error"] and not seen["overloaded"]["silent_truncation"]


def test_check_passes_a_careful_boto3_client(tmp_path: Path) -> None:
    """`check`, unchanged, runs its whole battery against boto3: a careful client passes all."""
    report = tmp_path / "report.json"
    args = ["check", "--seed", "3", "--json", str(report), "--"]
    result = CliRunner().invoke(cli, [*args, sys.executable, str(PROGRAM), "careful"])
    assert report.exists(), result.output
    data = json.loads(report.read_text())
    failed = [(s["name"], s["expectations"]) for s in data["scenarios"] if not s["passed"]]
    assert not failed and result.exit_code == 0, failed
    assert len(data["scenarios"]) >= 11
