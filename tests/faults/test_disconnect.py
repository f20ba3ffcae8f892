"""The disconnect fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator

import pytest

from chaosstream.faults.base import Chunk, FaultContext, FaultEvent, StreamEnd, SystemClock
from chaosstream.faults.disconnect import Disconnect
from chaosstream.testing import make_request, run_fault
from tests.faults._streams import STREAM, WHOLE


@pytest.mark.parametrize("mode", ["reset", "close", "stall"])
async def test_disconnect_after_events(mode: str) -> None:
    """After N data events the stream ends the configured way; keep-alives do not count."""
    chunks = [STREAM[0], b": keep-alive\n\n", *STREAM[1:]]
    r = await run_fault(Disconnect(after_events=3, mode=mode), chunks)  # type: ignore[arg-type]
    assert r.ended == mode
    assert r.chunks_out == chunks[:4]
    assert (r.log[0].action, r.log[0].events) == (mode, 3)


async def test_disconnect_after_bytes_cuts_mid_event() -> None:
    """after_bytes delivers exactly that many bytes."""
    r = await run_fault(Disconnect(after_bytes=100), STREAM)
    assert r.data == WHOLE[:100]
    assert r.ended == "reset"


async def test_disconnect_after_ms_hits_silent_stream() -> None:
    """after_ms cuts on time even while upstream sends nothing."""
    r = await run_fault(Disconnect(after_ms=500, mode="close"), [STREAM[0], (5.0, STREAM[1])])
    assert r.ended == "close"
    assert r.elapsed_s == pytest.approx(0.5)
    assert r.chunks_out == [STREAM[0]]


async def test_disconnect_split_event_tears_utf8() -> None:
    """split_event delivers half of the next event, cut inside a multi-byte character."""
    chunks = [b"data: a\n\n", "data: caf\u00e9 \u00fc\n\n".encode()]
    r = await run_fault(Disconnect(after_events=1, split_event=True), chunks)
    torn = r.chunks_out[-1]
    assert chunks[1].startswith(torn)
    with pytest.raises(UnicodeDecodeError):
        torn.decode("utf-8")


async def test_disconnect_stream_ends_first_nothing_fires() -> None:
    """If the stream ends before the cut point, the fault does not fire."""
    r = await run_fault(Disconnect(after_events=50), STREAM)
    assert (r.ended, r.log, r.data) == (None, [], WHOLE)


async def test_websocket_messages_are_events() -> None:
    """On a WebSocket, disconnect after_events counts messages."""
    msgs = [json.dumps({"type": "token", "index": i}).encode() for i in range(5)]
    req = make_request("/ws", websocket=True)
    r = await run_fault(Disconnect(after_events=2), msgs, request=req)
    assert r.chunks_out == msgs[:2]


NDJSON = [
    *(b'{"message":{"role":"assistant","content":"t%d "},"done":false}\n' % i for i in range(5)),
    b'{"message":{"role":"assistant","content":""},"done":true}\n',
]
"""An Ollama /api/chat stream: one JSON object per line."""


def _beats_then_cut(stall: Disconnect, before: bytes, beat: bytes, n: int) -> list[Disconnect]:
    """The keep-alive stall followed by a byte cut after ``n`` keep-alives: a bounded run."""
    return [stall, Disconnect(after_bytes=len(before) + n * len(beat), mode="reset")]


@pytest.mark.parametrize(
    ("path", "kind", "beat"),
    [
        ("/v1/chat/completions", "auto", b": keepalive\n\n"),
        ("/v1/messages", "auto", b'event: ping\ndata: {"type": "ping"}\n\n'),
        ("/api/chat", "auto", b"\n"),
        ("/v1/messages", "comment", b": keepalive\n\n"),
        ("/v1/chat/completions", "ping", b'event: ping\ndata: {"type": "ping"}\n\n'),
    ],
)
async def test_keepalive_stall_breathes_in_the_format(path: str, kind: str, beat: bytes) -> None:
    """A keep-alive stall sends the format's keep-alive every keepalive_every_ms, no content."""
    stall = Disconnect(after_events=3, mode="stall", keepalive_every_ms=250, keepalive=kind)  # type: ignore[arg-type]
    stream = NDJSON if path == "/api/chat" else STREAM
    before = b"".join(stream[:3])
    chain = _beats_then_cut(stall, before, beat, 4)
    r = await run_fault(chain, stream, request=make_request(path))
    assert r.chunks_out[:3] == stream[:3]
    assert r.chunks_out[3:] == [beat] * 4
    assert r.times[3:] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    first = r.log[0]
    assert (first.action, first.events, first.bytes) == ("stall_keepalive", 3, len(before))


