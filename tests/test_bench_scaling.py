"""bench/scaling.py: what one more event and one more stream cost, from pairs of runs."""

from __future__ import annotations

from typing import Any

from bench.scaling import flat_from, marginal_cost, marginal_table


def run(streams: int, events: int, cpu_s: float) -> dict[str, Any]:
    """A measured run as bench.__main__.measure returns it (the fields marginal_cost reads)."""
    return {
        "load": {"streams": streams, "events": events // streams},
        "client": {"events": events, "errors": {}},
        "proxy": {"cpu_s": cpu_s},
    }


def pair(streams: int, per_event_us: float, per_stream_us: float) -> list[dict[str, Any]]:
    """Short (4 s) and long (14 s) streams at 6,000 events/s over ``streams``, costed exactly."""
    out = []
    for seconds in (4, 14):
        events = 6000 * seconds
        cpu = (events * per_event_us + streams * per_stream_us) / 1e6
        out.append(run(streams, events, cpu))
    return out


def test_a_pair_of_runs_gives_the_cost_of_an_event_and_of_a_stream() -> None:
    """16 us an event and 220 us a stream at 3,000 streams: 24,000 and 84,000 events cost
    1.044 s and 2.004 s; the pair gives both back."""
    short, long = pair(3000, 16.0, 220.0)
    assert abs(short["proxy"]["cpu_s"] - 1.044) < 1e-9
    got = marginal_cost(short, long)
    assert got is not None
    assert abs(got[0] - 16.0) < 1e-6 and abs(got[1] - 220.0) < 1e-6


def test_a_failed_or_mismatched_pair_gives_nothing() -> None:
    """A run without CPU (it failed), two stream counts, or no more events: no answer."""
    short, long = pair(3000, 16.0, 220.0)
    assert marginal_cost({"error": "proxy died"}, long) is None
    assert marginal_cost(short, run(100, 84_000, 2.0)) is None
    assert marginal_cost(long, short) is None


def test_flat_from_is_the_stream_length_where_the_ratio_reaches_the_goal() -> None:
    """At the length flat_from names, 30x the streams at the same total rate cost exactly
    1.2x per event; longer streams less, and an event dearer by 1.2x already never gets there."""
    e_small, e_large, s = 15.0, 16.0, 220.0
    n = flat_from(e_small, e_large, s)
    assert n is not None

    def ratio(events_per_stream: float) -> float:
        large = e_large + s / events_per_stream
        small = e_small + s / (30 * events_per_stream)
        return large / small

    assert abs(ratio(n) - 1.2) < 1e-9
    assert ratio(2 * n) < 1.2 < ratio(n / 2)
    assert flat_from(10.0, 12.0, s) is None


def test_the_table_reads_medians_and_ratios_within_rounds() -> None:
    """Two rounds, two proxies: the table's per-event and per-stream costs are the medians,
    its x minimal the within-round ratio, and a failed run is counted, not hidden."""
    costs = {"aiohttp-minimal": (25.0, 450.0), "chaosstream+uvloop": (16.0, 220.0)}
    rounds = []
    for _ in range(2):
        rounds.append(
            {
                str(n): {mode: pair(n, e, s) for mode, (e, s) in costs.items()}
                for n in (100, 1000, 3000)
            }
        )
    rounds[1]["3000"]["chaosstream+uvloop"][1] = {"mode": "chaosstream+uvloop", "error": "boom"}
    result = {"total_rate": 6000.0, "lengths_s": [4.0, 14.0], "rounds": rounds}
    rows = {r.split(" | ")[0].lstrip("| "): r for r in marginal_table(result) if r.startswith("| ")}
    mine = rows["chaosstream+uvloop"]
    assert "| 16.0 / 16.0 / 16.0 | 1.00x | 0.64x / 0.64x | 220 / 220 |" in mine, mine
    assert "(1 runs failed)" in mine
    n = flat_from(16.0, 16.0, 220.0)
    assert n is not None and f"{n:,.0f} events per stream" in mine
    assert "| 25.0 / 25.0 / 25.0 | 1.00x | 1.00x / 1.00x | 450 / 450 |" in rows["aiohttp-minimal"]
