"""bench/scaling.py: a proxy's CPU split into a cost per event and a cost per stream."""

from __future__ import annotations

from typing import Any

from bench.scaling import split_cost


def run(streams: int, events: int, cpu_s: float) -> dict[str, Any]:
    """A measured run as bench.__main__.measure returns it (the fields split_cost reads)."""
    return {
        "load": {"streams": streams, "events": events // streams},
        "client": {"events": events},
        "proxy": {"cpu_s": cpu_s},
    }


def test_the_two_runs_give_the_cost_of_an_event_and_of_a_stream() -> None:
    """10 us an event and 100 us a stream: 60,000 events cost 0.61 s on 100 streams and
    0.9 s on 3,000; the split gives both back, and with them the 3,000 / 100 ratio."""
    small, large = run(100, 60_000, 0.61), run(3000, 60_000, 0.9)
    split = split_cost(small, large)
    assert split is not None
    per_event, per_stream = split
    assert abs(per_event - 10.0) < 1e-6 and abs(per_stream - 100.0) < 1e-6
    flat = (per_event + per_stream / 20) / (per_event + per_stream / 600)
    assert abs(flat - 0.9 / 0.61) < 1e-9


def test_a_failed_or_degenerate_run_gives_no_split() -> None:
    """A run without CPU (it failed) or two runs with the same shape cannot be solved."""
    assert split_cost({"error": "proxy died"}, run(3000, 60_000, 0.9)) is None
    assert split_cost(run(100, 60_000, 0.6), run(100, 60_000, 0.7)) is None
