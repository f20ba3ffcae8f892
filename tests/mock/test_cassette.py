"""Replaying cassettes: SDKs get the recorded bytes and timing; unmatched is a clear 404."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anthropic
import ollama
import openai
import pytest

from chaosstream.faults.profile import load_profile
from chaosstream.mock import MockServer, MockSettings, start_mock
from chaosstream.mock.cassette import start_replay
from chaosstream.proxy.cassette import CassetteTap
from chaosstream.proxy.server import ChaosProxy
from chaosstream.streams.cassette import (
    Cassette,
    Frame,
    Interaction,
    Player,
    RecordedRequest,
    RecordedResponse,
    load_cassette,
)
from tests.cli.test_commands_process import CLI, ENV

SLOW = MockSettings(ttft_ms=30, tokens_per_s=100, tokens=12)
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(settings=SLOW) as server:
        yield server


async def sdk_texts(url: str) -> list[str]:
    """The streamed answer each official SDK shows, talking to ``url``."""
    oa = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    stream = await oa.chat.completions.create(model="m", messages=HI, stream=True)  # type: ignore[arg-type]
    texts = ["".join([c.choices[0].delta.content or "" async for c in stream if c.choices])]
    whole = await oa.chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
    texts.append(whole.choices[0].message.content or "")
    await oa.close()
    an = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
    async with an.messages.stream(model="m", max_tokens=9, messages=HI) as ms:  # type: ignore[arg-type]
        texts.append(await ms.get_final_text())
    await an.close()
    async with ollama.AsyncClient(host=url) as client:
        parts = [p.message.content or "" async for p in await client.chat("m", HI, stream=True)]
    texts.append("".join(parts))
    return texts


async def record(mock: MockServer, tape: Path) -> tuple[dict[str, bytes], list[str], Cassette]:
    """Raw requests and the three SDKs through a recording proxy: raw bytes and texts got."""
    proxy = ChaosProxy(mock.url, load_profile("clean"), cassette=CassetteTap(tape))
    url = await proxy.start()
    raw: dict[str, bytes] = {}
    try:
        async with aiohttp.ClientSession() as s:
            for name, path, body in REQUESTS:
                async with s.post(url + path, json=body) as r:
                    raw[name] = await r.read()
        texts = await sdk_texts(url)
    finally:
        await proxy.close()
    return raw, texts, load_cassette(tape)


REQUESTS = [
    ("openai", "/v1/chat/completions", {"model": "m", "messages": HI, "stream": True}),
    ("anthropic", "/v1/messages", {"model": "m", "max_tokens": 9, "messages": HI, "stream": True}),
    ("ollama", "/api/chat", {"model": "m", "messages": HI}),
]


async def test_sdks_replay_recorded_streams_byte_for_byte(mock: MockServer, tmp_path: Path) -> None:
    """openai, anthropic, ollama read the recording offline; raw bytes equal the recorded ones."""
    raw, texts, cassette = await record(mock, tmp_path / "tape")
    formats = [i.request.format for i in cassette.interactions]
    assert formats == ["openai", "anthropic", "ollama", "openai", "openai", "anthropic", "ollama"]
    assert all(texts) and texts[0] == texts[1]
    async with await start_replay(Player(cassette), speed=0) as replay:
        async with aiohttp.ClientSession() as s:
            for name, path, body in REQUESTS:
                async with s.post(replay.url + path, json=body) as r:
                    assert await r.read() == raw[name], name
        assert await sdk_texts(replay.url) == texts
        assert not replay.player.unmatched


async def test_replay_keeps_the_recorded_timing_and_speed_scales_it(
    mock: MockServer, tmp_path: Path
) -> None:
    """At speed 1 the last frame comes about when it was recorded; speed 0 sends at once."""
    _, _, cassette = await record(mock, tmp_path / "tape")
    recorded_end = cassette.interactions[0].response.frames[-1].t_ms / 1000
    assert recorded_end > 0.1  # 30 ms TTFT + 12 tokens at 100/s
    took = {}
    for speed in (1.0, 0.0):
        async with await start_replay(Player(cassette), speed=speed) as replay:
            _, path, body = REQUESTS[0]
            async with aiohttp.ClientSession() as s:
                start = time.monotonic()
                async with s.post(replay.url + path, json=body) as r:
                    await r.read()
                took[speed] = time.monotonic() - start
    assert took[1.0] >= recorded_end * 0.9
    assert took[0.0] < recorded_end


async def test_an_unmatched_request_is_a_404_in_the_providers_shape(tmp_path: Path) -> None:
    """The error names the nearest recording and the differing field, shaped for the SDK."""
    cassette = Cassette(
        interactions=[
            Interaction(
                request=RecordedRequest(
                    method="POST",
                    path="/v1/messages",
                    body='{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}',
                    format="anthropic",
                ),
                response=RecordedResponse(status=200, frames=[Frame.of(b"{}", 0)]),
            )
        ]
    )
    async with await start_replay(Player(cassette), speed=0) as replay:
        an = anthropic.AsyncAnthropic(base_url=replay.url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.NotFoundError) as info:
            await an.messages.create(
                model="m", max_tokens=9, messages=[{"role": "user", "content": "bye"}]
            )
        await an.close()
        assert replay.player.unmatched
    message = str(info.value)
    assert "nearest is interaction 1 (POST /v1/messages)" in message
    assert 'messages[0].content: recorded "hi" != request "bye"' in message


async def test_a_recording_cut_by_upstream_is_cut_again(tmp_path: Path) -> None:
    """An interaction recorded as incomplete ends the replayed body the same broken way."""
    cassette = Cassette(
        interactions=[
            Interaction(
                request=RecordedRequest(method="GET", path="/sse"),
                response=RecordedResponse(
                    status=200,
                    headers=[("Content-Type", "text/event-stream")],
                    frames=[Frame.of(b"data: 1\n\n", 0)],
                    complete=False,
                ),
            )
        ]
    )
    async with (
        await start_replay(Player(cassette), speed=0) as replay,
        aiohttp.ClientSession() as s,
        s.get(replay.url + "/sse") as r,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


def save_ping_cassette(folder: Path) -> None:
    """A cassette of one exchange, GET /ping answered 200 ``pong``, saved in ``folder``."""
    from chaosstream.streams.cassette import save_cassette

    cassette = Cassette(
        interactions=[
            Interaction(
                request=RecordedRequest(method="GET", path="/ping"),
                response=RecordedResponse(status=200, frames=[Frame.of(b"pong", 0)]),
            )
        ]
    )
    save_cassette(cassette, folder)


def test_mock_strict_exits_1_when_a_request_had_no_match(tmp_path: Path) -> None:
    """`chaosstream mock --cassette DIR --strict`: an unmatched request fails the run at exit."""
    save_ping_cassette(tmp_path)
    codes = []
    for path in ("/ping", "/nope"):
        proc = subprocess.Popen(
            [*CLI, "mock", "--port", "0", "--cassette", str(tmp_path), "--strict"],
            stderr=subprocess.PIPE,
            env=ENV,
        )
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        url = line.rsplit(" ", 1)[-1].strip()
        assert "listening on" in line

        async def get(url: str = url, path: str = path) -> int:
            async with aiohttp.ClientSession() as s, s.get(url + path) as r:
                return r.status

        status = asyncio.run(get())
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1].decode()
        codes.append((status, proc.returncode))
        if path == "/nope":
            assert "--strict: 1 request(s) matched no recording" in err
    assert codes == [(200, 0), (404, 1)]


def test_mock_replaying_stops_on_sigint_inherited_ignored(tmp_path: Path) -> None:
    """`chaosstream mock --cassette DIR &` from a script starts with SIGINT ignored (POSIX);
    `kill -INT` still stops it cleanly, exit 0."""
    save_ping_cassette(tmp_path)
    proc = subprocess.Popen(
        [*CLI, "mock", "--port", "0", "--cassette", str(tmp_path)],
        stderr=subprocess.PIPE,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert "listening on" in line, line
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=30)[1].decode()
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
