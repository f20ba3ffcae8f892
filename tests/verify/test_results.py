"""A run's outcome: a scenario passes on all its verdicts, a run on all scenarios, uninterrupted."""

from __future__ import annotations

from chaosstream.faults.profile import load_profile
from chaosstream.proxy.record import Exchange
from chaosstream.verify.expectations import ClientRun, Evidence, evaluate
from chaosstream.verify.results import RunReport, ScenarioResult
from chaosstream.verify.scenario import Expect, NoOptions

ANSWER = "Hello there, streaming world."
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'


def streamed(done: bool) -> Exchange:
    """One chat stream the proxy recorded: the whole answer, or cut before its end."""
    ex = Exchange(
        id=1,
        method="POST",
        path="/v1/chat/completions",
        provider="openai",
        stream=True,
        started=0.0,
        request_body=BODY,
        status=200,
        content_type="text/event-stream",
        first_byte=0.05,
        ended=0.2,
        outcome="complete",
    )
    ex.upstream_chunks.append(b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % b"Hello")
    if done:
        ex.upstream_chunks.append(
            b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % ANSWER[5:].encode()
        )
        ex.upstream_chunks.append(b"data: [DONE]\n\n")
    return ex


def judged(name: str, complete: bool) -> ScenarioResult:
    """A clean-profile scenario expecting `completes`, judged by the real verifier."""
    client = ClientRun(["client"], 0, False, ANSWER if complete else "Hello", "", 0.5)
    exchanges = [streamed(done=complete)]
    observed, verdicts = evaluate(
        Evidence(client, exchanges, ANSWER, profile=load_profile("clean")),
        [Expect(completes=NoOptions())],
    )
    return ScenarioResult(name, "clean", 7, observed, verdicts, client, exchanges)


def test_scenario_passes_only_when_every_verdict_passes() -> None:
    """The whole answer printed passes `completes`; a cut one fails it, and the scenario."""
    good, cut = judged("good", complete=True), judged("cut", complete=False)
    assert [v.verdict for v in good.verdicts] == ["pass"] and good.passed
    assert [v.verdict for v in cut.verdicts] == ["fail"] and not cut.passed


def test_a_scenario_without_verdicts_does_not_pass() -> None:
    """No verdict is no evidence: a result with an empty verdict list fails, and so does its run."""
    good = judged("good", complete=True)
    empty = ScenarioResult("empty", "clean", 7, good.observed, [], good.client, good.exchanges)
    assert good.passed and not empty.passed
    assert not RunReport(7, [good, empty], "embedded mock").passed


def test_run_passes_when_all_its_scenarios_pass() -> None:
    """One failing scenario fails the run; all passing passes it."""
    good, cut = judged("good", complete=True), judged("cut", complete=False)
    assert RunReport(7, [good, judged("again", complete=True)], "embedded mock").passed
    assert not RunReport(7, [good, cut], "embedded mock").passed


def test_an_interrupted_run_never_passes() -> None:
    """A signal stopped the run: the finished scenarios passed, yet the run proved nothing else."""
    report = RunReport(7, [judged("good", complete=True)], "embedded mock", interrupted=True)
    assert all(r.passed for r in report.results)
    assert not report.passed
    assert RunReport(7, [], "embedded mock").interrupted is False


def test_strict_fails_a_run_on_cassette_misses_and_only_with_strict() -> None:
    """`unmatched` gathers every scenario's cassette misses in order; they fail the run only
    when it is strict, and a strict run without misses still passes."""
    first, second = judged("first", complete=True), judged("second", complete=True)
    first.unmatched, second.unmatched = ["miss a"], ["miss b", "miss c"]
    report = RunReport(7, [first, second], "cassette:t")
    assert report.unmatched == ["miss a", "miss b", "miss c"] and report.passed
    report.strict = True
    assert not report.passed
    first.unmatched, second.unmatched = [], []
    assert report.passed and report.unmatched == []
