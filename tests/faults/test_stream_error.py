"""The stream_error fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import json

from chaosstream.faults.stream_error import StreamError
from chaosstream.streams.sse import EventDecoder
from chaosstream.testing import make_request, run_fault
from tests.faults._streams import STREAM


async def test_stream_error_openai() -> None:
    """After N events an OpenAI error chunk, then a clean close without [DONE]."""
    r = await run_fault(StreamError(after_events=4), STREAM)
    assert r.chunks_out[:4] == STREAM[:4]
    assert json.loads(r.chunks_out[4][6:])["error"]["type"] == "server_error"
    assert r.ended == "close"
    assert b"[DONE]" not in r.data


async def test_stream_error_anthropic_overloaded() -> None:
    """Anthropic streams get `event: error` with an overloaded_error."""
    req = make_request("/v1/messages")
    r = await run_fault(StreamError(after_events=1, kind="overloaded"), STREAM, request=req)
    events = EventDecoder().feed(r.data)
    assert events[-1].event == "error"
    assert json.loads(events[-1].data)["error"]["type"] == "overloaded_error"
