"""The disconnect fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import json

import pytest

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
