"""Each fault family in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from chaosstream.faults import (
    Buffer,
    ConcurrencyLimit,
    Corrupt,
    Disconnect,
    HttpError,
    Latency,
    Loss,
    Noop,
    StreamError,
    Throttle,
)
from chaosstream.faults.network import LinkDelay, LinkLoss, LinkUp
from chaosstream.streams.sse import EventDecoder
from chaosstream.testing import FakeClock, make_request, run_fault


def openai_stream(n: int) -> list[bytes]:
    """``n`` OpenAI token events and ``[DONE]``, one write each."""
    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"t%d "}}]}\n\n' % i for i in range(n)
    ]
    return [*events, b"data: [DONE]\n\n"]


def timed(chunks: list[bytes], every_s: float) -> list[bytes | tuple[float, bytes]]:
    """The chunks arriving ``every_s`` apart, the first at 0."""
    return [(i * every_s, c) for i, c in enumerate(chunks)]


STREAM = openai_stream(10)
WHOLE = b"".join(STREAM)


# -- latency -------------------------------------------------------------------


async def test_latency_first_byte() -> None:
    """The first byte leaves first_byte_ms late; the rest follow without extra delay."""
    r = await run_fault(Latency(first_byte_ms=300), STREAM)
    assert r.times[0] == pytest.approx(0.3)
    assert r.times[-1] == pytest.approx(0.3)
    assert r.data == WHOLE
    assert [e.action for e in r.log] == ["delay_first_byte"]


async def test_latency_per_event_does_not_accumulate() -> None:
    """Each event is per_event_ms late from when it arrived, not per_event_ms apart."""
    r = await run_fault(Latency(per_event_ms=100), timed(STREAM, 0.02))
    later = r.times[1:]
    assert later == pytest.approx([0.1 + 0.02 * i for i in range(1, len(STREAM))])


async def test_latency_jitter_never_reorders() -> None:
    """With jitter larger than the gap between events, order and bytes are kept."""
    r = await run_fault(Latency(per_event_ms=50, jitter_ms=45), timed(STREAM, 0.005), seed=3)
    assert r.data == WHOLE
    assert r.times == sorted(r.times)


async def test_latency_same_seed_same_delays() -> None:
    """Jitter comes from the seeded generator: same seed, same times."""
    fault = Latency(first_byte_ms=100, per_event_ms=20, jitter_ms=15)
    a = await run_fault(fault, STREAM, seed=9)
    b = await run_fault(fault, STREAM, seed=9)
    c = await run_fault(fault, STREAM, seed=10)
    assert a.times == b.times
    assert a.times != c.times


# -- throttle ------------------------------------------------------------------


async def test_throttle_events_per_s_exact() -> None:
    """20 events/s: 11 events span exactly 0.5 s, evenly spaced, boundaries kept."""
    r = await run_fault(Throttle(events_per_s=20), STREAM)
    assert r.chunks_out == STREAM
    assert r.times == pytest.approx([i * 0.05 for i in range(len(STREAM))])


async def test_throttle_no_burst_after_upstream_pause() -> None:
    """A pause upstream earns no credit: events after it are still paced."""
    chunks: list[bytes | tuple[float, bytes]] = [*STREAM[:3], (2.0, STREAM[3]), STREAM[4]]
    r = await run_fault(Throttle(events_per_s=10), chunks)
    assert r.times[3:] == pytest.approx([2.0, 2.1])


async def test_throttle_tokens_counts_only_text() -> None:
    """tokens_per_s paces token events; [DONE] carries no token and leaves at once."""
    r = await run_fault(Throttle(tokens_per_s=10), STREAM)
    assert r.times[:10] == pytest.approx([i * 0.1 for i in range(10)])
    assert r.times[10] == pytest.approx(r.times[9])


async def test_throttle_bytes_per_s_smooth() -> None:
    """bytes_per_s: 10 kB at 5 kB/s takes 2 s, in small pieces rather than one burst."""
    r = await run_fault(Throttle(bytes_per_s=5000), [b"x" * 10_000])
    assert r.data == b"x" * 10_000
    assert r.elapsed_s == pytest.approx(2.0)
    assert len(r.chunks_out) >= 10


def test_throttle_needs_one_rate() -> None:
    """Two rates (or none) is a configuration error."""
    with pytest.raises(ValidationError, match="exactly one"):
        Throttle(events_per_s=1, bytes_per_s=1)
    with pytest.raises(ValidationError, match="exactly one"):
        Throttle()


# -- loss ----------------------------------------------------------------------


async def test_loss_keeps_every_byte_and_stalls() -> None:
    """Lost segments delay delivery by multiples of the RTO; no byte is lost or moved."""
    chunks = [b"y" * 4000] * 30
    r = await run_fault(Loss(rate=0.1), chunks, seed=1)
    assert r.data == b"".join(chunks)
    stalls = [e for e in r.log if e.action == "stall"]
    assert stalls
    assert r.elapsed_s == pytest.approx(sum(_stall_ms(e.detail) for e in stalls) / 1000)


def _stall_ms(detail: str) -> float:
    return float(detail.split(", ")[1].removesuffix(" ms"))


async def test_loss_backoff_doubles_then_resets() -> None:
    """Every segment lost: RTO 200, 400, 800 ms, then a reset after max_retransmits."""
    r = await run_fault(Loss(rate=0.999999, max_retransmits=3), [b"z" * 100])
    assert r.ended == "reset"
    assert r.chunks_out == []
    assert [e.action for e in r.log] == ["reset"]


async def test_loss_stall_is_rto() -> None:
    """One loss of a small write stalls it by exactly rto_ms."""
    for seed in range(200):
        r = await run_fault(Loss(rate=0.3, rto_ms=200), [b"a" * 10], seed=seed)
        if r.log and r.log[0].detail == "1 lost, 200 ms":
            assert r.elapsed_s == pytest.approx(0.2)
            assert r.data == b"a" * 10
            return
    raise AssertionError("no seed gave a single loss")


# -- disconnect ----------------------------------------------------------------


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


# -- http_error ----------------------------------------------------------------


async def test_http_error_openai_body_and_retry_after() -> None:
    """An OpenAI path gets OpenAI's error JSON, and Retry-After in whole seconds."""
    r = await run_fault(HttpError(status=429, retry_after_s=1.5), STREAM)
    assert r.refusal is not None
    assert r.refusal.status == 429
    assert r.refusal.headers == {"Retry-After": "2"}
    assert json.loads(r.refusal.body)["error"]["code"] == "rate_limit_exceeded"
    assert r.chunks_out == []


