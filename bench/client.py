"""The load generator: N concurrent streaming requests, per-event latency from embedded stamps.

Each event from :mod:`bench.upstream` carries ``"t":<time_ns>`` of its send; the
client stamps every read with its own ``time.time_ns()`` (same host, same
clock) and keeps, per event, receive time minus send time. It prints one JSON
object with percentiles on stdout.

Run: ``python -m bench.client --url URL --streams 50 --events 2000 [--rate 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import time
from array import array
from collections import Counter
from typing import Any

import aiohttp

from bench._loop import have_uvloop, run

STAMP = re.compile(rb'"t":(\d+)\}')
BODY = json.dumps(
    {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
).encode()
#: --traceparent: each stream sends a W3C traceparent of its own trace (bench.otel).
TRACEPARENT = False


class Stats:
    """Everything measured over one run, in nanoseconds unless named otherwise."""

    def __init__(self) -> None:
        self.latency = array("q")
        self.steady = array("q")
        """Latencies of events sent after every stream started and before the first ended."""
        self.window = (0, 0)
        self.first_latency = array("q")
        self.ttft = array("q")
        self.gaps = array("q")
        self.counts: list[int] = []
        self.rates: list[float] = []
        """Per stream: events per second from its first to its last event."""
        self.errors: Counter[str] = Counter()
        self.first_ns = 0
        self.last_ns = 0


async def one_stream(
    session: aiohttp.ClientSession, url: str, stats: Stats, delay: float, keep_gaps: bool
) -> None:
    """Run one stream; record its events' latencies, its gaps and how many events arrived."""
    await asyncio.sleep(delay)
    now_ns = time.time_ns
    count = 0
    prev = first = 0
    tail = b""
    headers = {"Content-Type": "application/json"}
    if TRACEPARENT:
        headers["traceparent"] = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    sent = now_ns()
    try:
        async with session.post(url, data=BODY, headers=headers) as r:
            read = r.content.readany
            while data := await read():
                got = now_ns()
                if tail:
                    data = tail + data
                cut = data.rfind(b"\n\n") + 2
                tail = data[cut:]
                stamps = STAMP.findall(data, 0, cut)
                if not stamps:
                    continue
                if count == 0:
                    first = got
                    stats.ttft.append(got - sent)
                    stats.first_latency.append(got - int(stamps[0]))
                lo, hi = stats.window
                for s in stamps:
                    t = int(s)
                    stats.latency.append(got - t)
                    if lo <= t <= hi:
                        stats.steady.append(got - t)
                if keep_gaps and prev:
                    stats.gaps.append(got - prev)
                    stats.gaps.extend([0] * (len(stamps) - 1))
                prev = got
                count += len(stamps)
                stats.last_ns = got
            if r.status != 200:
                stats.errors[f"status {r.status}"] += 1
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        stats.errors[type(e).__name__] += 1
    stats.counts.append(count)
    if count > 1 and prev > first:
        stats.rates.append((count - 1) / ((prev - first) / 1e9))


def pct(
    values: Any, qs: tuple[float, ...] = (50, 90, 99, 99.9), scale: float = 1e6
) -> dict[str, float]:
    """Percentiles (nearest rank, ns -> ms by default) plus the max; empty when no values."""
    if not len(values):
        return {}
    ordered = sorted(values)
    n = len(ordered)
    out = {f"p{q:g}": ordered[min(n - 1, int(q / 100 * n))] / scale for q in qs}
    out["max"] = ordered[-1] / scale
    return out


async def load(args: argparse.Namespace) -> dict[str, Any]:
    """Run all streams, return the summary."""
    stats = Stats()
    path = f"/v1/chat/completions?events={args.events}&rate={args.rate}"
    base = args.url.rstrip("/")
    # --scopes N: stream i names scope s<i mod N> by the base-URL prefix (docs/fleet.md).
    urls = [
        f"{base}/~/s{i % args.scopes}{path}" if args.scopes else base + path
        for i in range(args.streams)
    ]
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        stats.first_ns = time.time_ns()
        ramp = args.ramp_s / max(1, args.streams)
        if args.rate:
            # Steady state: from 0.5 s after the last stream started to 0.5 s
            # before the first one ends (connection set-up and teardown excluded).
            lo = stats.first_ns + int((args.ramp_s + 0.5) * 1e9)
            hi = stats.first_ns + int((args.events / args.rate - 0.5) * 1e9)
            stats.window = (lo, hi)
        await asyncio.gather(
            *(one_stream(session, urls[i], stats, i * ramp, args.gaps) for i in range(args.streams))
        )
    wall = (stats.last_ns - stats.first_ns) / 1e9 if stats.last_ns else 0.0
    counts = Counter(stats.counts)
    return {
        "streams": args.streams,
        "events_per_stream": args.events,
        "rate": args.rate,
        "events": len(stats.latency),
        "wall_s": round(wall, 3),
        "events_per_s": round(len(stats.latency) / wall, 1) if wall else 0.0,
        "latency_ms": pct(stats.latency),
        "steady_latency_ms": pct(stats.steady),
        "first_event_latency_ms": pct(stats.first_latency),
        "ttft_ms": pct(stats.ttft),
        "gap_ms": pct(stats.gaps),
        "stream_rate": pct(stats.rates, (1, 50, 99), scale=1.0),
        "counts": {str(k): v for k, v in sorted(counts.items())},
        "errors": dict(stats.errors),
    }


def main() -> None:
    """Command line entry: print the run's JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=0.0, help="Events/s per stream; 0 = max.")
    parser.add_argument("--ramp-s", type=float, default=0.0, help="Spread stream starts.")
    parser.add_argument("--gaps", action="store_true", help="Keep inter-arrival gaps.")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--scopes", type=int, default=0, help="Spread streams over N scopes.")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--traceparent", action="store_true", help="A traceparent per stream.")
    args = parser.parse_args()
    global TRACEPARENT
    TRACEPARENT = args.traceparent
    result = run(load(args), use_uvloop=have_uvloop() and not args.no_uvloop)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
