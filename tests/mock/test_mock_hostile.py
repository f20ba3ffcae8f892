"""The embedded mock under hostile clients: bounded memory, timeouts, clear 400s (issue 10)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from chaosstream.mock import MockLimits, MockServer, MockSettings, start_mock
from chaosstream.mock._stats import RECORDED_BODY_BYTES, REQUEST_HISTORY_BYTES

FAST = MockSettings(ttft_ms=0, tokens_per_s=0, tokens=12)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
MiB = 1024 * 1024


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(settings=FAST) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# --- item 3: request history bounded by bytes ---------------------------------------------


async def test_request_history_is_bounded_by_a_byte_budget(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """Forty 1.5 MiB bodies keep at most the history budget; the newest stays, cut at the cap."""
    sizes = []
    for i in range(40):
        payload = bytes([i]) * (3 * MiB // 2)
        async with http.post(mock.url + "/echo", data=io.BytesIO(payload)) as resp:
            assert resp.status == 200
            await resp.read()
        sizes.append(len(payload))
    history = mock.stats.history
    assert history.bytes <= REQUEST_HISTORY_BYTES
    assert sum(len(r.body) for r in mock.requests) <= REQUEST_HISTORY_BYTES
    newest = mock.requests[-1]
    assert newest.body == bytes([39]) * RECORDED_BODY_BYTES
    assert newest.body_size == sizes[-1]
    assert len(mock.requests) < 40


async def test_small_requests_still_keep_a_thousand(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """The count cap still holds for small requests: the last 1000 are kept, whole."""
    for i in range(1010):
        async with http.post(mock.url + "/echo", data=str(i).encode()) as resp:
            await resp.read()
    requests = mock.requests
    assert len(requests) == 1000
    assert requests[-1].body == b"1009" and requests[-1].body_size == 4
    assert requests[0].body == b"10"


# --- item 9: deeply nested JSON -----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"messages": ' + b"[" * 900 + b"]" * 900 + b"}"],
    ids=["unclosed-100k", "closed-900"],
)
async def test_deeply_nested_json_is_a_400_in_the_provider_shape(
    mock: MockServer, http: aiohttp.ClientSession, body: bytes
) -> None:
    """A body nested past the depth cap gets a 400 in OpenAI's or Anthropic's error shape."""
    headers = {"Content-Type": "application/json"}
    async with http.post(mock.url + "/v1/chat/completions", data=body, headers=headers) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["type"] == "invalid_request_error" and "nested" in error["message"]
    async with http.post(mock.url + "/v1/messages", data=body, headers=headers) as resp:
        assert resp.status == 400
        payload = await resp.json()
        assert payload["type"] == "error" and "nested" in payload["error"]["message"]
    async with http.get(mock.url + "/healthz") as resp:
        assert resp.status == 200


async def test_deeply_nested_websocket_message_gets_an_error_message(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """A nested-too-deep /ws message is answered with an error and the socket keeps working."""
    async with http.ws_connect(mock.url + "/ws") as ws:
        await ws.send_str("[" * 100_000)
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error" and "nested" in reply["message"]
        await ws.send_json({"prompt": "hi", "tokens": 2})
        kinds = [(await ws.receive_json(timeout=5))["type"] for _ in range(3)]
        assert kinds == ["token", "token", "done"]


# --- item 14: every mock setting and header in a sane, finite range ----------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("tokens_per_s", 1e-320),
        ("tokens_per_s", 0.001),
        ("tokens_per_s", 1e12),
        ("tokens_per_s", -1.0),
        ("tokens_per_s", math.nan),
        ("ttft_ms", 1e300),
        ("ttft_ms", math.inf),
        ("ttft_ms", -5.0),
        ("tokens", 10**9),
        ("tokens", -1),
    ],
)
def test_mock_settings_refuse_values_out_of_range(field: str, value: float) -> None:
    """MockSettings names the field and its range for an out-of-range value."""
    with pytest.raises(ValueError, match=field):
        MockSettings(**{field: value})  # type: ignore[arg-type]


def test_mock_settings_accept_the_documented_range() -> None:
    """The edges of each documented range are accepted, and 0 or inf mean unpaced."""
    for tokens_per_s in (0.0, math.inf, 0.01, 1_000_000.0):
        MockSettings(tokens_per_s=tokens_per_s)
    MockSettings(ttft_ms=0, tokens=0)
    MockSettings(ttft_ms=600_000, tokens=100_000)
    assert MockSettings(tokens_per_s=math.inf).interval_s == 0.0


async def _read_all_sse(http: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    start = time.monotonic()
    async with http.get(url) as resp:
        body = await resp.read()
    return body.count(b"\n\n"), time.monotonic() - start


@pytest.mark.parametrize(
    "header, value",
    [
        ("x-chaosstream-mock-tokens-per-s", "1e-320"),
        ("x-chaosstream-mock-tokens-per-s", "5e-324"),
        ("x-chaosstream-mock-tokens-per-s", "nan"),
        ("x-chaosstream-mock-ttft-ms", "1e308"),
        ("x-chaosstream-mock-ttft-ms", "inf"),
        ("x-chaosstream-mock-tokens", "9" * 5000),
    ],
    ids=["tps-1e-320", "tps-denormal", "tps-nan", "ttft-1e308", "ttft-inf", "tokens-5000-digits"],
)
async def test_bad_pacing_header_is_a_400_and_other_streams_keep_flowing(
    http: aiohttp.ClientSession, header: str, value: str
) -> None:
    """A bad pacing header gets a 400 on every route while another paced stream completes."""
    paced = MockSettings(ttft_ms=0, tokens_per_s=50, tokens=20)
    async with await start_mock(settings=paced) as server:
        other = asyncio.create_task(_read_all_sse(http, server.url + "/sse?prompt=other"))
        await asyncio.sleep(0.05)
        headers = {header: value}
        for path in ("/v1/chat/completions", "/v1/messages"):
            body = {**CHAT, "stream": True}
            async with http.post(server.url + path, json=body, headers=headers) as resp:
                assert resp.status == 400, path
                text = await resp.text()
                assert len(text) < 400, text[:100]
        async with http.get(server.url + "/sse", headers=headers) as resp:
            assert resp.status == 400
        async with http.get(server.url + "/ws", headers=headers) as resp:
            assert resp.status == 400
        events, elapsed = await asyncio.wait_for(other, 10)
        assert events == 21
        assert elapsed < 5.0


async def test_bad_pacing_in_a_websocket_message_is_refused(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """A /ws prompt with tokens_per_s 1e-320 gets an error message, not a NaN timer."""
    async with http.ws_connect(mock.url + "/ws") as ws:
        await ws.send_json({"prompt": "hi", "tokens_per_s": 1e-320})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error" and "tokens_per_s" in reply["message"]


# --- item 15: /ws message size and queue ----------------------------------------------------


async def test_websocket_message_over_the_cap_is_closed_with_1009(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """A /ws message over the size cap closes the socket with 1009 (message too big)."""
    limit = MockLimits().ws_max_msg_bytes
    async with http.ws_connect(mock.url + "/ws") as ws:
        await ws.send_str(json.dumps({"prompt": "x" * (limit + 10)}))
        msg = await ws.receive(timeout=5)
        assert msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        )
        assert ws.close_code == 1009


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _start_mock_process() -> tuple[asyncio.subprocess.Process, str]:
    code = (
        "from chaosstream.mock import run_mock, MockSettings;"
        "run_mock(settings=MockSettings(ttft_ms=0, tokens_per_s=1, tokens=1000),"
        " on_ready=lambda u: print(u, flush=True))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    return proc, url


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_websocket_queue_pushes_back_instead_of_growing() -> None:
    """300 prompts of 512 KiB on one socket: the mock stops reading, its RSS stays flat."""
    proc, url = await _start_mock_process()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/healthz") as resp:
                assert resp.status == 200
            before = _rss_kib(proc.pid)
            ws = await session.ws_connect(url + "/ws")
            prompt = json.dumps({"prompt": "p" * (512 * 1024)})

            async def flood() -> int:
                sent = 0
                for _ in range(300):
                    await ws.send_str(prompt)
                    sent += 1
                return sent

            task = asyncio.create_task(flood())
            done, _ = await asyncio.wait([task], timeout=4)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await asyncio.sleep(0.5)
            grown_mib = (_rss_kib(proc.pid) - before) / 1024
            assert not done, "all 300 prompts were read: the mock did not push back"
            assert grown_mib < 64, grown_mib
            # Drop the socket: a close handshake would wait behind the unread prompts.
            ws.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


# --- item 4: head and idle timeouts -------------------------------------------------------

QUICK = MockLimits(head_timeout_s=0.5, idle_timeout_s=1.5)


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> float:
    start = time.monotonic()
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), timeout_s)
        if not chunk:
            return time.monotonic() - start


async def test_slowloris_head_is_cut_after_the_head_timeout() -> None:
    """A request head dripped one byte at a time is closed near head_timeout_s."""
    async with await start_mock(settings=FAST, limits=QUICK) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        start = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = asyncio.create_task(_closed_within(reader, 10))
        with contextlib.suppress(ConnectionError):
            for _ in range(40):
                if closed.done():
                    break
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)
        await closed
        assert 0.4 <= time.monotonic() - start < 3.0
        writer.close()


async def test_silent_connection_is_cut_after_the_head_timeout() -> None:
    """A connection that never sends a byte is closed near head_timeout_s."""
    async with await start_mock(settings=FAST, limits=QUICK) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        elapsed = await _closed_within(reader, 10)
        assert 0.4 <= elapsed < 3.0
        writer.close()


async def test_idle_keep_alive_is_closed_after_the_idle_timeout() -> None:
    """A kept-alive connection lives past head_timeout_s and is closed near idle_timeout_s."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    async with await start_mock(settings=FAST, limits=QUICK) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(request)
        assert (await asyncio.wait_for(reader.readuntil(b'{"ok": true}'), 5)).startswith(
            b"HTTP/1.1 200"
        )
        await asyncio.sleep(0.8)  # past the head timeout, inside the idle timeout
        writer.write(request)
        await asyncio.wait_for(reader.readuntil(b'{"ok": true}'), 5)
        start = time.monotonic()
        await _closed_within(reader, 10)
        assert 1.2 <= time.monotonic() - start < 4.0
        writer.close()


