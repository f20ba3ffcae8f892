"""Issue 17's measures: cost as streams grow, first-byte fidelity, armed-not-firing, Toxiproxy.

- **scaling**: 100 / 1,000 / 3,000 paced streams at the same total event rate, per
  proxy: CPU per 1e5 events (flat is the goal), p99 added latency (against direct in
  the same round) and the ratios the issue asks for (x minimal, 3,000 / 100).
- **marginal**: the same, each stream count run twice with streams of 4 s and 14 s:
  the extra CPU over the extra events is what one more event costs at that
  concurrency, and the short run's rest, per stream, what a stream costs.
- **armed**: ``chaosstream armed`` runs a stream-aware fault that is armed on every
  stream but never fires (``disconnect after_events: 1e9``); its CPU over clean's.
- **first byte**: ``latency first_byte_ms: 300`` with 1,000 streams starting at the
  same instant (no ramp): first event p50 / p99 against the setting.
- **toxiproxy**: ``BENCH_TOXIPROXY=/path/to/toxiproxy-server`` adds Toxiproxy as a
  contender (its latency toxic for the first-byte run); the bench never builds or
  downloads it.
- ``BENCH_UNTUNED=1`` adds ``chaosstream+uvloop untuned``: the listen backlog and GC
  thresholds as they were before issue 17, in the same rounds.

Rounds are interleaved (every proxy once per round, then the next round) and the
table shows medians: on a shared machine, ratios within a round are what count.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import urllib.request
from typing import Any

from bench._loop import have_uvloop

#: A stream-aware fault armed on every stream that never fires.
ARMED = json.dumps({"faults": [{"type": "disconnect", "after_events": 10**9}]})
FIRST_BYTE = json.dumps({"faults": [{"type": "latency", "first_byte_ms": 300}]})


def toxiproxy_path() -> str | None:
    """``$BENCH_TOXIPROXY``: a toxiproxy-server binary the user built or installed."""
    path = os.environ.get("BENCH_TOXIPROXY")
    return path if path and os.access(path, os.X_OK) else None


def toxic_for(profile: str) -> dict[str, Any] | None:
    """Toxiproxy's nearest toxic for a bench profile: ``latency`` for a first-byte delay.

    Toxiproxy's latency toxic delays every chunk by the same amount from its arrival,
    so on the first event it is the same delay as ``first_byte_ms``.
    """
    for fault in json.loads(profile).get("faults", []):
        if fault.get("type") == "latency" and fault.get("first_byte_ms"):
            attributes = {"latency": fault["first_byte_ms"], "jitter": 0}
            return {"type": "latency", "stream": "downstream", "attributes": attributes}
    return None


def start_toxiproxy(upstream_port: int, toxic: dict[str, Any] | None = None) -> tuple[Any, int]:
    """Start toxiproxy-server, create one proxy to the upstream (and a toxic); its port."""
    from bench.__main__ import free_port, start

    path = toxiproxy_path()
    assert path is not None
    api, listen = free_port(), free_port()
    proc = start([path, "-host", "127.0.0.1", "-port", str(api)], api)
    base = f"http://127.0.0.1:{api}"

    def post(url: str, body: dict[str, Any]) -> None:
        req = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    post(
        f"{base}/proxies",
        {
            "name": "bench",
            "listen": f"127.0.0.1:{listen}",
            "upstream": f"127.0.0.1:{upstream_port}",
        },
    )
    if toxic is not None:
        post(f"{base}/proxies/bench/toxics", toxic)
    return proc, listen


def run_one(mode: str, load: Any, profile: str = "{}") -> dict[str, Any]:
    """``measure`` from bench.__main__, with ``toxiproxy`` and ``chaosstream armed`` modes."""
    from bench.__main__ import measure

    if mode.endswith(" no fault"):  # the same load through the same proxy, clean
        out = measure(mode.removesuffix(" no fault"), load, "{}")
        out["mode"] = mode
        return out
    if mode == "chaosstream armed":
        out = measure("chaosstream+uvloop" if have_uvloop() else "chaosstream", load, ARMED)
        out["mode"] = mode
        return out
    return measure(mode, load, profile)


def scaling_modes(only: list[str] | None) -> list[str]:
    """Contenders of the scaling table (direct is the latency baseline)."""
    modes = ["direct", "aiohttp-minimal", "python-floor", "chaosstream"]
    if have_uvloop():
        modes.append("chaosstream+uvloop")
    modes.append("chaosstream armed")
    if have_uvloop() and os.environ.get("BENCH_UNTUNED"):
        # Before issue 17's settings (backlog 128, CPython's GC thresholds), same run.
        modes.append("chaosstream+uvloop untuned")
    if toxiproxy_path():
        modes.append("toxiproxy")
    return [m for m in modes if not only or m in only or m == "direct"]


def scaling(
    total_rate: float, seconds: float, rounds: int, only: list[str] | None = None
) -> dict[str, Any]:
    """Every contender at 100 / 1,000 / 3,000 streams sharing ``total_rate`` events/s."""
    from bench.__main__ import Load

    out: dict[str, Any] = {"total_rate": total_rate, "seconds": seconds, "rounds": []}
    for r in range(rounds):
        this: dict[str, Any] = {}
        for streams in (100, 1000, 3000):
            rate = total_rate / streams
            load = Load(f"scale-{streams}", streams, max(2, round(rate * seconds)), rate, 1.0)
            for mode in scaling_modes(only):
                print(
                    f"[bench] scaling r{r + 1}: {streams} {mode} ...", file=sys.stderr, flush=True
                )
                try:
                    this.setdefault(str(streams), {})[mode] = run_one(mode, load)
                except Exception as e:  # a failed proxy is a result, not a crash
                    this.setdefault(str(streams), {})[mode] = {"mode": mode, "error": str(e)[:300]}
        out["rounds"].append(this)
    return out


#: Stream lengths (seconds) of a marginal pair: same streams and rate, 3.5x the events.
MARGINAL_S = (4.0, 14.0)


def marginal(
    total_rate: float,
    rounds: int,
    only: list[str] | None = None,
    lengths: tuple[float, float] = MARGINAL_S,
) -> dict[str, Any]:
    """Every proxy at 100 / 1,000 / 3,000 streams sharing ``total_rate`` events/s, each
    twice: streams lasting ``lengths[0]`` and ``lengths[1]`` seconds (``marginal_cost``)."""
    from bench.__main__ import Load

    out: dict[str, Any] = {"total_rate": total_rate, "lengths_s": list(lengths), "rounds": []}
    modes = [m for m in scaling_modes(only) if m != "direct"]
    for r in range(rounds):
        this: dict[str, Any] = {}
        for streams in (100, 1000, 3000):
            rate = total_rate / streams
            for mode in modes:
                pair = []
                for seconds in lengths:
                    print(
                        f"[bench] marginal r{r + 1}: {streams} {mode}, {seconds:g} s streams ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    load = Load(
                        f"marginal-{streams}-{seconds:g}s",
                        streams,
                        max(2, round(rate * seconds)),
                        rate,
                        1.0,
                    )
                    try:
                        pair.append(run_one(mode, load))
                    except Exception as e:  # a failed proxy is a result, not a crash
                        pair.append({"mode": mode, "error": str(e)[:300]})
                this.setdefault(str(streams), {})[mode] = pair
        out["rounds"].append(this)
    return out


def first_byte(streams: int, rounds: int, only: list[str] | None = None) -> dict[str, Any]:
    """``first_byte_ms: 300`` with every stream starting at once; Toxiproxy's latency toxic."""
    from bench.__main__ import Load

    load = Load("first-byte-burst", streams, 10, rate=20, ramp_s=0.0)
    modes = ["chaosstream"] + (["chaosstream+uvloop"] if have_uvloop() else [])
    if have_uvloop() and os.environ.get("BENCH_UNTUNED"):
        modes.append("chaosstream+uvloop untuned")
    if toxiproxy_path():
        modes.append("toxiproxy")
    modes = [m for m in modes if not only or m in only]
    # What the same start-up costs with no delay at all: the part of the error that is load.
    modes += ["direct", f"{modes[-1]} no fault"] if modes else []
    out: dict[str, Any] = {"streams": streams, "setting_ms": 300.0, "rounds": []}
    for r in range(rounds):
        this: dict[str, Any] = {}
        for mode in modes:
            print(f"[bench] first byte r{r + 1}: {mode} ...", file=sys.stderr, flush=True)
            try:
                client = run_one(mode, load, FIRST_BYTE)["client"]
                # TTFT (from the request) shows what the first event's latency does not:
                # a connection the listen queue dropped waits a SYN retransmit (1 s) first.
                ttft = client["ttft_ms"]
                this[mode] = {**client["first_event_latency_ms"], "ttft": ttft}
            except Exception as e:
                this[mode] = {"error": str(e)[:300]}
        out["rounds"].append(this)
    return out


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _cpu(run: dict[str, Any]) -> float | None:
    value = run.get("proxy", {}).get("cpu_s_per_1e5_events")
    return float(value) if value else None


