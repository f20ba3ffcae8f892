"""Streaming load metrics: what one attempt measured, and mergeable per-profile totals.

Definitions (the ones load engineers use; llmperf and GenAI-Perf name them so):

* **TTFT** -- from the moment the user starts the request (before connecting)
  to the first *token event* its application sees (after the client-side faults).
* **ITL** -- inter-token latency: every gap between two consecutive token events.
* **TPOT** -- time per output token of one stream: ``(last - first) / (tokens - 1)``.
* **TTLT** -- from the start to the last token event of a completed stream.
* **interruption rate** -- streams that started (status 200) but did not reach the
  stream's terminal event (cut, stalled, in-stream error), over streams that started.
* **attempts per answer** -- requests sent per completed answer (retry amplification).
* **goodput** -- answers completed within the TTFT and TTLT objectives, over answers
  asked. An answer's times run from its *first* attempt's start, retries included:
  that is what the person waiting sees.

Every total is a sum or a histogram of rounded values, so the totals of Locust
workers merge on the master by addition (as Locust merges its own response times).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "INTERRUPTIONS",
    "Answer",
    "Attempt",
    "Histogram",
    "LoadStats",
    "ProfileStats",
    "percentiles",
]

INTERRUPTIONS = frozenset({"reset", "close", "stall", "stream_error", "timeout", "upstream_cut"})
"""Outcomes of a stream that started and did not finish."""

PERCENTILES = (0.5, 0.9, 0.99)
# The fields of ProfileStats that merge, travel and come back as they are.
_HISTOGRAMS = ("ttft", "itl", "tpot", "ttlt")
_COUNTS = (
    "streams",
    "started",
    "completed",
    "interrupted",
    "answers",
    "answers_completed",
    "answers_good",
    "tokens",
    "nbytes",
)


def _bucket(ms: float) -> float:
    """Round to about three significant digits (0.1 ms below 100 ms), as Locust rounds
    its response times, so a histogram stays small whatever the number of samples."""
    if ms < 100:
        return round(ms, 1)
    if ms < 1000:
        return float(round(ms))
    if ms < 10_000:
        return float(round(ms, -1))
    return float(round(ms, -2))


@dataclass
class Histogram:
    """Counts of millisecond values rounded to about three digits; merges by addition."""

    counts: Counter[float] = field(default_factory=Counter)
    total_ms: float = 0.0

    def add(self, ms: float) -> None:
        self.counts[_bucket(ms)] += 1
        self.total_ms += ms

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: Histogram) -> None:
        self.counts.update(other.counts)
        self.total_ms += other.total_ms

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (``q`` in 0..1); None without samples."""
        n = self.count
        if not n:
            return None
        rank = max(1, math.ceil(q * n))
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= rank:
                return value
        return max(self.counts)

    def summary(self) -> dict[str, float | int | None]:
        """``p50``, ``p90``, ``p99`` (the contract), plus ``mean``, ``max`` and ``count``."""
        n = self.count
        out: dict[str, float | int | None] = {
            f"p{round(q * 100)}": self.percentile(q) for q in PERCENTILES
        }
        out["mean"] = round(self.total_ms / n, 2) if n else None
        out["max"] = max(self.counts) if n else None
        out["count"] = n
        return out

    def to_wire(self) -> dict[str, Any]:
        """A JSON- and msgpack-safe form (pairs, since map keys must be strings)."""
        return {"pairs": [[k, v] for k, v in self.counts.items()], "total_ms": self.total_ms}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Histogram:
        h = cls(Counter({float(k): int(v) for k, v in data["pairs"]}), float(data["total_ms"]))
        return h

    def values(self) -> list[float]:
        """Every sample (rounded), for plotting."""
        return [v for v, n in sorted(self.counts.items()) for _ in range(n)]


@dataclass(slots=True)
class Attempt:
    """One request of one user: what it got and when (seconds since its start)."""

    outcome: str
    """``complete``, an interruption (``reset``, ``close``, ``stall``, ``stream_error``,
    ``timeout``, ``upstream_cut``) or a refusal/failure (``http_429``, ``connect``...)."""
    started: float
    """Monotonic clock at the start."""
    status: int | None = None
    token_times: list[float] = field(default_factory=list)
    nbytes: int = 0
    retry_after_s: float | None = None
    ended: float = 0.0

    @property
    def began_streaming(self) -> bool:
        return self.status == 200

    @property
    def completed(self) -> bool:
        return self.outcome == "complete"

    @property
    def ttft_s(self) -> float | None:
        return self.token_times[0] if self.token_times else None


@dataclass(slots=True)
class Answer:
    """What a user asked once: its attempts, in order."""

    attempts: list[Attempt]

    @property
    def completed(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].completed

    def ttft_s(self) -> float | None:
        """From the first attempt's start to the first token of the completed attempt."""
        last = self.attempts[-1]
        if not self.completed or last.ttft_s is None:
            return None
        return last.started + last.ttft_s - self.attempts[0].started

    def ttlt_s(self) -> float | None:
        last = self.attempts[-1]
        if not self.completed or not last.token_times:
            return None
        return last.started + last.token_times[-1] - self.attempts[0].started


