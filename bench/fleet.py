"""The fleet benchmarks of issue 19: ``python -m bench.fleet [--streams 2000] [--scopes 1000]``.

1. ``chaosstream proxy --workers 2`` vs ``--workers 1`` at N paced streams spread over
   scopes (unscoped traffic all goes to worker 0 by design, so only scoped load can use a
   second worker): events/s, p99 added latency (vs direct), CPU per 10^5 events of the
   whole proxy (front + workers).
2. Per-scope overhead: one proxy process, the same paced load unscoped and spread over
   1,000 scopes: CPU per event of the two, and their ratio (goal: within 1.1x).

Every part is its own process (stamped upstream, ``python -m chaosstream proxy``, the load
generator); CPU is read from the processes with psutil. Prints one JSON object and writes
``bench/results/fleet-latest.json``. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psutil

from bench.__main__ import RESULTS, Load, client, free_port, start, stop

PY = sys.executable


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its children so far."""
    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def run(workers: int | None, load: Load, scopes: int, timeout: float) -> dict[str, Any]:
    """One run: fresh upstream and proxy (None = direct), a warm-up, then the load."""
    up_port = free_port()
    upstream = start([PY, "-m", "bench.upstream", "--port", str(up_port)], up_port)
    up_url = f"http://127.0.0.1:{up_port}"
    proxy = None
    try:
        url = up_url
        if workers is not None:
            port = free_port()
            cmd = [PY, "-m", "chaosstream", "proxy", "--upstream", up_url, "--listen",
                   f"127.0.0.1:{port}", "--workers", str(workers), "--log-format", "json",
                   "--max-scopes", str(max(1024, scopes))]  # fmt: skip
            proxy = start(cmd, port)
            url = f"http://127.0.0.1:{port}"
        client(url, Load("warm-up", 5, 20), 60)
        result: dict[str, Any] = {"workers": workers, "scopes": scopes, "load": load.__dict__}
        cpu0 = tree_cpu_s(proxy.pid) if proxy else 0.0
        result["client"] = _client(url, load, scopes if workers is not None else 0, timeout)
        if proxy is not None:
            cpu = tree_cpu_s(proxy.pid) - cpu0
            events = result["client"]["events"]
            result["proxy"] = {
                "cpu_s": round(cpu, 3),
                "cpu_s_per_1e5_events": round(cpu / events * 1e5, 3) if events else None,
            }
        return result
    finally:
        if proxy is not None:
            stop(proxy)
        stop(upstream)


def _client(url: str, load: Load, scopes: int, timeout: float) -> dict[str, Any]:
    if not scopes:
        return client(url, load, timeout)
    import subprocess

    from bench.__main__ import ROOT

    cmd = [PY, "-m", "bench.client", "--url", url, "--streams", str(load.streams),
           "--events", str(load.events), "--rate", str(load.rate), "--ramp-s",
           str(load.ramp_s), "--timeout", str(timeout), "--scopes", str(scopes)]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=timeout + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _p99(r: dict[str, Any]) -> float:
    steady = r["client"]["steady_latency_ms"] or r["client"]["latency_ms"]
    return float(steady.get("p99", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--scopes", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    load = Load("paced", args.streams, args.events, args.rate, ramp_s=min(10.0, args.streams / 200))
    direct = run(None, load, 0, args.timeout)
    one = run(1, load, args.scopes, args.timeout)
    two = run(2, load, args.scopes, args.timeout)
    unscoped = run(1, load, 0, args.timeout)
    base = _p99(direct)
    summary = {
        "workers": {
            str(r["workers"]): {
                "events_per_s": r["client"]["events_per_s"],
                "p99_added_ms": round(_p99(r) - base, 1),
                "cpu_s_per_1e5_events": r["proxy"]["cpu_s_per_1e5_events"],
                "errors": r["client"]["errors"],
            }
            for r in (one, two)
        },
        "scope_overhead": {
            "unscoped_cpu_s_per_1e5_events": unscoped["proxy"]["cpu_s_per_1e5_events"],
            f"{args.scopes}_scopes_cpu_s_per_1e5_events": one["proxy"]["cpu_s_per_1e5_events"],
            "ratio": round(
                one["proxy"]["cpu_s_per_1e5_events"] / unscoped["proxy"]["cpu_s_per_1e5_events"], 3
            ),
        },
        "direct_p99_ms": base,
        "cores": psutil.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet-latest.json").write_text(
        json.dumps({"summary": summary, "runs": [direct, one, two, unscoped]}, indent=1)
    )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
