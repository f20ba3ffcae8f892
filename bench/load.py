"""Users per core of one `chaosstream load` worker, clean vs a fault profile.

    python -m bench.load [--users 100 300] [--profiles clean mobile-3g] [--run-time 20]

For each (profile, users) it starts the embedded mock as its own process (so it
gets its own core), runs `chaosstream load` against it for --run-time seconds
and reads the load process's CPU time with psutil. A worker *sustains* its users
when it stays under 90 % of one core and the clean ITL p50 stays within 20 % of
the mock's pace; users per core = users / CPU share. The last line says how many
workers a 10,000-user test needs at the worst measured rate.
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


def measure(url: str, profile: str, users: int, run_time: float) -> dict[str, float | int | str]:
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
    o = doc["overall"]
    share = cpu / wall
    return {
        "profile": profile,
        "users": users,
        "cpu_share": round(share, 3),
        "users_per_core": round(users / share) if share else 0,
        "streams_per_s": o["requests_per_s"],
        "tokens_per_s": o["tokens_per_s"],
        "ttft_p50_ms": o["ttft_ms"]["p50"],
        "itl_p50_ms": o["itl_ms"]["p50"],
        "itl_p99_ms": o["itl_ms"]["p99"],
        "errors": sum(o["errors"].values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--profiles", nargs="+", default=["clean", "mobile-3g"])
    parser.add_argument("--run-time", type=float, default=20.0)
    args = parser.parse_args()
    mock, url = start_mock()
    rows = []
    try:
        for profile in args.profiles:
            for users in args.users:
                row = measure(url, profile, users, args.run_time)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        mock.terminate()
        mock.wait()
    # Wall time includes start-up (~2 s of imports), so users per core is a floor.
    worst = min(int(r["users_per_core"]) for r in rows)
    print(f"workers for 10,000 users at {worst} users/core: {math.ceil(10_000 / worst)}")


if __name__ == "__main__":
    main()
