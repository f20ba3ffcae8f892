"""The recorder: full per-exchange records through a real proxy and mock, and the JSONL sink."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosstream.faults.profile import load_profile, profile_from_data
from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock
from chaosstream.proxy.record import Exchange, JsonlSink, Recorder, fingerprint
from chaosstream.proxy.server import ChaosProxy

FAST = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=20)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Why is the sea salty?"}]}


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with await start_mock(settings=FAST) as server:
        yield server


async def _proxy(
    mock: MockServer, profile: str | dict[str, object], recorder: Recorder
) -> ChaosProxy:
    loaded = load_profile(profile) if isinstance(profile, str) else profile_from_data(profile, "t")
    proxy = ChaosProxy(mock.url, loaded, seed=1, recorder=recorder)
    await proxy.start()
    return proxy


async def _post(url: str, body: dict[str, object]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/chat/completions", json=body) as r:
        try:
            return r.status, await r.read()
        except aiohttp.ClientPayloadError:
            return r.status, b""


def test_fingerprint_sets_the_stream_flag_aside() -> None:
    """Equivalent = same endpoint and body apart from stream/stream_options, key order ignored."""
    a = fingerprint("POST", "/v1/chat/completions", "", b'{"stream": true, "model": "m", "x": 1}')
    b = fingerprint("POST", "/v1/chat/completions", "", b'{"x":1,"model":"m","stream_options":{}}')
    c = fingerprint("POST", "/v1/chat/completions", "", b'{"x": 2, "model": "m"}')
    d = fingerprint("POST", "/v1/messages", "", b'{"x": 1, "model": "m"}')
    assert a == b and a != c and a != d
    assert fingerprint("GET", "/sse", "prompt=a", b"") != fingerprint(
        "GET", "/sse", "prompt=b", b""
    )


async def test_clean_stream_record(mock: MockServer) -> None:
    """A clean stream is complete: the mock's full answer in both texts, events counted."""
    recorder = Recorder()
    proxy = await _proxy(mock, "clean", recorder)
    try:
        status, _ = await _post(proxy.url, {**CHAT, "stream": True})
    finally:
        await proxy.close()
    (ex,) = recorder.exchanges
    row = ex.record()
    assert status == 200 and row["status"] == 200 and row["outcome"] == "complete"
    assert row["response_text"] == row["client_text"] == answer_text(CHAT, FAST.tokens)
    assert row["tokens"] == FAST.tokens and row["events"] > FAST.tokens
    assert row["stream"] is True and row["upstream_complete"] is True and ex.client_complete
    assert row["ttft_ms"] is not None and row["ttlt_ms"] >= row["ttft_ms"]
    assert row["faults"] == [] and row["retry_after"] is None


async def test_cut_stream_record(mock: MockServer) -> None:
    """A cut stream: outcome fault, the fault's position, the client's text a strict prefix."""
    recorder = Recorder()
    proxy = await _proxy(mock, "midstream-close", recorder)
    try:
        await _post(proxy.url, {**CHAT, "stream": True})
    finally:
        await proxy.close()
    (ex,) = recorder.exchanges
    assert ex.outcome == "fault" and ex.failed
    assert ex.faults[0].type == "disconnect" and ex.faults[0].events == 12
    full = answer_text(CHAT, FAST.tokens)
    assert full.startswith(ex.client_text) and len(ex.client_text) < len(full)
    assert ex.events == 12


async def test_refusal_records_retry_after(mock: MockServer) -> None:
    """A 429 keeps status, Retry-After and outcome refused; a JSON answer is rebuilt too."""
    recorder = Recorder()
    profile = {
        "version": 1,
        "name": "rl",
        "faults": [{"type": "http_error", "status": 429, "retry_after_s": 2, "requests": [1]}],
    }
    proxy = await _proxy(mock, profile, recorder)
    try:
        await _post(proxy.url, {**CHAT, "stream": True})
        await _post(proxy.url, {**CHAT, "stream": False})
    finally:
        await proxy.close()
    first, second = recorder.exchanges
    assert (first.status, first.retry_after, first.outcome) == (429, "2", "refused")
    assert first.failed and first.fingerprint == second.fingerprint
    assert second.stream is False and second.response_text == answer_text(CHAT, FAST.tokens)
    assert second.client_complete


