"""The verifier's rules on recorded exchanges."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from chaosstream.mock import answer_text
from chaosstream.proxy.record import Exchange
from chaosstream.verify.expectations import ClientRun, Evidence, evaluate, shown_fraction
from chaosstream.verify.scenario import Expect, NoOptions
from tests.conftest import ProxyFactory

ANSWER = "The quick brown fox, jumps over the lazy dog."
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'


def _sse(text: str, done: bool) -> bytes:
    out = b"".join(
        b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % w.encode() for w in text.split("|")
    )
    return out + (b"data: [DONE]\n\n" if done else b"")


def _ex(
    i: int,
    start: float,
    *,
    status: int = 200,
    done: bool = True,
    stream: bool = True,
    retry_after: str | None = None,
    text: str = ANSWER,
) -> Exchange:
    body = BODY if stream else BODY.replace(b',"stream":true', b"")
    ex = Exchange(
        id=i,
        method="POST",
        path="/v1/chat/completions",
        provider="openai",
        stream=stream,
        started=start,
        request_body=body,
        status=status,
        retry_after=retry_after,
        first_byte=start + 0.05,
        ended=start + 0.2,
    )
    if status == 200:
        ex.content_type = "text/event-stream"
        ex.upstream_chunks.append(_sse(text, done))
        ex.outcome = "complete"
    else:
        ex.outcome = "refused"
    return ex


def _client(code: int | None, stdout: str, timed_out: bool = False) -> ClientRun:
    return ClientRun(["c"], code, timed_out, stdout, "", 1.0)


def test_shown_fraction_ignores_whitespace_and_decorations() -> None:
    """Prefixes, labels and line wrapping do not matter; a missing piece does."""
    assert shown_fraction(ANSWER, f"Assistant> {ANSWER.replace(' ', chr(10))}\n[done]") == (37, 37)
    assert shown_fraction(ANSWER, "The quick brown fox") == (16, 37)
    assert shown_fraction(ANSWER, "The quick fox, jumps over the lazy dog.") == (32, 37)
    assert shown_fraction(ANSWER, "") == (0, 37)


def test_evidence_says_what_is_missing_where() -> None:
    """One word left out of a long answer: counted by alignment, the word and place named."""
    answer = answer_text("Tell me about rivers.", 40)
    words = answer.split(" ")
    shown = " ".join(words[:9] + words[10:])
    missing = " " + words[9]
    at = len(" ".join(words[:9])) + 1
    total = len(answer.replace(" ", ""))
    ex = _ex(1, 0.0, text="|".join(answer.split(" ")).replace("|", " |"))
    obs, verdicts = evaluate(Evidence(_client(0, shown), [ex], answer), [], resilient=True)
    assert obs.silent_truncation and not obs.completed
    want = f"{total - len(words[9])} of {total} characters shown; {missing!r} missing at "
    want += f"character {at}"
    assert want in verdicts[0].evidence, verdicts[0].evidence
    assert shown_fraction(answer, shown) == (total - len(words[9]), total)


def test_silent_truncation_and_completion() -> None:
    """Exit 0 with part of the answer is silent truncation; with all of it, completion."""
    cut = _ex(1, 0.0, done=False, text="The quick")
    obs, verdicts = evaluate(Evidence(_client(0, "The quick"), [cut], ANSWER), [], resilient=True)
    assert obs.silent_truncation and not obs.completed and not obs.surfaced_error
    assert verdicts[0].verdict == "fail" and "8 of 37 characters shown" in verdicts[0].evidence
    obs, verdicts = evaluate(
        Evidence(_client(0, ANSWER), [cut, _ex(2, 1.0)], ANSWER), [], resilient=True
    )
    assert obs.completed and obs.retried and obs.attempts == 2
    assert verdicts[0].verdict == "pass"


def test_retry_after_tolerance() -> None:
    """A retry 0.96 s after Retry-After: 1 is respected (50 ms tolerance); 0.9 s is too soon."""
    refused = _ex(1, 0.0, status=429, retry_after="1")
    refused.ended = 0.01
    ok = evaluate(Evidence(_client(0, ANSWER), [refused, _ex(2, 0.97)], ANSWER), [])[0]
    soon = evaluate(Evidence(_client(0, ANSWER), [refused, _ex(2, 0.91)], ANSWER), [])[0]
    assert ok.respected_retry_after and not soon.respected_retry_after


def test_hang_is_not_surfacing() -> None:
    """A client killed at the timeout neither completed nor surfaced an error."""
    obs, verdicts = evaluate(
        Evidence(_client(-9, "", timed_out=True), [_ex(1, 0.0, done=False)], ANSWER),
        [],
        resilient=True,
    )
    assert obs.exit_code is None and not obs.surfaced_error and not obs.silent_truncation
    assert verdicts[0].evidence.count("hung") == 1, verdicts[0].evidence
    assert "killed after" in verdicts[0].evidence


def test_fallback_needs_a_failed_stream_first() -> None:
    """A non-streaming equivalent after a failed stream is a fallback."""
    obs, _ = evaluate(
        Evidence(_client(0, ANSWER), [_ex(1, 0.0, done=False), _ex(2, 0.5, stream=False)], ANSWER),
        [],
    )
    assert obs.fell_back and obs.attempts == 2


def test_fallback_after_a_stream_a_corrupt_fault_spoiled() -> None:
    """A non-streaming request after a malformed event is a fallback, even with the terminal sent;
    after a mere split (a correct parser joins it) it is a retry only."""
    from chaosstream.faults.base import FaultEvent

    for action, fell_back in (("malformed_json", True), ("split", False)):
        spoiled = _ex(1, 0.0)
        spoiled.faults.append(FaultEvent(1, "corrupt", 0, action, 30.0, 5, 400))
        obs, _ = evaluate(
            Evidence(_client(0, ANSWER), [spoiled, _ex(2, 0.5, stream=False)], ANSWER), []
        )
        assert (obs.fell_back, obs.retried) == (fell_back, True), action
        if fell_back:
            assert "(corrupt malformed_json, terminal event delivered)" in obs.notes["fell_back"]


def test_retry_after_ms_is_judged_first_at_ms_precision() -> None:
    """retry-after-ms wins over Retry-After, at millisecond precision, and evidence names it."""
    refused = _ex(1, 0.0, status=429, retry_after="5")
    refused.retry_after_ms = "650"
    refused.ended = 0.01
    ok = evaluate(Evidence(_client(0, ANSWER), [refused, _ex(2, 0.65)], ANSWER), [])[0]
    soon = evaluate(Evidence(_client(0, ANSWER), [refused, _ex(2, 0.55)], ANSWER), [])[0]
    assert ok.respected_retry_after and not soon.respected_retry_after
    assert "retry-after-ms 650" in ok.notes["respected_retry_after"]
    assert "too soon: 0.65 s asked" in soon.notes["respected_retry_after"]


def test_retry_after_http_date_counts_from_when_it_was_sent() -> None:
    """A Retry-After HTTP-date is judged as the wait from the response to that date."""
    import email.utils

    refused = _ex(1, 0.0, status=503)
    refused.wall = 1_700_000_000.0
    refused.first_byte, refused.ended = 0.0, 0.01
    refused.retry_after = email.utils.formatdate(1_700_000_002, usegmt=True)
    ok = evaluate(Evidence(_client(0, ANSWER), [refused, _ex(2, 2.0)], ANSWER), [])[0]
    soon = evaluate(Evidence(_client(0, ANSWER), [refused, _ex(2, 1.5)], ANSWER), [])[0]
    assert ok.respected_retry_after and not soon.respected_retry_after
    assert "an HTTP-date" in soon.notes["respected_retry_after"]


def test_retry_after_x_should_retry_false_forbids_any_retry() -> None:
    """After x-should-retry: false, any retry breaks the server's hint, however late."""
    refused = _ex(1, 0.0, status=503)
    refused.should_retry = "false"
    obs = evaluate(Evidence(_client(0, ANSWER), [refused, _ex(2, 9.0)], ANSWER), [])[0]
    assert not obs.respected_retry_after
    assert "x-should-retry: false" in obs.notes["respected_retry_after"]