def _p99(run: dict[str, Any]) -> float | None:
    value = run.get("client", {}).get("latency_ms", {}).get("p99")
    return float(value) if value is not None else None


def marginal_cost(short: dict[str, Any], long: dict[str, Any]) -> tuple[float, float] | None:
    """CPU µs per event and per stream, from two runs of one proxy at one concurrency.

    The runs differ only in how many events each stream carries (same streams, same
    rate per stream), so their CPU difference over their event difference is the cost
    of one more event at that concurrency, and what the short run's CPU leaves once
    its events are paid, per stream, is the fixed cost of a stream (two TCP
    connections, two heads, the exchange record). Unlike solving two stream counts
    together, this assumes nothing about how an event's cost varies with the count.
    """
    points = []
    for run in (short, long):
        cpu = run.get("proxy", {}).get("cpu_s")
        streams, events = run.get("load", {}).get("streams"), run.get("client", {}).get("events")
        if cpu is None or not streams or not events:
            return None
        points.append((events, streams, cpu))
    (e1, n1, c1), (e2, n2, c2) = points
    if n1 != n2 or e2 <= e1:
        return None
    per_event = (c2 - c1) / (e2 - e1)
    per_stream = (c1 - per_event * e1) / n1
    return per_event * 1e6, per_stream * 1e6


