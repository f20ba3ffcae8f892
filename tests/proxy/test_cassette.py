"""Recording cassettes through the real `chaosstream proxy` process: redaction, modes, HTTPS."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
import trustme
from aiohttp import web

from chaosstream.faults.profile import load_profile
from chaosstream.proxy.cassette import CassetteTap
from chaosstream.proxy.record import Recorder
from chaosstream.proxy.server import ChaosProxy
from chaosstream.streams.cassette import REDACTED, dump_cassette, load_cassette
from tests.cli.test_commands_process import CLI, ENV, served

SECRET = "sk-very-secret-4f1c9e"


class Upstream:
    """A small SSE model server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self) -> None:
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        resp.headers["Set-Cookie"] = f"session={SECRET}"
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f'data: {{"n":{i},"hit":{self.hits}}}\n\n'.encode())
            await asyncio.sleep(0.02)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


async def serve(upstream: Upstream, context: ssl.SSLContext | None = None) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    scheme = "https" if context else "http"
    upstream.url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    return runner


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    runner = await serve(up)
    yield up
    await runner.cleanup()


async def post(url: str, body: bytes = b'{"stream":true,"q":1}') -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/v1/chat/completions", data=body) as r,
    ):
        return r.status, await r.read()


def every_byte(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


async def test_secrets_never_reach_the_cassette(tmp_path: Path) -> None:
    """Keys (OpenAI, Anthropic), cookies, listed headers and JSON fields are redacted on disk."""
    tape = tmp_path / "tape"
    args = ["proxy", "--listen", "127.0.0.1:0", "--cassette", str(tape), "--log-format", "json"]
    args += ["--redact-header", "X-Tenant", "--redact-field", "user"]
    with served(args, tmp_path / "proxy.log") as proxy:
        url = await asyncio.to_thread(proxy.wait_url)
        oa = openai.AsyncOpenAI(
            base_url=url + "/v1",
            api_key=SECRET,
            default_headers={"X-Tenant": SECRET, "Cookie": f"c={SECRET}", "X-Goog-Api-Key": SECRET},
        )
        stream = await oa.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True, user=SECRET
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        an = anthropic.AsyncAnthropic(base_url=url, api_key=SECRET)
        msg = await an.messages.create(
            model="m", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        await oa.close()
        await an.close()
    written = every_byte(tape)
    assert text and msg.content
    assert SECRET.encode() not in written
    assert written.count(REDACTED.encode()) >= 6  # authorization, x-api-key, cookie, ...
    cassette = load_cassette(tape)
    assert [i.request.format for i in cassette.interactions] == ["openai", "anthropic"]
    headers = dict((k.lower(), v) for k, v in cassette.interactions[0].request.headers)
    assert headers["authorization"] == headers["x-tenant"] == REDACTED


async def test_record_modes_behave_as_in_vcrpy(tmp_path: Path, upstream: Upstream) -> None:
    """once records then replays; new_episodes adds only new requests; none never calls upstream;
    all re-records."""
    tape = tmp_path / "tape"

    async def session(mode: str, bodies: list[bytes]) -> list[tuple[int, bytes]]:
        args = ["proxy", "--upstream", upstream.url, "--listen", "127.0.0.1:0"]
        args += ["--cassette", str(tape), "--record-mode", mode, "--log-format", "json"]
        with served(args, tmp_path / f"{mode}.log") as proxy:
            url = await asyncio.to_thread(proxy.wait_url)
            return [await post(url, b) for b in bodies]

    first = await session("once", [b'{"q":1}'])
    assert upstream.hits == 1 and first[0][0] == 200
    again = await session("once", [b'{"q":1}', b'{"q":2}'])
    assert upstream.hits == 1  # replayed from the cassette
    assert again[0] == first[0]  # byte for byte
    assert again[1][0] == 404 and b"nearest is interaction 1" in again[1][1]
    await session("new_episodes", [b'{"q":1}', b'{"q":2}'])
    assert upstream.hits == 2  # only q=2 went upstream
    assert len(load_cassette(tape).interactions) == 2
    await session("none", [b'{"q":2}'])
    assert upstream.hits == 2
    await session("all", [b'{"q":3}'])
    assert upstream.hits == 3
    assert [i.request.body for i in load_cassette(tape).interactions] == ['{"q":3}']


def test_mode_none_without_a_cassette_is_bad_input(tmp_path: Path) -> None:
    """Replaying a cassette that does not exist exits 2 with one line naming it."""
    done = subprocess.run(
        [
            *CLI,
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--cassette",
            str(tmp_path / "no"),
            "--record-mode",
            "none",
        ],
        capture_output=True,
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"no cassette to replay" in done.stderr and b"Traceback" not in done.stderr


async def test_records_an_https_upstream_and_replays_it_byte_identical(tmp_path: Path) -> None:
    """A TLS upstream (trustme CA via --ca-file) is recorded; replay sends the same bytes."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    up = Upstream()
    runner = await serve(up, context)
    tape = tmp_path / "tape"
    try:
        args = ["proxy", "--upstream", up.url, "--ca-file", str(bundle), "--listen"]
        args += ["127.0.0.1:0", "--cassette", str(tape), "--log-format", "json"]
        with served(args, tmp_path / "rec.log") as proxy:
            url = await asyncio.to_thread(proxy.wait_url)
            recorded = await post(url)
    finally:
        await runner.cleanup()
    frames = load_cassette(tape).interactions[0].response.frames
    assert len(frames) == 6 and frames[-1].data == "data: [DONE]\n\n"
    assert frames[-1].t_ms >= frames[0].t_ms + 80  # five 20 ms gaps, measured
    args = ["proxy", "--upstream", f"cassette:{tape}", "--listen", "127.0.0.1:0"]
    with served([*args, "--log-format", "json"], tmp_path / "play.log") as proxy:
        url = await asyncio.to_thread(proxy.wait_url)
        assert await post(url) == recorded


async def _echoing(request: web.Request) -> web.StreamResponse:
    """An upstream that echoes the caller's `user` in its answer: SSE, or gzipped JSON."""
    body = await request.json()
    if not body.get("stream"):
        data = json.dumps({"id": "r1", "user": body["user"], "text": "whole"}).encode()
        return web.Response(
            body=gzip.compress(data),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(f'data: {{"id":"s1","user":"{body["user"]}"}}\n\n'.encode())
    await resp.write(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n')
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def test_named_fields_are_redacted_in_the_response_too(tmp_path: Path) -> None:
    """--redact-field hides an echoed secret in SSE frames and in a gzipped JSON body; every
    other frame is recorded and replayed byte for byte."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _echoing)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    tape = tmp_path / "tape"
    streamed = json.dumps({"stream": True, "user": SECRET}).encode()
    whole = json.dumps({"stream": False, "user": SECRET}).encode()
    try:
        args = ["proxy", "--upstream", f"http://127.0.0.1:{runner.addresses[0][1]}"]
        args += ["--listen", "127.0.0.1:0", "--cassette", str(tape), "--redact-field", "user"]
        with served([*args, "--log-format", "json"], tmp_path / "rec.log") as proxy:
            url = await asyncio.to_thread(proxy.wait_url)
            live = [await post(url, streamed), await post(url, whole)]
    finally:
        await runner.cleanup()
    assert SECRET.encode() in live[0][1] and SECRET.encode() in live[1][1]  # the client got it
    assert SECRET.encode() not in every_byte(tape)
    stream_frames, body_frames = (i.response for i in load_cassette(tape).interactions)
    assert [f.data for f in stream_frames.frames] == [
        'data: {"id":"s1","user":"REDACTED"}\n\n',
        'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n',
        "data: [DONE]\n\n",
    ]
    assert "content-encoding" not in {k.lower() for k, _ in body_frames.headers}
    args = ["proxy", "--upstream", f"cassette:{tape}", "--listen", "127.0.0.1:0"]
    args += ["--redact-field", "user"]
    with served([*args, "--log-format", "json"], tmp_path / "play.log") as proxy:
        url = await asyncio.to_thread(proxy.wait_url)
        replayed = [await post(url, streamed), await post(url, whole)]
    assert replayed[0] == (200, live[0][1].replace(SECRET.encode(), REDACTED.encode()))
    assert json.loads(replayed[1][1]) == {"id": "r1", "user": REDACTED, "text": "whole"}


async def _tapped(upstream: Upstream, tap: CassetteTap, recorder: Recorder) -> ChaosProxy:
    proxy = ChaosProxy(upstream.url, load_profile("clean"), recorder=recorder, cassette=tap)
    await proxy.start()
    return proxy


async def test_a_failing_cassette_write_loses_no_record(tmp_path: Path, upstream: Upstream) -> None:
    """A cassette that cannot be written (here its folder is a file; a full disk alike) is
    logged: the exchange is still finished and recorded, and what was not written goes in the
    next write that succeeds."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    tap, recorder = CassetteTap(blocked / "tape"), Recorder()
    proxy = await _tapped(upstream, tap, recorder)
    try:
        assert (await post(proxy.url))[0] == 200
        await tap.drain()
        assert len(recorder.exchanges) == 1 and not recorder.open and tap.recorded == 0
        blocked.unlink()  # room again
        assert (await post(proxy.url, b'{"stream":true,"q":2}'))[0] == 200
    finally:
        await proxy.close()  # writes what is queued
    assert len(recorder.exchanges) == 2 and tap.recorded == 2
    bodies = [i.request.body for i in load_cassette(blocked / "tape").interactions]
    assert bodies == ['{"stream":true,"q":1}', '{"stream":true,"q":2}']


async def test_cassette_writes_never_stall_the_event_loop(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Rewriting a large cassette (hundreds of ms of YAML) happens off the event loop: a timer
    on the loop keeps ticking while exchanges are recorded, and a burst of them is written
    together rather than one rewrite each."""
    tape = tmp_path / "tape"
    tap, recorder = CassetteTap(tape), Recorder()
    proxy = await _tapped(upstream, tap, recorder)
    try:
        assert (await post(proxy.url))[0] == 200
        await tap.drain()
        one = tap.cassette.interactions[0]
        tap.cassette.interactions *= 1000  # a long recording session's cassette
        started = time.perf_counter()
        dump_cassette(tap.cassette)
        dump_s = time.perf_counter() - started
        assert dump_s > 0.2  # else this test measures nothing
        lag = 0.0

        async def ticker() -> None:
            nonlocal lag
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                lag = max(lag, time.perf_counter() - before - 0.005)

        ticking = asyncio.ensure_future(ticker())
        try:
            await asyncio.gather(*(post(proxy.url, f'{{"q":{n}}}'.encode()) for n in range(8)))
            await tap.drain()
        finally:
            ticking.cancel()
        # Written on the loop, one gap would span a whole dump. In a thread the loop still
        # shares the GIL with pure-Python YAML, so its ticks slow down but keep coming: gaps
        # of 0.2-0.4 s whatever the cassette's size, also with other processes busy (the
        # suite runs on two workers), so the cassette is made big enough (1.2 s a dump) that
        # the two cannot be mistaken for each other.
        assert lag < dump_s * 0.8, (lag, dump_s)
        assert tap.recorded == 9
    finally:
        await proxy.close()
    interactions = load_cassette(tape).interactions
    assert len(interactions) == 1008 and interactions[0] == one
    assert sorted(i.request.body or "" for i in interactions[1000:]) == sorted(
        f'{{"q":{n}}}' for n in range(8)
    )
    assert tap.writes <= 1 + 3  # the first exchange's write, then the burst's few