async def test_http_error_anthropic_body() -> None:
    """An Anthropic path gets Anthropic's error JSON."""
    r = await run_fault(HttpError(status=529), STREAM, request=make_request("/v1/messages"))
    assert r.refusal is not None
    body = json.loads(r.refusal.body)
    assert body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


async def test_http_error_custom_body() -> None:
    """A given body is sent as is."""
    fault = HttpError(status=502, body="<html>bad gateway</html>", content_type="text/html")
    r = await run_fault(fault, STREAM)
    assert r.refusal is not None
    assert (r.refusal.body, r.refusal.content_type) == (b"<html>bad gateway</html>", "text/html")


# -- stream_error --------------------------------------------------------------


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


# -- corrupt -------------------------------------------------------------------


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


# -- buffer --------------------------------------------------------------------


async def test_buffer_holds_until_the_end() -> None:
    """Nothing leaves until upstream ends; then everything at once."""
    r = await run_fault(Buffer(), timed(STREAM, 0.1))
    assert r.data == WHOLE
    assert r.times == pytest.approx([1.0] * len(r.times))


async def test_buffer_flush_bytes() -> None:
    """flush_bytes lets go each time that much is held."""
    r = await run_fault(Buffer(flush_bytes=100), [b"x" * 60] * 5)
    assert [len(c) for c in r.chunks_out] == [120, 120, 60]


# -- concurrency_limit ---------------------------------------------------------


async def test_concurrency_limit_counts_open_exchanges() -> None:
    """With max_streams 0 every request is refused with 429 and Retry-After."""
    r = await run_fault(ConcurrencyLimit(max_streams=0, retry_after_s=3), STREAM)
    assert r.refusal is not None
    assert (r.refusal.status, r.refusal.headers["Retry-After"]) == (429, "3")


async def test_concurrency_limit_lets_one_through() -> None:
    """Below the limit the stream passes untouched."""
    r = await run_fault(ConcurrencyLimit(max_streams=1), STREAM)
    assert (r.refusal, r.data) == (None, WHOLE)


# -- network and websocket messages ---------------------------------------------


async def test_network_link_chain_adds_up() -> None:
    """A 100 ms link delay then 1 kB/s: a 500-byte write arrives after 0.6 s."""
    chain = [LinkDelay(delay_ms=100), Throttle(bytes_per_s=1000)]
    r = await run_fault(chain, [b"q" * 500])
    assert r.elapsed_s == pytest.approx(0.6)


async def test_network_upload_shaping() -> None:
    """LinkUp shapes only the request body; LinkLoss acts on both directions."""
    assert not LinkUp(bytes_per_s=10).acts_on_stream
    assert hasattr(LinkLoss(rate=0.1), "apply_upload")


async def test_websocket_messages_are_events() -> None:
    """On a WebSocket, disconnect after_events counts messages."""
    msgs = [json.dumps({"type": "token", "index": i}).encode() for i in range(5)]
    req = make_request("/ws", websocket=True)
    r = await run_fault(Disconnect(after_events=2), msgs, request=req)
    assert r.chunks_out == msgs[:2]
    done = b'{"type":"done"}'
    drop = await run_fault(Corrupt(action="drop_terminal"), [*msgs, done], request=req)
    assert drop.chunks_out == msgs


async def test_noop_passes_everything() -> None:
    """The noop fault passes chunks unchanged and logs nothing."""
    r = await run_fault(Noop(), STREAM)
    assert (r.chunks_out, r.log) == (STREAM, [])


async def test_fake_clock_orders_concurrent_sleepers() -> None:
    """Two sleepers on the fake clock wake in deadline order at their own times."""
    import asyncio

    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, s: float) -> None:
        await clock.sleep(s)
        woke.append((name, clock.now()))

    await asyncio.gather(sleeper("late", 2.0), sleeper("early", 0.5))
    await clock.aclose()
    assert woke == [("early", 0.5), ("late", 2.0)]
