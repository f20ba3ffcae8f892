"""Issue 17's measures: cost as streams grow, first-byte fidelity, armed-not-firing, Toxiproxy.

- **scaling**: 100 / 1,000 / 3,000 paced streams at the same total event rate, per
  proxy: CPU per 1e5 events (flat is the goal), p99 added latency (against direct in
  the same round) and the ratios the issue asks for (x minimal, 3,000 / 100).
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


def split_cost(small: dict[str, Any], large: dict[str, Any]) -> tuple[float, float] | None:
    """CPU µs per event and per stream, from two runs of one proxy at the same total rate.

    A run's CPU is ``events * e + streams * s``: the cost of relaying an event, and the
    fixed cost of a stream (two TCP connections, two heads, the exchange record). The
    100- and 3,000-stream runs carry the same events on 30x as many streams, so the two
    equations give both; the "flat" ratio is then ``(e + s / 20) / (e + s / 600)`` at
    600 and 20 events per stream, whatever the proxy.
    """
    points = []
    for run in (small, large):
        cpu = run.get("proxy", {}).get("cpu_s")
        streams, events = run.get("load", {}).get("streams"), run.get("client", {}).get("events")
        if cpu is None or not streams or not events:
            return None
        points.append((events, streams, cpu))
    (e1, n1, c1), (e2, n2, c2) = points
    det = e1 * n2 - e2 * n1
    if not det:
        return None
    per_event = (c1 * n2 - c2 * n1) / det
    per_stream = (e1 * c2 - e2 * c1) / det
    return per_event * 1e6, per_stream * 1e6


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
        "| p99 added x minimal at 1,000 / 3,000 | CPU us per event / per stream | errors |",
        "|---|---|---|---|---|---|---|---|",
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
        splits = [
            split_cost(r.get("100", {}).get(mode, {}), r.get("3000", {}).get(mode, {}))
            for r in rounds
        ]
        per_event = _median([x[0] if x else None for x in splits])
        per_stream = _median([x[1] if x else None for x in splits])
        rows.append(
            f"| {mode} | {' / '.join(_fmt(c, 2) for c in cpu)} | {_fmt(flat, 2, 'x')} "
            f"| {_fmt(ratio('1000', mode, 'aiohttp-minimal', _cpu), 2, 'x')} / "
            f"{_fmt(ratio('3000', mode, 'aiohttp-minimal', _cpu), 2, 'x')} "
            f"| {' / '.join(_fmt(x, 0) for x in lat)} "
            f"| {' / '.join(_fmt(x, 2, 'x') for x in lat_ratio)} "
            f"| {_fmt(per_event, 1)} / {_fmt(per_stream, 0)} "
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
    """``python -m bench.scaling [--quick] [--rounds N]``: these two tables alone."""
    import argparse

    from bench.__main__ import RESULTS

    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="4 s runs, one round.")
    parser.add_argument("--rounds", type=int, help="Interleaved rounds (default 3, quick 1).")
    parser.add_argument(
        "--rate", type=float, default=6000.0, help="Total events/s (default 6,000)."
    )
    parser.add_argument("--modes", nargs="*", help="Only these proxies.")
    parser.add_argument("--only", nargs="*", choices=["scaling", "first_byte"])
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    parts = args.only or ["scaling", "first_byte"]
    results: dict[str, Any] = {}
    lines: list[str] = []
    started = time.monotonic()
    if "scaling" in parts:
        results["scaling"] = scaling(args.rate, 4.0 if args.quick else 10.0, rounds, args.modes)
        lines += [*scaling_table(results["scaling"]), ""]
    if "first_byte" in parts:
        results["first_byte"] = first_byte(1000, rounds, args.modes)
        lines += first_byte_table(results["first_byte"])
    results["wall_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling-latest.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