def _stopped_ex() -> Exchange:
    from chaosstream.faults.base import FaultEvent

    ex = _ex(1, 0.0, text="The quick")
    ex.faults.append(FaultEvent(1, "content", 0, "length", 10.0, 2, 100, "length"))
    return ex


def test_length_stop_is_not_complete_and_must_be_flagged() -> None:
    """A length-stopped stub shown as all there is fails; the same stub flagged passes."""
    from chaosstream.verify.scenario import Expect

    expect = [Expect(completes={}), Expect(flags_incomplete={})]
    quiet = Evidence(_client(0, "The quick"), [_stopped_ex()], ANSWER)
    obs, verdicts = evaluate(quiet, expect, resilient=True)
    assert obs.stopped == "length (length)" and obs.silent_truncation
    assert [v.verdict for v in verdicts] == ["fail", "fail", "fail"]
    assert "exited 0 and printed nothing that says so" in verdicts[1].evidence
    told = Evidence(_client(0, "The quick\n[stopped: max tokens reached]"), [_stopped_ex()], ANSWER)
    obs, verdicts = evaluate(told, expect, resilient=True)
    assert not obs.silent_truncation and obs.flagged_incomplete
    assert [v.verdict for v in verdicts] == ["fail", "pass", "pass"]
    assert "'stopped'" in verdicts[1].evidence


