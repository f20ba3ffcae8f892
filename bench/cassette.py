"""Cassette fidelity (issue 15): bytes, frame timing, and deterministic faults on replay.

1. Record a 200-frame stream at 50 frames/s from the embedded mock through a
   recording proxy (``proxy/cassette.py``).
2. Replay it through the proxy with ``clean``: the client's bytes must equal the
   recorded ones. The replay is recorded again by the same kind of tap, so each
   frame's time is measured where the original was (the proxy's upstream read,
   since the request): the error per frame is ``|t_replay - t_recorded|``, and the
   goal p50 <= 2 ms, p99 <= 10 ms.
3. Replay twice more through a profile whose faults act on stream positions
   (per-event jitter, dropped events, a probable cut) with one seed: the two fault
   logs (``FaultEvent.position()``: everything but the times) must be identical.
   Segment-level ``loss`` is left out: it draws per upstream read, and how bytes
   group into reads depends on the machine's timing, not the seed.

Run alone: ``python -m bench.cassette``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from chaosstream.faults.profile import load_profile, profile_from_data
from chaosstream.mock import MockSettings, start_mock
from chaosstream.mock.cassette import start_replay
from chaosstream.proxy.cassette import CassetteTap
from chaosstream.proxy.server import ChaosProxy
from chaosstream.streams.cassette import Player, load_cassette
from chaosstream.streams.sse import SSE_FRAMER

FAULTY = {
    "version": 1,
    "name": "bench-positions",
    "faults": [
        {"type": "latency", "per_event_ms": 1, "jitter_ms": 1},
        {"type": "corrupt", "action": "drop_event", "rate": 0.05},
        {"type": "disconnect", "after_events": 150, "mode": "close", "probability": 0.5},
    ],
}
PATH = "/v1/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "bench"}], "stream": True}


async def fetch(url: str) -> tuple[bytes, list[float]]:
    """The body and each frame's arrival (ms since the request was sent)."""
    splitter = SSE_FRAMER.splitter()
    times: list[float] = []
    chunks: list[bytes] = []
    async with aiohttp.ClientSession() as s:
        start = time.monotonic()
        async with s.post(url + PATH, json=BODY) as r:
            async for data in r.content.iter_any():
                now = (time.monotonic() - start) * 1000.0
                chunks.append(data)
                times += [now] * len(splitter.feed(data))
    return b"".join(chunks), times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(frames: int = 200, rate: float = 50.0) -> dict[str, Any]:
    settings = MockSettings(ttft_ms=20, tokens_per_s=rate, tokens=frames - 2)
    with tempfile.TemporaryDirectory() as tmp:
        tape = Path(tmp) / "tape"
        async with await start_mock(settings=settings) as mock:
            proxy = ChaosProxy(mock.url, load_profile("clean"), cassette=CassetteTap(tape))
            url = await proxy.start()
            recorded, _ = await fetch(url)
            await proxy.close()
        cassette = load_cassette(tape)
    rec = cassette.interactions[0].response
    expected = [f.t_ms for f in rec.frames]

    async def replay(profile: dict[str, Any], seed: int, again: Path) -> tuple[bytes, list[Any]]:
        async with await start_replay(Player(cassette), speed=1.0) as server:
            tap = CassetteTap(again)
            proxy = ChaosProxy(
                server.url, profile_from_data(profile, "<bench>"), seed=seed, cassette=tap
            )
            url = await proxy.start()
            try:
                body, _ = await fetch(url)
            except aiohttp.ClientError:
                body = b""
            await asyncio.sleep(0.1)
            log = [e.position() for e in proxy.fault_log]
            await proxy.close()
            return body, log

    with tempfile.TemporaryDirectory() as tmp:
        again = Path(tmp) / "again"
        body, _ = await replay({"version": 1, "name": "clean"}, 7, again)
        replayed = [f.t_ms for f in load_cassette(again).interactions[0].response.frames]
        _, log1 = await replay(FAULTY, 7, Path(tmp) / "f1")
        _, log2 = await replay(FAULTY, 7, Path(tmp) / "f2")
    errors = [abs(a - b) for a, b in zip(replayed, expected, strict=True)]
    return {
        "frames": len(rec.frames),
        "recorded_s": round(expected[-1] / 1000.0, 2),
        "byte_identical": body == recorded == rec.body,
        "replayed_frames": len(replayed),
        "timing_error_ms_p50": round(statistics.median(errors), 2),
        "timing_error_ms_p99": round(pct(errors, 0.99), 2),
        "timing_error_ms_max": round(max(errors), 2),
        "fault_logs_identical": log1 == log2,
        "faults_fired": len(log1),
    }


def table(result: dict[str, Any]) -> str:
    ok = (
        result["byte_identical"]
        and result["timing_error_ms_p50"] <= 2
        and result["timing_error_ms_p99"] <= 10
        and result["fault_logs_identical"]
    )
    return "\n".join(
        [
            "| cassette replay | value |",
            "| --- | --- |",
            *(f"| {k} | {v} |" for k, v in result.items()),
            f"| goal met (bytes, p50 <= 2 ms, p99 <= 10 ms, same faults) | {ok} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    result = asyncio.run(measure(args.frames, args.rate))
    print(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
