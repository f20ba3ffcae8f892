"""The polite_close fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chaosstream.faults.polite_close import PoliteClose
from chaosstream.streams.mcp import sse_message
from chaosstream.streams.sse import EventDecoder
from chaosstream.testing import make_request, run_fault
from tests.faults._streams import STREAM

MCP_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t"}}
RESULT = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "a b"}]}}
MCP_STREAM = [
    b"id: 1-0\ndata: \n\n",
    sse_message({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}, "1-1"),
    sse_message(RESULT, "1-2"),
]


async def test_closes_after_n_events_with_a_retry_field() -> None:
    """After N events a `retry:` block (it dispatches nothing), then a clean close."""
    r = await run_fault(PoliteClose(after_events=3, retry_ms=250), STREAM)
    assert r.chunks_out[:3] == STREAM[:3]
    assert r.chunks_out[3] == b"retry: 250\n\n" and len(r.chunks_out) == 4
    assert r.ended == "close"
    assert r.log[0].action == "close" and r.log[0].events == 3
    decoder = EventDecoder()
    assert len(decoder.feed(r.data)) == 3  # the retry block is no event


async def test_before_terminal_cuts_just_before_the_jsonrpc_response() -> None:
    """`before_terminal` delivers every progress event and withholds the MCP result."""
    req = make_request("/mcp", body=MCP_CALL)
    r = await run_fault(PoliteClose(before_terminal=True, retry_ms=None), MCP_STREAM, request=req)
    assert r.chunks_out == MCP_STREAM[:2] and r.ended == "close"
    assert r.log[0].detail == "retry None ms"


async def test_a_stream_that_ends_first_is_untouched() -> None:
    """If the stream ends before the position, nothing fires."""
    r = await run_fault(PoliteClose(after_events=100), STREAM)
    assert r.chunks_out == STREAM and r.ended is None and not r.log


async def test_no_retry_field_on_a_websocket() -> None:
    """A WebSocket message stream is only cut: `retry` means something to SSE alone."""
    req = make_request("/ws", websocket=True)
    r = await run_fault(PoliteClose(after_events=1), [b'{"a":1}', b'{"a":2}'], request=req)
    assert r.chunks_out == [b'{"a":1}'] and r.ended == "close"


def test_exactly_one_position() -> None:
    """after_events and before_terminal exclude each other, and one is needed."""
    with pytest.raises(ValidationError, match="exactly one"):
        PoliteClose()
    with pytest.raises(ValidationError, match="exactly one"):
        PoliteClose(after_events=1, before_terminal=True)