def flat_from(
    event_small: float, event_large: float, per_stream: float, more: float = 30.0, goal: float = 1.2
) -> float | None:
    """Events per stream (at the large count) from which ``more`` x the streams at the
    same total rate cost at most ``goal`` x per event; None when no length is enough.

    Over one run length, streams of ``n`` events at the large count carry ``more * n``
    at the small one, so an event costs ``e_large + s / n`` and ``e_small + s / (more * n)``
    (``s``: a stream's cost); the ratio is within ``goal`` once
    ``n >= s * (1 - goal / more) / (goal * e_small - e_large)``.
    """
    room = goal * event_small - event_large
    if room <= 0:
        return None
    return max(0.0, per_stream * (1 - goal / more) / room)


def scaling_table(result: dict[str, Any]) -> list[str]:
    """Medians over rounds: CPU per 1e5 events and p99 added latency, with the goals' ratios."""
    rounds = result["rounds"]
    scales = ["100", "1000", "3000"]
    modes = [m for m in rounds[0].get("100", {}) if m != "direct"]

    def per_round(streams: str, mode: str, pick: Any) -> list[float | None]:
        return [pick(r.get(streams, {}).get(mode, {})) for r in rounds]

    def ratio(streams: str, mode: str, base: str, pick: Any) -> float | None:
        """Median over rounds of the within-round ratio mode / base."""
        values = []
        for r in rounds:
            a, b = pick(r.get(streams, {}).get(mode, {})), pick(r.get(streams, {}).get(base, {}))
            if a is not None and b:
                values.append(a / b)
        return statistics.median(values) if values else None

    def added(run: dict[str, Any], direct: dict[str, Any]) -> float | None:
        a, b = _p99(run), _p99(direct)
        return None if a is None or b is None else a - b

    rows = [
        f"Same total rate ({result['total_rate']:,.0f} events/s) over 100 / 1,000 / 3,000 paced "
        f"streams, {result['seconds']:g} s, median of {len(rounds)} interleaved round(s).",
        "",
        "| proxy | CPU s per 1e5 events 100 / 1,000 / 3,000 | 3,000 / 100 "
        "| x minimal at 1,000 / 3,000 | p99 added ms 100 / 1,000 / 3,000 "
        "| p99 added x minimal at 1,000 / 3,000 | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        cpu = [_median(per_round(s, mode, _cpu)) for s in scales]
        flat = None
        flats = [
            (c3 / c1)
            for c1, c3 in zip(
                per_round("100", mode, _cpu), per_round("3000", mode, _cpu), strict=True
            )
            if c1 and c3
        ]
        if flats:
            flat = statistics.median(flats)
        lat = []
        for s in scales:
            lat.append(
                _median(
                    [
                        added(r.get(s, {}).get(mode, {}), r.get(s, {}).get("direct", {}))
                        for r in rounds
                    ]
                )
            )
        lat_ratio = []
        for s in ("1000", "3000"):
            vals = []
            for r in rounds:
                d = r.get(s, {}).get("direct", {})
                a, b = (
                    added(r.get(s, {}).get(mode, {}), d),
                    added(r.get(s, {}).get("aiohttp-minimal", {}), d),
                )
                if a is not None and b and b > 0:
                    vals.append(max(a, 0.0) / b)
            lat_ratio.append(statistics.median(vals) if vals else None)
        errors = sum(
            sum(r.get(s, {}).get(mode, {}).get("client", {}).get("errors", {}).values())
            for r in rounds
            for s in scales
        )
        failed = sum("error" in r.get(s, {}).get(mode, {}) for r in rounds for s in scales)
        rows.append(
            f"| {mode} | {' / '.join(_fmt(c, 2) for c in cpu)} | {_fmt(flat, 2, 'x')} "
            f"| {_fmt(ratio('1000', mode, 'aiohttp-minimal', _cpu), 2, 'x')} / "
            f"{_fmt(ratio('3000', mode, 'aiohttp-minimal', _cpu), 2, 'x')} "
            f"| {' / '.join(_fmt(x, 0) for x in lat)} "
            f"| {' / '.join(_fmt(x, 2, 'x') for x in lat_ratio)} "
            f"| {errors}{f' ({failed} runs failed)' if failed else ''} |"
        )
    armed = [ratio(s, "chaosstream armed", "chaosstream+uvloop", _cpu) for s in scales]
    if any(a is not None for a in armed) and have_uvloop():
        rows += [
            "",
            "Armed-but-not-firing stream-aware fault (`disconnect after_events: 1e9`, uvloop) over "
            "clean, CPU per event at 100 / 1,000 / 3,000: "
            + " / ".join(_fmt(a, 2, "x") for a in armed),
        ]
    return rows


def marginal_table(result: dict[str, Any]) -> list[str]:
    """Medians over rounds of what one more event and one more stream cost, per proxy."""
    rounds = result["rounds"]
    scales = ["100", "1000", "3000"]
    modes = list(rounds[0].get("100", {}))

    def costs(r: dict[str, Any], streams: str, mode: str) -> tuple[float, float] | None:
        pair = r.get(streams, {}).get(mode, [])
        return marginal_cost(pair[0], pair[1]) if len(pair) == 2 else None

    def event(r: dict[str, Any], streams: str, mode: str) -> float | None:
        got = costs(r, streams, mode)
        return got[0] if got else None

    def within(streams_a: str, mode_a: str, streams_b: str, mode_b: str) -> float | None:
        """Median over rounds of the within-round ratio of two events' costs."""
        values = []
        for r in rounds:
            a, b = event(r, streams_a, mode_a), event(r, streams_b, mode_b)
            if a is not None and b:
                values.append(a / b)
        return statistics.median(values) if values else None

    short, long = result["lengths_s"]
    rows = [
        f"One more event and one more stream: at each stream count, two runs at the same "
        f"total rate ({result['total_rate']:,.0f} events/s) with streams of {short:g} s and "
        f"{long:g} s; the extra CPU over the extra events is what an event costs at that "
        f"count, the short run's rest per stream what a stream costs; median of "
        f"{len(rounds)} interleaved round(s).",
        "",
        "| proxy | CPU us per event 100 / 1,000 / 3,000 | 3,000 / 100 "
        "| x minimal at 1,000 / 3,000 | CPU us per stream 1,000 / 3,000 "
        "| 3,000 / 100 within 1.2x from | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        per_event = [_median([event(r, s, mode) for r in rounds]) for s in scales]
        per_stream = [
            _median([(c[1] if (c := costs(r, s, mode)) else None) for r in rounds])
            for s in ("1000", "3000")
        ]
        e_small, e_large, s_large = per_event[0], per_event[2], per_stream[1]
        length = None
        if e_small is not None and e_large is not None and s_large is not None:
            length = flat_from(e_small, e_large, s_large)
        errors = 0
        failed = 0
        for r in rounds:
            for s in scales:
                for run in r.get(s, {}).get(mode, []):
                    errors += sum(run.get("client", {}).get("errors", {}).values())
                    failed += "error" in run
        rows.append(
            f"| {mode} | {' / '.join(_fmt(e, 1) for e in per_event)} "
            f"| {_fmt(within('3000', mode, '100', mode), 2, 'x')} "
            f"| {_fmt(within('1000', mode, '1000', 'aiohttp-minimal'), 2, 'x')} / "
            f"{_fmt(within('3000', mode, '3000', 'aiohttp-minimal'), 2, 'x')} "
            f"| {' / '.join(_fmt(x, 0) for x in per_stream)} "
            f"| {'-' if length is None else f'{length:,.0f} events per stream'} "
            f"| {errors}{f' ({failed} runs failed)' if failed else ''} |"
        )
    return rows


def first_byte_table(result: dict[str, Any]) -> list[str]:
    """First event latency p50 / p99 against the 300 ms setting, medians over rounds."""
    setting = result["setting_ms"]
    rows = [
        f"`latency first_byte_ms: 300`, {result['streams']:,} streams starting together "
        f"(median of {len(result['rounds'])} round(s)):",
        "",
        "| proxy | first event p50 / p99 ms | error p50 / p99 | TTFT p50 / p99 ms |",
        "|---|---|---|---|",
    ]
    for mode in result["rounds"][0]:
        p50 = _median([r.get(mode, {}).get("p50") for r in result["rounds"]])
        p99 = _median([r.get(mode, {}).get("p99") for r in result["rounds"]])
        err = "-"
        if p50 is not None and p99 is not None:
            err = f"{(p50 - setting) / setting:+.1%} / {(p99 - setting) / setting:+.1%}"
        t50 = _median([r.get(mode, {}).get("ttft", {}).get("p50") for r in result["rounds"]])
        t99 = _median([r.get(mode, {}).get("ttft", {}).get("p99") for r in result["rounds"]])
        rows.append(
            f"| {mode} | {_fmt(p50, 0)} / {_fmt(p99, 0)} | {err} "
            f"| {_fmt(t50, 0)} / {_fmt(t99, 0)} |"
        )
    return rows


def _fmt(x: float | None, digits: int, suffix: str = "") -> str:
    return "-" if x is None else f"{x:,.{digits}f}{suffix}"


def main() -> None:
    """``python -m bench.scaling [--quick] [--rounds N]``: these three tables alone."""
    import argparse

    from bench.__main__ import RESULTS

    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Short runs (scaling 4 s, marginal 2 and 6 s), one round.",
    )
    parser.add_argument("--rounds", type=int, help="Interleaved rounds (default 3, quick 1).")
    parser.add_argument(
        "--rate", type=float, default=6000.0, help="Total events/s (default 6,000)."
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="Length of the scaling runs (default 10, quick 4): streams carry rate x seconds "
        "events, 20 each at 3,000 streams by default.",
    )
    parser.add_argument("--modes", nargs="*", help="Only these proxies.")
    parser.add_argument("--only", nargs="*", choices=["scaling", "marginal", "first_byte"])
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    parts = args.only or ["scaling", "marginal", "first_byte"]
    results: dict[str, Any] = {}
    lines: list[str] = []
    started = time.monotonic()
    if "scaling" in parts:
        seconds = args.seconds or (4.0 if args.quick else 10.0)
        results["scaling"] = scaling(args.rate, seconds, rounds, args.modes)
        lines += [*scaling_table(results["scaling"]), ""]
    if "marginal" in parts:
        lengths = (2.0, 6.0) if args.quick else MARGINAL_S
        results["marginal"] = marginal(args.rate, rounds, args.modes, lengths)
        lines += [*marginal_table(results["marginal"]), ""]
    if "first_byte" in parts:
        results["first_byte"] = first_byte(1000, rounds, args.modes)
        lines += first_byte_table(results["first_byte"])
    results["wall_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling-latest.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