async def test_keepalive_stall_needs_stall_mode() -> None:
    """keepalive_every_ms on a reset or close is refused at load."""
    with pytest.raises(ValueError, match="keepalive_every_ms needs mode: stall"):
        Disconnect(after_events=1, mode="reset", keepalive_every_ms=100)


async def test_keepalive_stall_is_not_prompt() -> None:
    """A keep-alive stall writes on a timer, so the proxy must not batch its output."""
    assert Disconnect(after_events=1, mode="stall").prompt
    assert not Disconnect(after_events=1, mode="stall", keepalive_every_ms=100).prompt


async def test_keepalive_stall_with_the_openai_sdk_defeats_the_read_timeout() -> None:
    """A silent stall trips the SDK's read timeout; the keep-alive stall does not: it hangs."""
    import asyncio

    import openai

    from tests.test_fault_e2e import CHAT, chaos

    async def ask(url: str) -> str:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", timeout=0.5, max_retries=0)
        got = []
        stream = await client.chat.completions.create(**CHAT)
        async for part in stream:
            got.append(part.choices[0].delta.content or "" if part.choices else "")
        await client.close()
        return "".join(got)

    silent = {"type": "disconnect", "after_events": 3, "mode": "stall"}
    async with chaos([silent]) as (_p, url, _m):
        with pytest.raises(openai.APITimeoutError):
            await asyncio.wait_for(ask(url), 5.0)
    breathing = {**silent, "keepalive_every_ms": 100}
    async with chaos([breathing]) as (proxy, url, _m):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ask(url), 1.5)  # 3 x the read timeout: still waiting
    assert [e.action for e in proxy.fault_log] == ["stall_keepalive"]


async def test_keepalive_stall_with_the_anthropic_sdk_pings() -> None:
    """The Anthropic SDK skips ping events, so an `auto` keep-alive stall hangs it too."""
    import asyncio

    import anthropic

    from tests.test_fault_e2e import chaos

    got: list[str] = []

    async def ask(url: str) -> None:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k", timeout=0.5, max_retries=0)
        async with client.messages.stream(
            model="m", max_tokens=50, messages=[{"role": "user", "content": "tell me"}]
        ) as stream:
            async for text in stream.text_stream:
                got.append(text)

    fault = {"type": "disconnect", "after_tokens": 2, "mode": "stall", "keepalive_every_ms": 100}
    async with chaos([fault]) as (proxy, url, _m):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ask(url), 1.5)  # 3 x the read timeout
    assert len(got) == 2
    assert "event: ping" in proxy.fault_log[0].detail


@pytest.mark.parametrize(
    ("fault", "events", "nbytes"),
    [
        (Disconnect(after_events=3), 4, None),
        (Disconnect(after_bytes=100), None, 100),
        (Disconnect(after_tokens=3), None, None),
        (Disconnect(after_ms=50), None, None),
    ],
)
def test_horizon_is_the_cut_point(
    fault: Disconnect, events: int | None, nbytes: int | None
) -> None:
    """The horizon is the event or byte the cut comes at; tokens and time give none."""
    horizon = fault.horizon(_ctx([]))
    if events is None and nbytes is None:
        assert horizon is None
    else:
        assert horizon is not None and (horizon.events, horizon.nbytes) == (events, nbytes)


@pytest.mark.parametrize("passed", [0, 1, 3])
async def test_apply_counts_on_from_what_the_proxy_passed(passed: int) -> None:
    """Started mid-stream, apply counts the events and bytes the proxy passed before it."""
    fault = Disconnect(after_events=3, mode="close")
    log: list[FaultEvent] = []
    ctx = _ctx(log)
    ctx.framed = True
    ctx.passed_events, ctx.passed_bytes = passed, 1000

    async def rest() -> AsyncIterator[Chunk]:
        for data in STREAM[passed:]:
            yield Chunk(data, 0.0)

    out: list[bytes] = []
    with pytest.raises(StreamEnd):
        async for chunk in fault.apply(rest(), ctx):
            out.append(chunk.data)
    assert out == STREAM[passed:3]
    event = log[-1]
    assert (event.action, event.events, event.bytes) == ("close", 3, 1000 + len(b"".join(out)))


def _ctx(log: list[FaultEvent]) -> FaultContext:
    return FaultContext(
        exchange=1,
        request=make_request(),
        rng=random.Random(0),
        clock=SystemClock(),
        started=0.0,
        index=0,
        type="disconnect",
        log=log.append,
    )
