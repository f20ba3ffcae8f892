"""Load metrics: definitions, merging, and the wire form workers send to the master."""

from __future__ import annotations

from chaosstream.load.metrics import Answer, Attempt, Histogram, LoadStats, ProfileStats


def _attempt(outcome: str, times: list[float], status: int | None = 200, started: float = 0.0):
    return Attempt(outcome, started, status, list(times), 100, None, started + 1.0)


def test_histogram_nearest_rank_percentiles() -> None:
    """p50/p90/p99 are nearest-rank over the samples (1..100 ms gives 50, 90, 99)."""
    h = Histogram()
    for ms in range(1, 101):
        h.add(float(ms))
    summary = h.summary()
    assert (summary["p50"], summary["p90"], summary["p99"]) == (50.0, 90.0, 99.0)
    assert summary["count"] == 100 and summary["mean"] == 50.5


def test_histogram_rounds_to_three_digits() -> None:
    """Values keep about three significant digits, so the histogram stays small."""
    h = Histogram()
    for ms in (20.04, 20.06, 1234.0, 56789.0):
        h.add(ms)
    assert sorted(h.counts) == [20.0, 20.1, 1230.0, 56800.0]


def test_stream_definitions() -> None:
    """TTFT is the first token, ITL every gap, TPOT the mean gap, TTLT the last token."""
    stats = ProfileStats()
    stats.add_attempt(_attempt("complete", [0.2, 0.22, 0.24, 0.30]), 1000.0)
    assert stats.ttft.summary()["p50"] == 200.0
    assert sorted(stats.itl.counts.elements()) == [20.0, 20.0, 60.0]
    assert stats.tpot.summary()["p50"] == 33.3
    assert stats.ttlt.summary()["p50"] == 300.0
    assert stats.tokens == 4 and stats.completed == 1


def test_interruptions_count_only_started_streams() -> None:
    """A cut after status 200 is an interruption; a 429 is an error but no interruption."""
    stats = ProfileStats()
    stats.add_attempt(_attempt("complete", [0.1]), 1.0)
    stats.add_attempt(_attempt("reset", [0.1, 0.2]), 1.0)
    stats.add_attempt(_attempt("http_429", [], status=429), 2.0)
    summary = stats.summary(10.0)
    assert summary["interruption_rate"] == 0.5  # 1 of 2 started streams
    assert summary["errors"] == {"http_429": 1, "reset": 1}
    assert summary["error_rate"] == round(2 / 3, 4)
    assert summary["requests_per_s"] == 0.3


def test_goodput_and_attempts_per_answer() -> None:
    """Goodput: answers completed within the SLOs, timed from the first attempt's start."""
    stats = ProfileStats()
    retried = Answer(
        [
            _attempt("http_503", [], status=503, started=0.0),
            _attempt("complete", [0.2, 0.4], started=1.0),  # first token 1.2 s after asking
        ]
    )
    quick = Answer([_attempt("complete", [0.2, 0.4], started=5.0)])
    failed = Answer([_attempt("reset", [0.2], started=9.0)])
    for answer in (retried, quick, failed):
        for a in answer.attempts:
            stats.add_attempt(a, 10.0)
        stats.add_answer(answer, ttft_slo_ms=500.0, ttlt_slo_ms=None)
    summary = stats.summary(10.0)
    assert summary["goodput"] == round(1 / 3, 4)  # only `quick` met the 500 ms TTFT
    assert summary["attempts_per_answer"] == 2.0  # 4 attempts, 2 completed answers
    assert retried.ttft_s() == 1.2


def test_wire_round_trip_and_merge() -> None:
    """Two workers' totals sent over the wire add up to the totals of one process."""
    one, two, both = LoadStats(), LoadStats(), LoadStats()
    for target in (one, both):
        target.of("clean").add_attempt(_attempt("complete", [0.2, 0.22]), 100.0)
        target.of("clean").sample_open(100.2, 3)
    for target in (two, both):
        target.of("clean").add_attempt(_attempt("close", [0.3]), 100.0)
        target.of("mobile-3g").add_attempt(_attempt("complete", [0.6]), 101.0)
        target.of("clean").sample_open(100.7, 2)
    merged = LoadStats()
    for part in (one, two):
        merged.merge(LoadStats.from_wire(part.drain().to_wire()))
    assert not one.profiles  # drained
    assert merged.overall().summary(1.0) == both.overall().summary(1.0)
    assert merged.of("clean").timeline[100][0] == 5  # open streams add up across workers
