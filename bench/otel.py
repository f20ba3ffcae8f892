"""CPU per event of ``chaosstream proxy`` with OpenTelemetry on vs off.

``python -m bench.otel [--rounds 5] [--compare DIR]`` starts the stamped
upstream, a throwaway OTLP/HTTP receiver (answers 200 to every export) and
``chaosstream proxy`` as processes, with ``--no-otel`` and with ``--otel``,
under the same loads; the proxy's user + system CPU (its exporter thread
included) is read from its process with psutil. The goal (issue 22): tracing on
costs at most 1.05x the CPU per event of tracing off.

What makes the numbers real:

- each measurement runs its load ``reps`` times against one proxy process, so
  the proxy spends seconds of CPU (psutil reads CPU times in 10 ms ticks; one
  400 x 50 run is about 0.25 s);
- the modes of a load run side by side, each proxy under its own client with the
  same load at the same time, so a busy machine (2 cores shared) slows them
  alike; runs one after another varied by +-8 % at a load average of 7, more than
  the effect measured. The median per mode and the median of the per-round
  ratios are reported;
- every client request carries a W3C ``traceparent`` (each stream its own
  trace), so the span is a child span as in real use, and every exchange has a
  fault that fires (a 1 ms first-byte latency): each span carries a fault event;
- the metric export interval is the SDK's default (60 s): collection costs per
  interval, not per event, and a run this short sees only the exit export.

``--compare DIR`` (repeatable) adds a mode: ``--otel`` with the chaosstream of
another checkout (``git worktree add DIR <commit>``), for a before/after in the
same run. In a checkout others are editing, run it from a worktree of the commit
(``cd DIR && python -m bench.otel``): off and on use the checkout it runs from.
Prints one JSON object; exit 1 when a median ratio is over the goal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.__main__ import PY, ROOT, Load, cpu_s, free_port, start, stop, wait_port

GOAL = 1.05
PROFILE = """version: 1
name: bench-otel
faults:
  - type: latency
    first_byte_ms: 1
"""
# (load, client runs per measurement): about 2-3 s of proxy CPU each with tracing off.
LOADS = (
    (Load("short streams", 400, 50), 10),
    (Load("answer-length streams", 100, 200), 25),
    (Load("long streams", 20, 2000), 25),
)


class _Sink(BaseHTTPRequestHandler):
    """Takes an OTLP export and answers 200, as a Collector does."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a Collector
    counts: dict[str, int] = {}

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.counts[self.path] = self.counts.get(self.path, 0) + 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def client(url: str, load: Load, timeout: float) -> int:
    """Run the load generator once (a traceparent per stream); the events it received."""
    cmd = [
        PY, "-m", "bench.client", "--url", url, "--streams", str(load.streams),
        "--events", str(load.events), "--timeout", str(timeout), "--traceparent",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=timeout + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr.decode(errors='replace')[-2000:]}")
    result = json.loads(out.stdout)
    if result["errors"]:
        raise RuntimeError(f"client errors: {result['errors']}")
    return int(result["events"])


