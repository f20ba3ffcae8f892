"""The corrupt fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from chaosstream.faults.corrupt import Corrupt
from chaosstream.testing import make_request, run_fault
from tests.faults._streams import STREAM, WHOLE


async def test_corrupt_malformed_json() -> None:
    """malformed_json breaks the JSON of exactly one event and keeps its framing."""
    r = await run_fault(Corrupt(action="malformed_json", after_events=2), STREAM)
    bad = r.chunks_out[2]
    assert bad.endswith(b"\n\n")
    with pytest.raises(ValueError):
        json.loads(bad[6:])
    assert r.chunks_out[:2] + r.chunks_out[3:] == STREAM[:2] + STREAM[3:]


async def test_corrupt_drop_duplicate_reorder() -> None:
    """drop_event, duplicate_event and reorder do just that to one event."""
    drop = await run_fault(Corrupt(action="drop_event", after_events=1), STREAM)
    assert drop.chunks_out == [STREAM[0], *STREAM[2:]]
    dup = await run_fault(Corrupt(action="duplicate_event", after_events=1), STREAM)
    assert dup.chunks_out == [STREAM[0], STREAM[1], *STREAM[1:]]
    swap = await run_fault(Corrupt(action="reorder", after_events=1), STREAM)
    assert swap.chunks_out == [STREAM[0], STREAM[2], STREAM[1], *STREAM[3:]]


async def test_corrupt_split_keeps_bytes_with_a_gap() -> None:
    """split sends one event in two writes split_gap_ms apart; bytes are unchanged."""
    r = await run_fault(Corrupt(action="split", after_events=0, split_gap_ms=80), STREAM)
    assert r.data == WHOLE
    assert r.chunks_out[0] + r.chunks_out[1] == STREAM[0]
    assert r.times[1] - r.times[0] == pytest.approx(0.08)


async def test_corrupt_invalid_utf8() -> None:
    """invalid_utf8 puts a 0xFF byte inside the event's data."""
    r = await run_fault(Corrupt(action="invalid_utf8", after_events=0), STREAM)
    assert b"\xff" in r.chunks_out[0]
    assert r.chunks_out[0].startswith(b"data: ")


async def test_corrupt_drop_terminal() -> None:
    """drop_terminal removes [DONE] and the stream ends normally."""
    r = await run_fault(Corrupt(action="drop_terminal"), STREAM)
    assert r.chunks_out == STREAM[:-1]
    assert r.ended is None
    assert r.log[0].action == "drop_terminal"


async def test_corrupt_rate_is_seeded() -> None:
    """With a rate, which events are hit follows the seed."""
    fault = Corrupt(action="drop_event", rate=0.3)
    a = await run_fault(fault, STREAM, seed=5)
    b = await run_fault(fault, STREAM, seed=5)
    assert a.chunks_out == b.chunks_out
    assert 0 < len(a.log) < len(STREAM)


def test_corrupt_needs_a_position() -> None:
    """An action other than drop_terminal needs after_events or rate."""
    with pytest.raises(ValidationError, match="after_events, rate"):
        Corrupt(action="drop_event")


async def test_corrupt_drop_terminal_on_websocket() -> None:
    """On a WebSocket, drop_terminal drops the `{"type": "done"}` message and nothing else."""
    msgs = [json.dumps({"type": "token", "index": i}).encode() for i in range(5)]
    req = make_request("/ws", websocket=True)
    done = b'{"type":"done"}'
    drop = await run_fault(Corrupt(action="drop_terminal"), [*msgs, done], request=req)
    assert drop.chunks_out == msgs


async def test_corrupt_bit_flip_keeps_the_length_and_changes_one_bit() -> None:
    """bit_flip changes exactly one bit inside one event's payload; lengths and framing stay."""
    r = await run_fault(Corrupt(action="bit_flip", after_events=1), STREAM)
    assert [len(c) for c in r.chunks_out] == [len(c) for c in STREAM]
    diff = [
        (a ^ b)
        for out, src in zip(r.chunks_out, STREAM, strict=True)
        for a, b in zip(out, src, strict=True)
        if a != b
    ]
    assert diff == [1]
    assert r.chunks_out[1] != STREAM[1] and r.chunks_out[1].startswith(b"data: ")


async def test_corrupt_reorder_of_the_last_event_changes_nothing_and_logs_nothing() -> None:
    """reorder on the last event has nothing to swap with: the stream passes unchanged and the
    fault log does not claim a swap; on an earlier event the swap is logged where it happens."""
    last = await run_fault(Corrupt(action="reorder", after_events=len(STREAM) - 1), STREAM)
    assert last.chunks_out == STREAM
    assert last.log == []
    swap = await run_fault(Corrupt(action="reorder", after_events=3), STREAM)
    assert swap.chunks_out == [*STREAM[:3], STREAM[4], STREAM[3], *STREAM[5:]]
    assert [(e.action, e.events) for e in swap.log] == [("reorder", 3)]


async def test_corrupt_bit_flip_skips_an_event_with_an_empty_payload() -> None:
    """bit_flip never flips a framing byte: an event with an empty payload passes intact and
    the next event with a payload gets the flip."""
    empty = b"data: \n\n"
    r = await run_fault(Corrupt(action="bit_flip", after_events=0), [empty, *STREAM])
    assert r.chunks_out[0] == empty
    assert r.chunks_out[2:] == STREAM[1:]
    flipped, src = r.chunks_out[1], STREAM[0]
    assert len(flipped) == len(src)
    assert [a ^ b for a, b in zip(flipped, src, strict=True) if a != b] == [1]
    assert [(e.action, e.events) for e in r.log] == [("bit_flip", 1)]