def test_completes_accept_stop_and_flags_without_a_stop() -> None:
    """completes {accept_stop: true} takes the stub; flags_incomplete needs a stopped answer."""
    from chaosstream.verify.scenario import Expect

    told = Evidence(_client(0, "The quick"), [_stopped_ex()], ANSWER)
    _, verdicts = evaluate(told, [Expect(completes={"accept_stop": True})])
    assert verdicts[0].verdict == "pass"
    clean = Evidence(_client(0, ANSWER), [_ex(1, 0.0)], ANSWER)
    _, verdicts = evaluate(clean, [Expect(flags_incomplete={})])
    assert verdicts[0].verdict == "fail" and "nothing to flag" in verdicts[0].evidence


def _gone(closed_early: bool) -> Exchange:
    ex = _ex(1, 0.0, done=False)
    ex.outcome = "client_gone"
    ex.upstream_closed_early = closed_early
    return ex


def test_cancels_upstream_needs_the_proxys_early_close() -> None:
    """Without the mock's own count, cancels_upstream passes only on the exchange's record that
    the proxy closed upstream before its end; a client that left after upstream had finished
    showed no cancel."""
    ok = evaluate(
        Evidence(_client(1, ""), [_gone(True)], ANSWER), [Expect(cancels_upstream=NoOptions())]
    )
    bad = evaluate(
        Evidence(_client(1, ""), [_gone(False)], ANSWER), [Expect(cancels_upstream=NoOptions())]
    )
    assert [(v.verdict, v.evidence) for v in ok[1]] == [
        ("pass", "client left #1; the proxy closed its upstream request before upstream's end")
    ]
    assert bad[1][0].verdict == "fail"
    assert "had already sent its whole response" in bad[1][0].evidence, bad[1][0].evidence


async def test_cancels_upstream_against_an_upstream_that_is_not_the_mock(
    proxy_factory: ProxyFactory,
) -> None:
    """Through a real proxy to a plain SSE upstream: a client that leaves after the first event
    makes the proxy close upstream (the upstream sees it), the exchange records it, and the
    verdict passes on that record."""
    upstream_saw_close = asyncio.Event()

    async def slow_sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(200):  # 4 s at most
                await resp.write(b'data: {"choices":[{"delta":{"content":"w%d "}}]}\n\n' % i)
                await asyncio.sleep(0.02)
        except (ConnectionError, asyncio.CancelledError):
            upstream_saw_close.set()
            raise
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow_sse)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        host, port = runner.addresses[0][:2]
        proxy = await proxy_factory(f"http://{host}:{port}")
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"{proxy.url}/v1/chat/completions", data=BODY)
            await resp.content.readline()
            resp.close()  # the user pressed Stop
        await asyncio.wait_for(upstream_saw_close.wait(), 5)
        for _ in range(250):
            if proxy.recorder.exchanges and not proxy.recorder.open:
                break
            await asyncio.sleep(0.02)
        (ex,) = proxy.recorder.exchanges
        assert (ex.outcome, ex.upstream_closed_early) == ("client_gone", True)
        _, verdicts = evaluate(
            Evidence(_client(1, ""), [ex], None), [Expect(cancels_upstream=NoOptions())]
        )
        assert [v.verdict for v in verdicts] == ["pass"], verdicts
    finally:
        await runner.cleanup()
