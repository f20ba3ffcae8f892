"""The chaos_cassette marker end to end: a test records once, then replays with no upstream."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosstream.streams.cassette import load_cassette

pytest_plugins = ["pytester"]

INI = """\
[pytest]
addopts = --strict-markers -p no:cacheprovider
filterwarnings = error
"""

# The upstream is a port the test's conftest fills in: an aiohttp SSE server in a thread
# that counts its requests in a file, so a replay that reached it would show.
INNER = """
import openai
import pytest


@pytest.mark.chaos_cassette(upstream=UPSTREAM)
def test_answer(chaos_cassette):
    client = openai.OpenAI(base_url=chaos_cassette.openai_base_url, api_key=KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    client.close()
    assert text == "Hello world"


@pytest.mark.chaos_cassette(upstream=UPSTREAM)
@pytest.mark.chaos_profile("midstream-reset")
def test_cut_replayed(chaos_proxy, chaos_cassette):
    proxy = chaos_proxy()
    client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.APIError):
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        for _ in stream:
            pass
    client.close()
    assert [f.type for f in proxy.fault_log] == ["disconnect"]
"""

UPSTREAM_SERVER = """
import asyncio, threading
from aiohttp import web

HITS = []

async def chat(request):
    HITS.append(1)
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i, word in enumerate(["Hello", " world"] * 1 + [""] * 20):
        delta = {"content": word} if word else {}
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        await resp.write(("data: " + __import__("json").dumps(chunk) + "\\n\\n").encode())
    await resp.write(b"data: [DONE]\\n\\n")
    return resp

def serve():
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}"
"""

CONFTEST = """
import builtins
import upstream_server

builtins.UPSTREAM = upstream_server.serve()
builtins.KEY = "sk-never-on-disk-31337"


def pytest_sessionfinish(session):
    with open("hits.txt", "w") as f:
        f.write(str(len(upstream_server.HITS)))
"""


@pytest.fixture
def tester(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makepyfile(upstream_server=UPSTREAM_SERVER, conftest=CONFTEST, test_inner=INNER)
    return pytester


def test_a_marked_test_records_once_and_replays_offline(tester: pytest.Pytester) -> None:
    """--chaos-record-mode once records (key redacted); the default mode replays, upstream
    untouched, with faults from chaos_proxy acting on the recorded stream."""
    recorded = tester.runpytest_subprocess("--chaos-record-mode", "once")
    recorded.assert_outcomes(passed=2)
    assert (tester.path / "hits.txt").read_text() == "2"
    folder = Path(tester.path) / "cassettes" / "test_inner"
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["test_answer.yaml", "test_cut_replayed_midstream-reset_.yaml"]
    assert all(b"sk-never-on-disk" not in p.read_bytes() for p in folder.iterdir())
    assert len(load_cassette(folder / "test_answer.yaml").interactions) == 1
    replayed = tester.runpytest_subprocess()
    replayed.assert_outcomes(passed=2)
    assert (tester.path / "hits.txt").read_text() == "0"


def test_replay_without_a_cassette_fails_saying_how_to_record(tester: pytest.Pytester) -> None:
    """In the default mode a missing cassette errors the test, naming the flag that records it."""
    result = tester.runpytest_subprocess("-k", "test_answer")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no cassette to replay*--chaos-record-mode once*"])