@dataclass
class ProfileStats:
    """Totals of one profile (or all of them); every field merges by addition."""

    ttft: Histogram = field(default_factory=Histogram)
    itl: Histogram = field(default_factory=Histogram)
    tpot: Histogram = field(default_factory=Histogram)
    ttlt: Histogram = field(default_factory=Histogram)
    streams: int = 0
    started: int = 0
    completed: int = 0
    interrupted: int = 0
    answers: int = 0
    answers_completed: int = 0
    answers_good: int = 0
    tokens: int = 0
    nbytes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    timeline: dict[int, list[int]] = field(default_factory=dict)
    """Wall-clock second -> [open streams (sampled), errors, completed streams, tokens]."""

    def add_attempt(self, a: Attempt, wall_end: float) -> None:
        self.streams += 1
        self.nbytes += a.nbytes
        self.tokens += len(a.token_times)
        sec = self._sec(int(wall_end))
        sec[3] += len(a.token_times)
        if a.token_times:
            self.ttft.add(a.token_times[0] * 1000.0)
            for before, after in zip(a.token_times, a.token_times[1:], strict=False):
                self.itl.add((after - before) * 1000.0)
            if len(a.token_times) > 1:
                span = a.token_times[-1] - a.token_times[0]
                self.tpot.add(span * 1000.0 / (len(a.token_times) - 1))
        if a.began_streaming:
            self.started += 1
        if a.completed:
            self.completed += 1
            sec[2] += 1
            if a.token_times:
                self.ttlt.add(a.token_times[-1] * 1000.0)
            return
        self.errors[a.outcome] += 1
        sec[1] += 1
        if a.began_streaming and a.outcome in INTERRUPTIONS:
            self.interrupted += 1

    def add_answer(
        self, answer: Answer, ttft_slo_ms: float | None, ttlt_slo_ms: float | None
    ) -> None:
        self.answers += 1
        if not answer.completed:
            return
        self.answers_completed += 1
        ttft, ttlt = answer.ttft_s(), answer.ttlt_s()
        good = not (
            ttft_slo_ms is not None and (ttft is None or ttft * 1000.0 > ttft_slo_ms)
        ) and not (ttlt_slo_ms is not None and (ttlt is None or ttlt * 1000.0 > ttlt_slo_ms))
        self.answers_good += good

    def sample_open(self, wall: float, open_streams: int) -> None:
        self._sec(int(wall))[0] = open_streams

    def _sec(self, second: int) -> list[int]:
        row = self.timeline.get(second)
        if row is None:
            row = self.timeline[second] = [0, 0, 0, 0]
        return row

    def merge(self, other: ProfileStats) -> None:
        for name in _HISTOGRAMS:
            getattr(self, name).merge(getattr(other, name))
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        for second, row in other.timeline.items():
            mine = self._sec(second)
            for i, value in enumerate(row):
                mine[i] += value

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {n: getattr(self, n).to_wire() for n in _HISTOGRAMS}
        for name in _COUNTS:
            out[name] = getattr(self, name)
        out["errors"] = dict(self.errors)
        out["timeline"] = [[s, *row] for s, row in self.timeline.items()]
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ProfileStats:
        stats = cls()
        for name in _HISTOGRAMS:
            setattr(stats, name, Histogram.from_wire(data[name]))
        for name in _COUNTS:
            setattr(stats, name, int(data[name]))
        stats.errors = Counter({str(k): int(v) for k, v in data["errors"].items()})
        stats.timeline = {int(row[0]): [int(x) for x in row[1:]] for row in data["timeline"]}
        return stats

    def summary(self, duration_s: float) -> dict[str, Any]:
        """The JSON contract's block for this profile, plus rates and counts."""
        span = max(duration_s, 1e-9)
        return {
            "streams": self.streams,
            "ttft_ms": self.ttft.summary(),
            "itl_ms": self.itl.summary(),
            "tpot_ms": self.tpot.summary(),
            "ttlt_ms": self.ttlt.summary(),
            "interruption_rate": _ratio(self.interrupted, self.started),
            "goodput": _ratio(self.answers_good, self.answers),
            "attempts_per_answer": _ratio(self.streams, self.answers_completed),
            "errors": dict(sorted(self.errors.items())),
            "error_rate": _ratio(sum(self.errors.values()), self.streams),
            "started": self.started,
            "completed": self.completed,
            "interrupted": self.interrupted,
            "answers": self.answers,
            "answers_completed": self.answers_completed,
            "answers_good": self.answers_good,
            "tokens": self.tokens,
            "bytes": self.nbytes,
            "tokens_per_s": round(self.tokens / span, 2),
            "requests_per_s": round(self.streams / span, 2),
        }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class LoadStats:
    """Totals per profile; ``overall`` merges them."""

    profiles: dict[str, ProfileStats] = field(default_factory=dict)

    def of(self, profile: str) -> ProfileStats:
        stats = self.profiles.get(profile)
        if stats is None:
            stats = self.profiles[profile] = ProfileStats()
        return stats

    def overall(self) -> ProfileStats:
        total = ProfileStats()
        for stats in self.profiles.values():
            total.merge(stats)
        return total

    def merge(self, other: LoadStats) -> None:
        for name, stats in other.profiles.items():
            self.of(name).merge(stats)

    def drain(self) -> LoadStats:
        """Hand over everything gathered so far and start empty (a worker's report)."""
        out = LoadStats(self.profiles)
        self.profiles = {}
        return out

    def to_wire(self) -> dict[str, Any]:
        return {name: stats.to_wire() for name, stats in self.profiles.items()}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> LoadStats:
        return cls({str(n): ProfileStats.from_wire(d) for n, d in data.items()})


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99 of raw millisecond values, through the same histogram."""
    h = Histogram()
    for v in values:
        h.add(v)
    return {k: v for k, v in h.summary().items() if k in ("p50", "p90", "p99")}