async def test_jsonl_sink_writes_whole_lines(mock: MockServer, tmp_path: Path) -> None:
    """Each finished exchange becomes exactly one JSON line, flushed soon (not by close)."""
    path = tmp_path / "rec.jsonl"
    recorder = Recorder()
    sink = JsonlSink(path)
    recorder.listeners.append(sink)
    proxy = await _proxy(mock, "clean", recorder)
    try:
        for n in range(1, 4):
            await _post(proxy.url, {**CHAT, "stream": True})
            await _until(lambda n=n: path.read_text(encoding="utf-8").count("\n") == n)
            assert path.read_text(encoding="utf-8").endswith("\n")
    finally:
        await proxy.close()
        sink.close()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert {r["fingerprint"] for r in rows} == {recorder.exchanges[0].fingerprint}


def test_texts_are_computed_once() -> None:
    """The derived texts are parsed lazily and cached: later chunk changes do not re-parse."""
    ex = Exchange(id=1, method="GET", path="/sse", provider="sse", stream=True, started=0.0)
    ex.content_type = "text/event-stream"
    ex.upstream_chunks.append(b"id: 1\ndata: hello\n\n")
    assert ex.response_text == "hello" and ex.delivered_event_id == "1"
    ex.upstream_chunks.append(b"id: 2\ndata: again\n\n")
    assert ex.response_text == "hello"


def test_stamps_are_opt_in_capped_and_counted() -> None:
    """Recorder(stamps=True) times each body append with the bytes kept; capped; in the budget."""
    from chaosstream.proxy.record import STAMP_LIMIT

    assert Recorder().body().times() == []
    body = Recorder(stamps=True).body()
    body.append(b"data: a\n\n")
    body.append(b"data: bb\n\n")
    (t1, n1), (t2, n2) = body.times()
    assert (n1, n2) == (9, 19) and t1 <= t2
    assert body.held == 19 + 4 * 8  # two (time, bytes) pairs of doubles
    for _ in range(STAMP_LIMIT + 10):
        body.append(b"x")
    assert len(body.times()) == STAMP_LIMIT
    assert len(bytes(body)) == 19 + STAMP_LIMIT + 10  # the bytes are all kept


async def test_stamped_recorder_times_every_delivery_through_the_proxy(mock: MockServer) -> None:
    """Through a real proxy, a stamped recorder's last stamp covers the whole body sent."""
    recorder = Recorder(stamps=True)
    proxy = await _proxy(mock, "clean", recorder)
    try:
        _, body = await _post(proxy.url, {**CHAT, "stream": True})
    finally:
        await proxy.close()
    (ex,) = recorder.exchanges
    times = ex.upstream_chunks.times()
    assert times and times[-1][1] == len(body)
    assert ex.started <= times[0][0] <= times[-1][0] <= (ex.ended or 0.0)


async def test_scoped_records_name_their_scope(mock: MockServer) -> None:
    """A scoped exchange's record and JSONL line carry its scope; an unscoped one's is null."""
    recorder = Recorder()
    proxy = await _proxy(mock, "clean", recorder)
    scoped: list[Exchange] = []
    proxy.scopes.listeners.append(lambda _scope, ex: scoped.append(ex))
    try:
        await _post(proxy.url, CHAT)
        await _post(f"{proxy.url}/~/test-7", CHAT)
    finally:
        await proxy.close()
    (plain,) = recorder.exchanges
    (ex,) = scoped
    assert plain.record()["scope"] is None
    assert ex.scope == "test-7" and json.loads(json.dumps(ex.record()))["scope"] == "test-7"


