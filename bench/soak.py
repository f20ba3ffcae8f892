"""Soak the command line: N mixed faulted streams through `chaosstream proxy` to `chaosstream mock`.

Both servers run as the CLI runs them, each in its own process (issue 10: the
SIGPIPE death hid in-process). Every fault family fires on a share of the
streams: disconnect reset, close and stall (the client gives up after a short
read timeout), http_error, stream_error, corrupt, latency, throttle, loss,
buffer and concurrency_limit. Before (after a warm-up) and after the run, the
file descriptors, RSS and threads of both processes are read with psutil.

    python -m bench.soak --streams 10000        # prints one JSON object

Exit 0 when both processes are alive at the end and growth stayed in bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import psutil

CLI = [sys.executable, "-m", "chaosstream"]
WARM_UP = 300
CONCURRENCY = 50
# What "bounded" means after the run, against the reading after the warm-up.
MAX_FD_GROWTH = 20
MAX_RSS_GROWTH_MIB = 64.0  # the recorder's default budget; it holds far less here
MAX_THREAD_GROWTH = 4

FAULTS: list[dict[str, Any]] = [
    {"type": "disconnect", "after_events": 2, "mode": "reset", "probability": 0.08},
    {"type": "disconnect", "after_events": 2, "mode": "close", "probability": 0.08},
    {"type": "disconnect", "after_events": 1, "mode": "stall", "probability": 0.03},
    {"type": "http_error", "status": 429, "retry_after_s": 1, "probability": 0.06},
    {"type": "http_error", "status": 503, "probability": 0.04},
    {"type": "stream_error", "after_events": 1, "kind": "overloaded", "probability": 0.06},
    {"type": "corrupt", "action": "malformed_json", "after_events": 1, "probability": 0.05},
    {"type": "corrupt", "action": "duplicate_event", "after_events": 1, "probability": 0.04},
    {"type": "corrupt", "action": "drop_terminal", "after_events": 0, "probability": 0.04},
    {"type": "latency", "first_byte_ms": 5, "per_event_ms": 1, "probability": 0.08},
    {"type": "throttle", "events_per_s": 2000, "probability": 0.06},
    {"type": "loss", "rate": 0.2, "rto_ms": 2, "max_retransmits": 2, "probability": 0.06},
    {"type": "buffer", "probability": 0.04},
    {"type": "concurrency_limit", "max_streams": 1, "probability": 0.05},
]


def profile_yaml() -> str:
    """The soak profile as YAML (JSON is YAML): every family on a share of requests."""
    return json.dumps({"version": 1, "name": "cli-soak", "seed": 11, "faults": FAULTS})


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`chaosstream ARGS` with stderr to ``log`` (a file never fills up like a pipe)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as err:
        return subprocess.Popen([*CLI, *args], stderr=err, stdout=subprocess.DEVNULL, env=env)


def wait_url(proc: subprocess.Popen[bytes], log: Path, seconds: float = 30.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        match = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"no 'listening on' within {seconds} s: {log.read_text()[-2000:]}")


def usage(pid: int) -> dict[str, float]:
    """Open fds, RSS (MiB) and threads of one process."""
    proc = psutil.Process(pid)
    return {
        "fds": proc.num_fds(),
        "rss_mib": round(proc.memory_info().rss / 2**20, 1),
        "threads": proc.num_threads(),
    }


async def one(session: aiohttp.ClientSession, url: str, i: int) -> str:
    """One chat request (mostly streaming); how it ended for the client."""
    body = {
        "model": "m",
        "stream": i % 9 != 0,
        "messages": [{"role": "user", "content": f"soak {i % 40}"}],
    }
    # sock_read: a `stall` cut keeps the socket open and silent; the client gives up.
    timeout = aiohttp.ClientTimeout(total=10, sock_read=0.5)
    try:
        async with session.post(url + "/v1/chat/completions", json=body, timeout=timeout) as r:
            await r.read()
            return f"status {r.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return type(e).__name__


async def drive(url: str, n: int, concurrency: int = CONCURRENCY) -> Counter[str]:
    """``n`` requests through ``url``, ``concurrency`` at a time; counts of how they ended."""
    seen: Counter[str] = Counter()
    todo = iter(range(n))
    # One connection per request: after a cut the connection is gone anyway.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in todo:
                seen[await one(session, url, i)] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seen


def settle(seconds: float = 3.0) -> None:
    """Let cut and stalled exchanges finish on the servers before reading them."""
    time.sleep(seconds)


def stop(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGINT, then wait (bounded); the exit code, or None if it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        return None


def soak(streams: int, workdir: Path, concurrency: int = CONCURRENCY) -> dict[str, Any]:
    """Run the soak; the report (see the module docstring). Never leaves a process behind."""
    profile = workdir / "soak.json.yaml"
    profile.write_text(profile_yaml())
    mock_log, proxy_log = workdir / "mock.log", workdir / "proxy.log"
    mock = start(
        ["mock", "--port", "0", "--ttft-ms", "0", "--tokens-per-s", "0", "--tokens", "6"], mock_log
    )
    proxy: subprocess.Popen[bytes] | None = None
    try:
        upstream = wait_url(mock, mock_log)
        proxy = start(
            [
                "proxy",
                "--upstream",
                upstream,
                "--profile",
                str(profile),
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ],
            proxy_log,
        )
        url = wait_url(proxy, proxy_log)
        asyncio.run(drive(url, WARM_UP, concurrency))
        settle()
        before = {"mock": usage(mock.pid), "proxy": usage(proxy.pid)}
        started = time.monotonic()
        seen = asyncio.run(drive(url, streams, concurrency))
        elapsed = time.monotonic() - started
        settle()
        alive = {"mock": mock.poll() is None, "proxy": proxy.poll() is None}
        after = {
            name: usage(p.pid) if alive[name] else {}
            for name, p in (("mock", mock), ("proxy", proxy))
        }
        fired = Counter(
            json.loads(line)["type"]
            for line in proxy_log.read_text(errors="replace").splitlines()
            if line.startswith("{") and '"event": "fault"' in line
        )
    finally:
        codes = {"proxy": stop(proxy) if proxy is not None else None, "mock": stop(mock)}
    report: dict[str, Any] = {
        "streams": streams,
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
        "streams_per_s": round(streams / elapsed, 1),
        "client_saw": dict(seen),
        "faults_fired": dict(fired),
        "alive": alive,
        "exit_codes": codes,
        "before": before,
        "after": after,
    }
    report["problems"] = problems(report)
    return report


def problems(report: dict[str, Any]) -> list[str]:
    """What breaks the promise: a dead process, unbounded growth, a family that never fired."""
    found = [f"{name} died" for name, up in report["alive"].items() if not up]
    found += [f"{name} exited {code}" for name, code in report["exit_codes"].items() if code != 0]
    for name in ("mock", "proxy"):
        b, a = report["before"][name], report["after"][name]
        if not a:
            continue
        if a["fds"] - b["fds"] > MAX_FD_GROWTH:
            found.append(f"{name} fds {b['fds']} -> {a['fds']}")
        if a["rss_mib"] - b["rss_mib"] > MAX_RSS_GROWTH_MIB:
            found.append(f"{name} RSS {b['rss_mib']} -> {a['rss_mib']} MiB")
        if a["threads"] - b["threads"] > MAX_THREAD_GROWTH:
            found.append(f"{name} threads {b['threads']} -> {a['threads']}")
    families = {f["type"] for f in FAULTS}
    missing = families - set(report["faults_fired"])
    if missing:
        found.append(f"never fired: {sorted(missing)}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000, help="streams (default 10,000)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="at once (default 50)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chaosstream-soak-") as tmp:
        report = soak(opts.streams, Path(tmp), opts.concurrency)
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
