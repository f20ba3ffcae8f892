"""Users per core of one `chaosstream load` worker, clean vs a fault profile.

    python -m bench.load [--users 100 300 1000] [--profiles clean mobile-3g] [--run-time 20]
    python -m bench --only load          (the same, inside the whole report)

It starts the embedded mock as its own process (so it gets its own core), runs
`chaosstream load` against it for --run-time seconds per (profile, users) and
reads both processes' CPU time with psutil. Users per core = users / the load
process's CPU share. When the mock saturates its core (its share near 100 %), it
paces every user slower and the load process has less to do: "at pace" scales
users per core by the users' delivered token rate over the rate at the smallest
user count, so the 10,000-user estimate is not flattered by a slow server.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

PY = sys.executable
TOKENS_PER_S = 50.0
TTFT_MS = 200.0


def start_mock() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [PY, "-m", "chaosstream", "mock", "--port", "0", "--ttft-ms", str(TTFT_MS),
         "--tokens-per-s", str(TOKENS_PER_S), "--tokens", "50"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            return proc, line.split("listening on")[1].split()[0]
    raise SystemExit("mock did not start")


def measure(
    url: str, profile: str, users: int, run_time: float, mock_pid: int
) -> dict[str, float | int | str]:
    mock = psutil.Process(mock_pid)
    mock_before = sum(mock.cpu_times()[:2])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "load.json"
        proc = psutil.Popen(
            [PY, "-m", "chaosstream", "load", "--upstream", url, "--users", str(users),
             "--spawn-rate", str(max(users / 2, 1)), "--run-time", f"{run_time}s",
             "--mix", f"{profile}=1", "--retry", "none", "--json", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        start = time.monotonic()
        cpu = 0.0
        while proc.poll() is None:
            try:
                times = proc.cpu_times()
                cpu = times.user + times.system
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        wall = time.monotonic() - start
        doc = json.loads(out.read_text())
    mock_share = (sum(mock.cpu_times()[:2]) - mock_before) / wall
    o = doc["overall"]
    share = cpu / wall
    return {
        "profile": profile,
        "users": users,
        "cpu_share": round(share, 3),
        "mock_cpu_share": round(mock_share, 3),
        "users_per_core": round(users / share) if share else 0,
        "streams_per_s": o["requests_per_s"],
        "tokens_per_s": o["tokens_per_s"],
        "tokens_per_user_s": round(o["tokens_per_s"] / users, 2),
        "ttft_p50_ms": o["ttft_ms"]["p50"],
        "itl_p50_ms": o["itl_ms"]["p50"],
        "itl_p99_ms": o["itl_ms"]["p99"],
        "errors": sum(o["errors"].values()),
    }


def run(users: list[int], profiles: list[str], run_time: float, log: bool = True) -> dict[str, Any]:
    """Every (profile, users) row, the rate at pace, and the workers 10,000 users need."""
    mock, url = start_mock()
    rows: list[dict[str, Any]] = []
    try:
        for profile in profiles:
            for n in sorted(users):
                row = measure(url, profile, n, run_time, mock.pid)
                rows.append(row)
                if log:
                    print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        mock.terminate()
        mock.wait()
    for profile in profiles:
        mine = [r for r in rows if r["profile"] == profile]
        pace = mine[0]["tokens_per_user_s"] or 1.0
        for r in mine:
            r["users_per_core_at_pace"] = round(r["users_per_core"] * r["tokens_per_user_s"] / pace)
    worst = min(int(r["users_per_core_at_pace"]) for r in rows) or 1
    return {
        "cores": psutil.cpu_count(),
        "run_time_s": run_time,
        "mock": {"ttft_ms": TTFT_MS, "tokens_per_s": TOKENS_PER_S, "tokens": 50},
        "rows": rows,
        "worst_users_per_core": worst,
        "workers_for_10000": math.ceil(10_000 / worst),
    }


def table(result: dict[str, Any]) -> str:
    """Markdown for the report."""
    lines = [
        "| profile | users | load CPU | mock CPU | users/core | at pace | streams/s "
        "| TTFT p50 ms | ITL p50 / p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['profile']} | {r['users']} | {r['cpu_share']:.0%} | {r['mock_cpu_share']:.0%} "
            f"| {r['users_per_core']} | {r['users_per_core_at_pace']} | {r['streams_per_s']} "
            f"| {r['ttft_p50_ms']} | {r['itl_p50_ms']} / {r['itl_p99_ms']} |"
        )
    lines.append(
        f"\nWorst rate at pace: {result['worst_users_per_core']} users per core: "
        f"{result['workers_for_10000']} single-core workers for 10,000 users."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--users", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--profiles", nargs="+", default=["clean", "mobile-3g"])
    parser.add_argument("--run-time", type=float, default=20.0)
    args = parser.parse_args()
    result = run(args.users, args.profiles, args.run_time)
    print(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