async def test_a_slow_stream_outlives_both_timeouts(http: aiohttp.ClientSession) -> None:
    """A paced answer longer than both timeouts is not cut: they bound waiting, not answering."""
    slow = MockSettings(ttft_ms=0, tokens_per_s=10, tokens=25)
    async with (
        await start_mock(settings=slow, limits=QUICK) as server,
        http.get(server.url + "/sse?prompt=slow") as resp,
    ):
        body = await resp.read()
    assert body.count(b"\n\n") == 26 and body.endswith(b"data: [DONE]\n\n")


def test_limits_come_from_the_environment() -> None:
    """CHAOSSTREAM_MOCK_* variables set the limits; a bad one names the variable."""
    env = {"CHAOSSTREAM_MOCK_HEAD_TIMEOUT_S": "2.5", "CHAOSSTREAM_MOCK_WS_QUEUE": "3"}
    limits = MockLimits.from_env(env)
    assert (limits.head_timeout_s, limits.ws_queue) == (2.5, 3)
    assert limits.idle_timeout_s == MockLimits().idle_timeout_s
    with pytest.raises(ValueError, match="CHAOSSTREAM_MOCK_IDLE_TIMEOUT_S"):
        MockLimits.from_env({"CHAOSSTREAM_MOCK_IDLE_TIMEOUT_S": "nan"})


