"""CPU per event of ``chaosstream proxy`` with OpenTelemetry on vs off.

``python -m bench.otel [--rounds 3]`` starts the stamped upstream, a throwaway
OTLP/HTTP receiver (answers 200 to every export) and ``chaosstream proxy`` as
processes, once with ``--no-otel`` and once with ``--otel``, under the same
loads; the proxy's user + system CPU (its exporter threads included) is read
from its process with psutil. The goal (issue 22): tracing on costs at most
1.05x the CPU per event of tracing off. Rounds alternate off/on so a busy
machine slows both alike; the median ratio per load is reported. Prints one
JSON object; exit 1 when a median ratio is over the goal.

Every exchange has a fault that fires (a 1 ms first-byte latency), so each
span carries a fault event, as in a chaos run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.__main__ import PY, ROOT, Load, client, cpu_s, free_port, start, stop

GOAL = 1.05
PROFILE = """version: 1
name: bench-otel
faults:
  - type: latency
    first_byte_ms: 1
"""


class _Sink(BaseHTTPRequestHandler):
    """Takes an OTLP export and answers 200, as a Collector does."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def measure(up_url: str, profile: Path, otel: bool, load: Load, endpoint: str) -> float:
    """Proxy CPU seconds per 100,000 events for one load."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_METRIC_EXPORT_INTERVAL="1000")
    cmd = [
        PY, "-m", "chaosstream", "proxy", "--upstream", up_url, "--profile", str(profile),
        "--listen", f"127.0.0.1:{port}", "--log-format", "json", "--otel" if otel else "--no-otel",
    ]  # fmt: skip
    old = os.environ.copy()
    os.environ.clear()
    os.environ.update(env)
    try:
        proxy = start(cmd, port)
    finally:
        os.environ.clear()
        os.environ.update(old)
    try:
        url = f"http://127.0.0.1:{port}"
        client(url, Load("warm-up", 5, 20), 60)
        cpu0 = cpu_s(proxy.pid)
        events = client(url, load, 300)["events"]
        cpu = cpu_s(proxy.pid) - cpu0
        return cpu / events * 1e5
    finally:
        stop(proxy)


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.otel", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="Smaller loads.")
    args = parser.parse_args()
    scale = 4 if args.quick else 1
    loads = [
        Load("short streams", 400 // scale, 50),
        Load("answer-length streams", 100 // scale, 200),
        Load("long streams", 20 // scale, 2000),
    ]
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    up_port = free_port()
    upstream = start([PY, "-m", "bench.upstream", "--port", str(up_port)], up_port)
    results: dict[str, Any] = {"goal": GOAL, "loads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "bench-otel.yaml"
        profile.write_text(PROFILE)
        try:
            for load in loads:
                ratios, off_runs, on_runs = [], [], []
                for i in range(args.rounds):
                    print(f"[bench.otel] {load.name}: round {i + 1}", file=sys.stderr, flush=True)
                    off = measure(f"http://127.0.0.1:{up_port}", profile, False, load, endpoint)
                    on = measure(f"http://127.0.0.1:{up_port}", profile, True, load, endpoint)
                    off_runs.append(round(off, 3))
                    on_runs.append(round(on, 3))
                    ratios.append(on / off)
                results["loads"][load.name] = {
                    "streams": load.streams,
                    "events_per_stream": load.events,
                    "cpu_s_per_1e5_events_off": off_runs,
                    "cpu_s_per_1e5_events_on": on_runs,
                    "median_ratio": round(statistics.median(ratios), 3),
                }
        finally:
            stop(upstream)
            sink.shutdown()
    print(json.dumps(results, indent=2))
    over = [n for n, r in results["loads"].items() if r["median_ratio"] > GOAL]
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