async def _until(check: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Wait (bounded) until ``check()`` is true."""
    for _ in range(int(timeout_s / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def _stall_after(events: int) -> dict[str, object]:
    return {
        "version": 1,
        "name": f"stall-{events}",
        "faults": [{"type": "disconnect", "after_events": events, "mode": "stall"}],
    }


async def test_restarted_ids_never_mix_open_exchanges() -> None:
    """set_profile restarts exchange ids: an old exchange still open and the new exchange #1
    stay two records, each with its own faults, and the old one's end leaves the new one open."""
    paced = MockSettings(ttft_ms=5, tokens_per_s=20, tokens=60)  # 50 ms an event
    recorder = Recorder()
    async with await start_mock(settings=paced) as slow:
        proxy = await _proxy(slow, _stall_after(15), recorder)
        url = f"{proxy.url}/v1/chat/completions"
        old_body = {**CHAT, "stream": True, "messages": [{"role": "user", "content": "old"}]}
        new_body = {**CHAT, "stream": True, "messages": [{"role": "user", "content": "new"}]}
        try:
            async with aiohttp.ClientSession() as old, aiohttp.ClientSession() as new:
                r_old = await old.post(url, json=old_body)
                await r_old.content.readany()
                # What the runner does between scenarios: ids start over at 1.
                proxy.set_profile(profile_from_data(_stall_after(2), "t"), 1)
                r_new = await new.post(url, json=new_body)
                await r_new.content.readany()
                await _until(lambda: len(proxy.fault_log) == 2)  # both stalls fired (~0.75 s)
                assert len(recorder.open) == 2
                r_old.close()
                await _until(lambda: len(recorder.exchanges) == 1)
                (still,) = recorder.open.values()
                assert json.loads(still.request_body)["messages"][0]["content"] == "new"
                r_new.close()
                await _until(lambda: len(recorder.exchanges) == 2 and not recorder.open)
        finally:
            await proxy.close()
    by_prompt = {
        json.loads(e.request_body)["messages"][0]["content"]: e for e in recorder.current()
    }
    assert by_prompt["old"].id == by_prompt["new"].id == 1
    assert [(f.action, f.events) for f in by_prompt["old"].faults] == [("stall", 15)]
    assert [(f.action, f.events) for f in by_prompt["new"].faults] == [("stall", 2)]


def _exchange(n: int) -> Exchange:
    return Exchange(id=n, method="GET", path="/sse", provider="sse", stream=True, started=0.0)


def test_clear_lets_go_of_open_exchanges() -> None:
    """After clear() an exchange still open is not the next run's: current() leaves it out and
    its end is told to the listeners (the record file) but not kept among the exchanges."""
    recorder = Recorder()
    heard: list[Exchange] = []
    recorder.listeners.append(heard.append)
    left, done = _exchange(1), _exchange(2)
    recorder.begin(left)
    recorder.begin(done)
    recorder.finish(done)
    recorder.clear()
    fresh = _exchange(1)  # the next scenario's first exchange has the same id
    recorder.begin(fresh)
    assert recorder.current() == [fresh]
    assert len(recorder.open) == 2  # still open on the wire: idleness and metrics see it
    recorder.finish(left)
    assert list(recorder.exchanges) == [] and heard == [done, left]
    assert recorder.open == {id(fresh): fresh}
    recorder.finish(fresh)
    assert list(recorder.exchanges) == [fresh] and recorder.current() == [fresh]


async def test_a_scoped_faulted_stream_records_with_its_scopes_settings(mock: MockServer) -> None:
    """Where faults change a scoped stream, the bodies it sent are kept by the scope's recorder's
    rules (its cap, no stamps), not the unscoped recorder's."""
    recorder = Recorder(stamps=True)
    slow = {"version": 1, "name": "slow", "faults": [{"type": "latency", "per_event_ms": 1}]}
    proxy = await _proxy(mock, slow, recorder)
    scope = proxy.scopes.create("tiny")
    scope.recorder.body_limit = 200
    scoped: list[Exchange] = []
    proxy.scopes.listeners.append(lambda _scope, ex: scoped.append(ex))
    try:
        await _post(f"{proxy.url}/~/tiny", {**CHAT, "stream": True})
    finally:
        await proxy.close()
    (ex,) = scoped
    assert [f.type for f in ex.faults] == ["latency"]
    sent = ex.client_chunks
    assert sent is not None and sent.limit == ex.upstream_chunks.limit == 200
    assert sent.truncated and len(bytes(sent)) == 200 and sent.stamps is None


def test_jsonl_sink_never_blocks_its_caller_and_loses_nothing_at_close(tmp_path: Path) -> None:
    """The listener call (on the event loop) only queues: a reader that does not read (a full
    pipe, a slow disk) never blocks it; close() then delivers every line, whole, in order."""
    fifo = tmp_path / "rec.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so the sink's open does not wait
    sink = JsonlSink(fifo)
    events = [_exchange(n) for n in range(1, 6)]
    for ex in events:
        ex.content_type = "text/event-stream"
        ex.upstream_chunks.append(
            b"".join(b"data: %d-%s\n\n" % (i, b"x" * 100) for i in range(900))
        )
    caller = threading.Thread(target=lambda: [sink(ex) for ex in events])
    got = bytearray()

    def read_all() -> None:
        os.set_blocking(reader, True)
        while chunk := os.read(reader, 1 << 16):
            got.extend(chunk)

    drain = threading.Thread(target=read_all)
    try:
        caller.start()
        caller.join(5.0)
        # About 500 KB of lines against a 64 KiB pipe nobody reads: a writing call would hang.
        assert not caller.is_alive()
    finally:
        drain.start()
        caller.join(10.0)
        sink.close()
        drain.join(10.0)
        os.close(reader)
    rows = [json.loads(line) for line in got.decode("utf-8").splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(len(r["response_text"]) > 90_000 for r in rows)


async def test_proxy_record_file_keeps_every_line_through_sigterm(tmp_path: Path) -> None:
    """`chaosstream proxy --record FILE`, SIGTERM right after the last of 40 streams: the
    process writes all 40 lines before it exits (0: a proxy stopped as asked)."""
    path, err = tmp_path / "rec.jsonl", tmp_path / "err.log"
    args = ["proxy", "--profile", "clean", "--listen", "127.0.0.1:0", "--record", str(path)]
    with err.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chaosstream",
            *args,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        found: list[str] = []

        def listening() -> bool:
            found[:] = re.findall(r"listening on (http://\S+)", err.read_text(errors="replace"))
            assert proc.returncode is None, err.read_text(errors="replace")
            return bool(found)

        await _until(listening, 30.0)
        bodies = [{**CHAT, "stream": True, "n": n} for n in range(40)]
        results = await asyncio.gather(*(_post(found[0], body) for body in bodies))
        assert all(status == 200 for status, _ in results)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, err.read_text(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 40 and all(r["outcome"] == "complete" for r in rows)
    assert len({r["fingerprint"] for r in rows}) == 40


def _events(n: int, start: int = 0) -> bytes:
    event = b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":" w%d"}}]}'
    return b"".join(event % i + b"\n\n" for i in range(start, start + n))


def test_a_long_body_is_packed_in_blocks_and_reads_back_whole() -> None:
    """A body packs its bytes in zlib blocks as it grows: it holds a fraction of a long
    stream (at most one block raw), reads back byte for byte, and keeps growing after pack()."""
    from chaosstream.proxy.record import PACK_BLOCK

    body = Recorder().body()
    sent = _events(2000)
    for i in range(0, len(sent), 700):
        body.append(sent[i : i + 700])
    assert bytes(body) == sent and not body.truncated
    assert body.held < PACK_BLOCK + len(sent) // 10
    body.pack()
    assert body.held < len(sent) // 10
    more = _events(10, 2000)
    body.append(more)
    assert bytes(body) == sent + more


def test_a_bodys_tail_and_head_read_as_slices_of_its_bytes() -> None:
    """tail(n)/head(n) equal bytes(body)[-n:]/[:n] across packed blocks, packed or not."""
    body = Recorder().body()
    sent = _events(2000)
    for i in range(0, len(sent), 700):
        body.append(sent[i : i + 700])
    for _ in range(2):
        for n in (1, 10, 5000, 16 * 1024, 40_000, len(sent), len(sent) + 5):
            assert body.tail(n) == sent[-n:] and body.head(n) == sent[:n]
        assert body.tail(0) == body.head(0) == b""
        body.pack()


def test_the_clients_body_holds_nothing_while_it_repeats_upstreams() -> None:
    """The client's body made like upstream's holds no bytes while they are the same (even
    across upstream's packed blocks); at the first byte that differs it keeps its own copy,
    the shared prefix included, and upstream packs freely again."""
    recorder = Recorder(stamps=True)
    upstream = recorder.body()
    client = recorder.body(like=upstream)
    sent = _events(3000)
    step = 900
    for i in range(0, len(sent), step):
        upstream.append(sent[i : i + step])
        if i >= step:  # the client one read behind, as a fault holding one chunk would be
            client.append(sent[i - step : i])
    assert client.held == 8 * len(client.stamps or [])  # its stamps only
    assert bytes(client) == sent[: len(sent) // step * step]
    assert upstream.held < len(sent) // 5
    client.append(b"data: [CHANGED]\n\n")
    assert bytes(client) == sent[: len(sent) // step * step] + b"data: [CHANGED]\n\n"
    assert bytes(upstream) == sent and client.held > 0
    assert client.times()[-1][1] == len(bytes(client))


def test_the_clients_body_keeps_its_own_cap() -> None:
    """A client body like upstream's stops at its own cap: truncated, the first bytes kept."""
    recorder = Recorder(body_limit=100)
    upstream = recorder.body()
    client = recorder.body(like=upstream)
    for _ in range(3):
        upstream.append(b"x" * 60)
        client.append(b"x" * 60)
    assert upstream.truncated and client.truncated and bytes(client) == b"x" * 100


async def test_a_timing_fault_records_no_second_copy(mock: MockServer) -> None:
    """Through the proxy, a latency fault leaves the bytes alone: the client's record holds no
    copy yet reads as sent; a fault that rewrites events gets its own copy."""
    recorder = Recorder()
    timed = {"version": 1, "name": "t", "faults": [{"type": "latency", "per_event_ms": 1}]}
    proxy = await _proxy(mock, timed, recorder)
    try:
        _, body = await _post(proxy.url, {**CHAT, "stream": True})
    finally:
        await proxy.close()
    (ex,) = recorder.exchanges
    assert ex.client_chunks is not None and ex.client_chunks.held == 0
    assert bytes(ex.client_chunks) == body == bytes(ex.upstream_chunks)
    assert ex.client_text == ex.response_text == answer_text(CHAT, FAST.tokens)
    recorder = Recorder()
    proxy = await _proxy(mock, "midstream-close", recorder)
    try:
        _, body = await _post(proxy.url, {**CHAT, "stream": True})
    finally:
        await proxy.close()
    (ex,) = recorder.exchanges
    assert ex.client_chunks is not None and bytes(ex.client_chunks) == body
    assert len(body) < len(bytes(ex.upstream_chunks))


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(st.integers(1, 9000), min_size=1, max_size=12),
    lag=st.integers(0, 3),
    change_at=st.one_of(st.none(), st.integers(0, 11)),
    pack_at=st.one_of(st.none(), st.integers(0, 11)),
    limit=st.sampled_from([100, 20_000, 1 << 20]),
)
def test_bodies_read_back_what_was_appended(
    reads: list[int], lag: int, change_at: int | None, pack_at: int | None, limit: int
) -> None:
    """Whatever the read sizes, the client's lag and divergence, a pack() on the way and the
    cap: each body, and its copy, reads back exactly the capped bytes appended to it."""
    stream = _events(1000)
    recorder = Recorder(body_limit=limit, stamps=True)
    upstream = recorder.body()
    client = recorder.body(like=upstream)
    sent_up, sent_client, pending = b"", b"", []
    pos = 0
    for i, size in enumerate(reads):
        data = stream[pos : pos + size] or b"x"
        pos += size
        upstream.append(data)
        sent_up += data
        pending.append(b"data: [CHANGED]\n\n" if i == change_at else data)
        while len(pending) > lag:
            out = pending.pop(0)
            client.append(out)
            sent_client += out
        if i == pack_at:
            upstream.pack()
    assert bytes(upstream) == sent_up[:limit] and upstream.truncated == (len(sent_up) > limit)
    assert bytes(client) == sent_client[:limit]
    assert client.truncated == (len(sent_client) > limit)
    times = client.times()
    assert times[-1][1] == len(bytes(client)) if times else not sent_client
    copied = upstream.copy()  # what Exchange.snapshot hands the --record writer thread
    assert bytes(client.copy(like=copied)) == bytes(client.copy()) == sent_client[:limit]