def _proxy(up_url: str, profile: Path, mode: str, endpoint: str, tree: Path) -> tuple[Any, int]:
    """Start one ``chaosstream proxy`` (from ``tree``): (process, port)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env["PYTHONPATH"] = str(tree)  # a compared checkout's chaosstream first on the path
    cmd = [
        PY, "-m", "chaosstream", "proxy", "--upstream", up_url, "--profile", str(profile),
        "--listen", f"127.0.0.1:{port}", "--log-format", "json",
        "--no-otel" if mode == "off" else "--otel",
    ]  # fmt: skip
    if os.environ.get("BENCH_OTEL_ENV"):  # e.g. OTEL_TRACES_EXPORTER=none, to split the cost
        env.update(kv.split("=", 1) for kv in os.environ["BENCH_OTEL_ENV"].split(","))
    proxy = subprocess.Popen(
        cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port, proxy)
    return proxy, port


def measure(
    up_url: str, profile: Path, modes: dict[str, Path], load: Load, reps: int, endpoint: str
) -> dict[str, tuple[float, float]]:
    """Per mode: (proxy CPU seconds per 100,000 events, CPU seconds measured).

    The modes' proxies run side by side, each under its own client running the same
    load at the same time: whatever else the machine does slows them alike, so
    their ratio is steadier than that of runs one after another.
    """
    started = {mode: _proxy(up_url, profile, mode, endpoint, tree) for mode, tree in modes.items()}
    out: dict[str, tuple[float, float]] = {}
    try:

        def run(mode: str) -> None:
            proxy, port = started[mode]
            url = f"http://127.0.0.1:{port}"
            client(url, Load("warm-up", 20, 20), 60)
            cpu0 = cpu_s(proxy.pid)
            events = sum(client(url, load, 300) for _ in range(reps))
            cpu = cpu_s(proxy.pid) - cpu0
            out[mode] = (cpu / events * 1e5, cpu)

        threads = [threading.Thread(target=run, args=(mode,)) for mode in modes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for proxy, _ in started.values():
            stop(proxy)
    missing = set(modes) - set(out)
    if missing:
        raise RuntimeError(f"no measurement for {sorted(missing)} (a client failed)")
    return out


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.otel", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="A third of the client runs.")
    parser.add_argument("--only", action="append", help="Run only the load of this name.")
    parser.add_argument(
        "--compare",
        action="append",
        type=Path,
        default=[],
        help="Also --otel from this checkout (e.g. a worktree); may be repeated.",
    )
    args = parser.parse_args()
    modes = {"off": ROOT, "on": ROOT}
    for i, tree in enumerate(args.compare):
        modes["on (compare)" if i == 0 else f"on (compare {i + 1})"] = tree.resolve()
    loads = [(lo, max(2, reps // 3) if args.quick else reps) for lo, reps in LOADS]
    loads = [(lo, reps) for lo, reps in loads if not args.only or lo.name in args.only]
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    up_port = free_port()
    upstream = start([PY, "-m", "bench.upstream", "--port", str(up_port)], up_port)
    up_url = f"http://127.0.0.1:{up_port}"
    results: dict[str, Any] = {"goal": GOAL, "load_average_start": os.getloadavg(), "loads": {}}
    runs: dict[str, dict[str, list[float]]] = {lo.name: {m: [] for m in modes} for lo, _ in loads}
    cpu: dict[str, list[float]] = {lo.name: [] for lo, _ in loads}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "bench-otel.yaml"
        profile.write_text(PROFILE)
        try:
            for i in range(args.rounds):
                for load, reps in loads:
                    print(
                        f"[bench.otel] round {i + 1} {load.name} x{reps}: {', '.join(modes)} "
                        f"side by side (load {os.getloadavg()[0]:.1f})",
                        file=sys.stderr,
                        flush=True,
                    )
                    got = measure(up_url, profile, modes, load, reps, endpoint)
                    for mode, (per, spent) in got.items():
                        runs[load.name][mode].append(round(per, 4))
                        cpu[load.name].append(spent)
                        print(
                            f"[bench.otel]   {mode}: {per:.4f} CPU s / 1e5 events ({spent:.2f} s)",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            stop(upstream)
            sink.shutdown()
    for load, reps in loads:
        by_mode = runs[load.name]
        entry: dict[str, Any] = {
            "streams": load.streams,
            "events_per_stream": load.events,
            "client_runs": reps,
            "proxy_cpu_s_per_run_min": round(min(cpu[load.name]), 2),
        }
        for mode, values in by_mode.items():
            entry[f"cpu_s_per_1e5_events_{mode}"] = values
            entry[f"median_{mode}"] = round(statistics.median(values), 4)
        for mode in by_mode:
            if mode != "off":
                ratios = [on / off for on, off in zip(by_mode[mode], by_mode["off"], strict=True)]
                entry[f"ratio_{mode}_rounds"] = [round(r, 3) for r in ratios]
                entry[f"median_ratio_{mode}"] = round(statistics.median(ratios), 3)
        entry["median_ratio"] = entry["median_ratio_on"]
        results["loads"][load.name] = entry
    results["load_average_end"] = os.getloadavg()
    results["wall_s"] = round(time.monotonic() - started)
    results["exports_received"] = _Sink.counts
    print(json.dumps(results, indent=2))
    over = [n for n, r in results["loads"].items() if r["median_ratio"] > GOAL]
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