# --- the mock survives clients that reset -------------------------------------------------


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_cli_mock_survives_clients_that_reset_mid_stream() -> None:
    """`chaosstream mock` serves on after 300 streams whose clients reset or close mid-answer."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chaosstream",
        "mock",
        "--port",
        "0",
        "--ttft-ms",
        "0",
        "--tokens-per-s",
        "5000",
        "--tokens",
        "20000",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        url = line.rsplit(" ", 1)[-1].strip()
        host, port = url.removeprefix("http://").rsplit(":", 1)
        body = json.dumps({**CHAT, "stream": True}).encode()
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 60
        for i in range(300):
            assert time.monotonic() < deadline
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            await asyncio.wait_for(reader.readexactly(4096), 10)
            if i % 2:
                _reset(writer.get_extra_info("socket").dup())
                writer.transport.abort()
            else:
                writer.close()  # a FIN: the mock's next writes meet a closed peer
        assert proc.returncode is None
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as resp:
            assert resp.status == 200
        assert proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


@pytest.mark.parametrize(
    "args, env, needle",
    [
        (["--tokens-per-s", "1e-320"], {}, "tokens_per_s"),
        (["--ttft-ms", "1e308"], {}, "ttft_ms"),
        ([], {"CHAOSSTREAM_MOCK_HEAD_TIMEOUT_S": "nan"}, "CHAOSSTREAM_MOCK_HEAD_TIMEOUT_S"),
    ],
    ids=["tokens-per-s", "ttft-ms", "env-head-timeout"],
)
async def test_cli_mock_refuses_out_of_range_settings_with_exit_2(
    args: list[str], env: dict[str, str], needle: str
) -> None:
    """`chaosstream mock` with a setting out of range exits 2 with one line naming it."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "chaosstream", "mock", "--port", "0", *args],
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, err.decode()[-300:]
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in lines[0]


@pytest.mark.parametrize("flag", ["--head-timeout-s", "--idle-timeout-s"])
def test_cli_mock_timeout_flags_refuse_nonsense_with_exit_2(flag: str) -> None:
    """`chaosstream mock` names a bad timeout flag in one line and exits 2."""
    done = subprocess.run(
        [sys.executable, "-m", "chaosstream", "mock", "--port", "0", flag, "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert flag in done.stderr and "Traceback" not in done.stderr


def test_cli_mock_head_timeout_flag_cuts_a_silent_connection() -> None:
    """`chaosstream mock --head-timeout-s 0.5` closes a connection that never sends a head."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaosstream", "mock", "--port", "0", "--head-timeout-s", "0.5"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started = time.monotonic()
            assert sock.recv(1) == b""  # closed by the mock, not by our 10 s timeout
            assert time.monotonic() - started < 8
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stderr is not None:
            proc.stderr.close()
