"""The gzip fault: in memory with a fake clock, then through the proxy with httpx and the
openai SDK (which ask for gzip and decompress it themselves)."""

from __future__ import annotations

import asyncio
import random
import zlib

import httpx
import pytest

from chaosstream.faults.compress import Gzip
from chaosstream.mock import MockSettings
from chaosstream.testing import make_request, run_fault
from tests.faults._streams import openai_stream, timed

GZIP = make_request(headers={"Accept-Encoding": "gzip, deflate"})


def _gunzip(data: bytes) -> bytes:
    return zlib.decompress(data, 31)


async def test_gzip_holds_everything_of_a_short_answer_to_the_end() -> None:
    """A short stream compresses below one buffer: one gzip member leaves at the end."""
    stream = openai_stream(30)
    r = await run_fault(Gzip(), timed(stream, 0.1), request=GZIP)
    assert _gunzip(r.data) == b"".join(stream)
    assert r.times == pytest.approx([0.1 * (len(stream) - 1)])
    assert (r.log[0].action, r.log[0].detail) == ("gzip", "level 1, 4096 B buffers")


async def test_gzip_sends_full_buffers_only() -> None:
    """A long stream leaves in whole buffer_bytes pieces, then the rest with the trailer."""
    rng = random.Random(1)  # varied text: a repeated token would compress to nothing
    stream = [
        b'data: {"choices":[{"index":0,"delta":{"content":"%08x "}}]}\n\n' % rng.getrandbits(32)
        for _ in range(3000)
    ]
    r = await run_fault(Gzip(buffer_bytes=1024, level=6), timed(stream, 0.001), request=GZIP)
    assert _gunzip(r.data) == b"".join(stream)
    assert len(r.chunks_out) >= 2  # zlib emits a deflate block at a time, then buffers fill
    assert all(len(c) % 1024 == 0 for c in r.chunks_out[:-1])
    assert r.times == sorted(r.times) and r.times[0] > 0.1  # nothing early


@pytest.mark.parametrize("accept", ["", "identity", "gzip;q=0", "br"])
async def test_gzip_only_when_the_client_accepts_it(accept: str) -> None:
    """Without gzip in Accept-Encoding the stream passes as it came and nothing fires."""
    stream = openai_stream(5)
    req = make_request(headers={"Accept-Encoding": accept} if accept else None)
    r = await run_fault(Gzip(), stream, request=req)
    assert (r.chunks_out, r.log) == (stream, [])


async def test_gzip_through_the_proxy_arrives_at_the_end() -> None:
    """httpx sees Content-Encoding gzip and no Content-Length; a paced answer's first
    token reaches the openai SDK only when the whole stream has been sent."""
    import openai

    from tests.test_fault_e2e import CHAT, chaos

    paced = MockSettings(ttft_ms=5, tokens_per_s=40, tokens=30)  # about 0.75 s of tokens
    async with chaos([{"type": "gzip"}], settings=paced) as (proxy, url, _m):
        async with httpx.AsyncClient() as h:
            r = await h.post(f"{url}/v1/chat/completions", json=CHAT)
            assert r.headers["content-encoding"] == "gzip" and "content-length" not in r.headers
            assert r.headers["vary"] == "Accept-Encoding" and r.text.endswith("data: [DONE]\n\n")
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        arrivals = []
        async for part in await client.chat.completions.create(**CHAT):
            if part.choices and part.choices[0].delta.content:
                arrivals.append(loop.time() - start)
        await client.close()
        assert [e.type for e in proxy.fault_log] == ["gzip", "gzip"]
    assert len(arrivals) == 30
    assert arrivals[0] > 0.6 and arrivals[-1] - arrivals[0] < 0.1  # nothing, then everything
