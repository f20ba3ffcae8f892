"""Property: faults that are not meant to drop data deliver exactly the input bytes."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from chaosstream.faults import Buffer, Corrupt, Fault, Latency, Loss, Noop, Throttle
from chaosstream.faults.network import LinkDelay, LinkDown, LinkLoss
from chaosstream.testing import run_fault

KEEPING: list[Fault] = [
    Noop(),
    Latency(first_byte_ms=120, per_event_ms=30, jitter_ms=25),
    Throttle(events_per_s=50),
    Throttle(tokens_per_s=40),
    Throttle(bytes_per_s=2000),
    Loss(rate=0.2, max_retransmits=40),
    Buffer(),
    Buffer(flush_bytes=64),
    Corrupt(action="split", rate=0.5),
    LinkDelay(delay_ms=80, jitter_ms=60),
    LinkDown(bytes_per_s=3000),
    LinkLoss(rate=0.1, max_retransmits=40),
]

_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
_field = st.sampled_from(["data", "event", "id", "retry", ""])
_line = st.one_of(
    st.builds(lambda f, v: f"{f}: {v}" if f else f": {v}", _field, _text),
    st.just('data: {"choices":[{"delta":{"content":"hi"}}]}'),
    st.just("data: [DONE]"),
)
_eol = st.sampled_from(["\n", "\r\n"])
_event = st.builds(
    lambda lines, eol: eol.join(lines) + eol + eol, st.lists(_line, min_size=1, max_size=4), _eol
)
_stream = st.lists(_event, min_size=0, max_size=12).map(lambda es: "".join(es).encode())


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=60, deadline=None)
@given(
    data=_stream,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=15),
    which=st.sampled_from(range(len(KEEPING))),
    seed=st.integers(0, 1000),
)
def test_keeping_faults_deliver_exact_bytes(
    data: bytes, cuts: list[int], which: int, seed: int
) -> None:
    """For any chunking of any valid SSE stream, the output bytes equal the input bytes."""
    chunks = _chunked(data, cuts)
    result = asyncio.run(run_fault(KEEPING[which], chunks, seed=seed))
    assert result.ended is None
    assert result.data == data


@settings(max_examples=30, deadline=None)
@given(
    data=_stream,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=15),
    seed=st.integers(0, 1000),
)
def test_stacked_network_faults_deliver_exact_bytes(
    data: bytes, cuts: list[int], seed: int
) -> None:
    """A whole network block (delay, bandwidth, loss) stacked keeps every byte in order."""
    chain = [
        LinkDelay(delay_ms=50, jitter_ms=40),
        LinkDown(bytes_per_s=5000),
        LinkLoss(rate=0.1, max_retransmits=40),
        Latency(per_event_ms=10),
    ]
    result = asyncio.run(run_fault(chain, _chunked(data, cuts), seed=seed))
    assert result.data == data
