"""One command for every benchmark: ``python -m bench [--quick] [--only NAME ...]``.

Starts the stamped upstream, one proxy under test and the load generator as
three separate processes (the machine may have only two cores: the proxy's own
CPU time is read from its process, not guessed from wall time), then writes
``bench/results/<stamp>.json``, ``bench/results/latest.json`` and a Markdown
table ``bench/results/latest.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench._loop import have_uvloop
from bench.report import markdown
from bench.shares import Shares
from bench.shares import enabled as shares_enabled

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
PARTS = (
    "burst",
    "paced",
    "scaling",
    "marginal",
    "first_byte",
    "faults",
    "families",
    "formats",
    "cassette",
    "load",
)


@dataclass
class Load:
    """One load shape: how many streams, how many events each, at what pace."""

    name: str
    streams: int
    events: int
    rate: float = 0.0
    ramp_s: float = 0.0
    gaps: bool = False


def free_port() -> int:
    """A port nobody listens on right now (loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Block until something accepts on 127.0.0.1:port, or fail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"process exited with {proc.returncode}: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout} s")


def start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    """Start a server process and wait until it listens."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    # A full stderr pipe would block the server: drain it in the background, keep the tail.
    tail: list[bytes] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line)
            del tail[:-50]

    wait_port(port, proc)
    threading.Thread(target=drain, daemon=True).start()
    proc.tail = tail  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server we started, then kill it if it lingers."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Sampler:
    """Samples a process's RSS every 20 ms on a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def client(url: str, load: Load, timeout: float) -> dict[str, Any]:
    """Run the load generator once and return its summary."""
    cmd = [
        PY, "-m", "bench.client", "--url", url, "--streams", str(load.streams),
        "--events", str(load.events), "--rate", str(load.rate), "--ramp-s", str(load.ramp_s),
        "--timeout", str(timeout),
    ]  # fmt: skip
    if load.gaps:
        cmd.append("--gaps")
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=timeout + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def proxy_cmd(mode: str, upstream: str, port: int, profile: str) -> list[str] | None:
    """The command that starts the proxy under test, or None for a direct run."""
    if mode == "direct":
        return None
    if mode in ("chaosstream", "chaosstream+uvloop", "chaosstream+uvloop untuned"):
        cmd = [PY, "-m", "bench.chaos_proxy", "--upstream", upstream, "--port", str(port)]
        cmd += ["--profile", profile]
        cmd += ["--untuned"] if mode.endswith("untuned") else []
        return cmd + (["--uvloop"] if "uvloop" in mode else [])
    if mode == "aiohttp-minimal":
        return [PY, "-m", "bench.minimal_proxy", "--upstream", upstream, "--port", str(port)]
    if mode == "python-floor":  # the least a Python proxy on asyncio can cost (bench.floor_proxy)
        cmd = [PY, "-m", "bench.floor_proxy", "--upstream", upstream, "--port", str(port)]
        return cmd + (["--uvloop"] if have_uvloop() else [])
    if mode == "mitmproxy":
        return [
            mitmdump_path() or "mitmdump", "-q", "--mode", f"reverse:{upstream}",
            "--set", "stream_large_bodies=1", "--listen-host", "127.0.0.1",
            "--listen-port", str(port),
        ]  # fmt: skip
    raise ValueError(mode)


def mitmdump_path() -> str | None:
    """``$BENCH_MITMDUMP``, else ``mitmdump`` on PATH."""
    return os.environ.get("BENCH_MITMDUMP") or shutil.which("mitmdump")


def measure(mode: str, load: Load, profile: str = "{}", timeout: float = 300.0) -> dict[str, Any]:
    """One run: fresh upstream and proxy, a warm-up, then the load with the proxy watched."""
    up_port = free_port()
    upstream = start([PY, "-m", "bench.upstream", "--port", str(up_port)], up_port)
    up_url = f"http://127.0.0.1:{up_port}"
    proxy = None
    try:
        port = free_port()
        url = up_url
        if mode == "toxiproxy":
            from bench.scaling import start_toxiproxy, toxic_for

            proxy, port = start_toxiproxy(up_port, toxic_for(profile))
            url = f"http://127.0.0.1:{port}"
        elif (cmd := proxy_cmd(mode, up_url, port, profile)) is not None:
            proxy = start(cmd, port)
            url = f"http://127.0.0.1:{port}"
        client(url, Load("warm-up", 5, 20), 60)
        result: dict[str, Any] = {"mode": mode, "load": load.__dict__}
        if proxy is None:
            result["client"] = client(url, load, timeout)
            return result
        pid = proxy.pid
        rss0 = psutil.Process(pid).memory_info().rss
        cpu0 = cpu_s(pid)
        with Sampler(pid) as sampler, contextlib.ExitStack() as spy:
            shares = spy.enter_context(Shares(pid)) if shares_enabled() else None
            result["client"] = client(url, load, timeout)
        cpu = cpu_s(pid) - cpu0
        if shares is not None:
            result["shares"] = shares.result
        events = result["client"]["events"]
        result["proxy"] = {
            "cpu_s": round(cpu, 3),
            "cpu_s_per_1e5_events": round(cpu / events * 1e5, 3) if events else None,
            "rss_idle_mib": round(rss0 / 2**20, 1),
            "rss_peak_mib": round(sampler.peak / 2**20, 1),
            "kib_per_stream": round(max(0, sampler.peak - rss0) / 1024 / load.streams, 1),
        }
        return result
    finally:
        if proxy is not None:
            stop(proxy)
        stop(upstream)


def passthrough_modes(only_modes: list[str] | None) -> list[str]:
    """Proxies under test, in table order; the ones that cannot run are skipped with a note."""
    modes = ["direct", "aiohttp-minimal", "chaosstream"]
    if have_uvloop():
        modes.append("chaosstream+uvloop")
    modes.append("mitmproxy")
    from bench.scaling import toxiproxy_path

    if toxiproxy_path():  # BENCH_TOXIPROXY: a contender only when the user points at one
        modes.append("toxiproxy")
    return [m for m in modes if not only_modes or m in only_modes]


def fault_profiles(events: int) -> dict[str, tuple[str, Load, float]]:
    """Fidelity runs: name -> (profile JSON, load, setting)."""
    from chaosstream.faults import REGISTRY

    out: dict[str, tuple[str, Load, float]] = {
        "first_byte_300ms": (
            json.dumps({"faults": [{"type": "latency", "first_byte_ms": 300}]}),
            Load("first-byte", events, 20, rate=20, ramp_s=1.0),
            300.0,
        ),
        "disconnect_after_10": (
            json.dumps({"faults": [{"type": "disconnect", "after_events": 10, "mode": "reset"}]}),
            Load("disconnect", events, 40, rate=50, ramp_s=1.0),
            10.0,
        ),
    }
    if "throttle" in REGISTRY:
        out["throttle_20_events_per_s"] = (
            json.dumps({"faults": [{"type": "throttle", "events_per_s": 20}]}),
            Load("throttle", events, 40, rate=0, ramp_s=1.0, gaps=True),
            20.0,
        )
    return out


def family_profiles() -> dict[str, str]:
    """CPU-per-event runs: every fault family armed on every stream, set so the
    stream still flows to the end (a cut would end the measurement early).

    ``idle`` is a fault that is configured but never matches: it must cost
    what ``clean`` costs, since the proxy then stays on its copy-only path.
    ``http_error`` is left out: a refusal answers before any stream, so it
    has no per-event cost.
    """
    never = 10**9
    families: dict[str, list[dict[str, Any]]] = {
        "clean": [],
        "idle": [{"type": "disconnect", "after_events": 1, "match": {"path": "/never"}}],
        "latency": [{"type": "latency", "per_event_ms": 0.01}],
        "throttle": [{"type": "throttle", "events_per_s": 1_000_000}],
        "loss": [{"type": "loss", "rate": 0.001, "rto_ms": 1}],
        "disconnect": [{"type": "disconnect", "after_events": never}],
        "stream_error": [{"type": "stream_error", "after_events": never}],
        "corrupt": [{"type": "corrupt", "action": "malformed_json", "rate": 0.001}],
        "buffer": [{"type": "buffer"}],
        "concurrency_limit": [{"type": "concurrency_limit", "max_streams": never}],
    }
    out = {name: json.dumps({"faults": faults}) for name, faults in families.items()}
    out["network"] = json.dumps({"network": {"latency_ms": 1, "down_kbps": 1e6, "loss": 0.001}})
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    mitm = mitmdump_path()
    mitm_version = None
    if mitm:
        out = subprocess.run([mitm, "--version"], capture_output=True, text=True, check=False)
        mitm_version = out.stdout.split("\n", 1)[0].replace("Mitmproxy: ", "") or None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
        "mitmproxy": mitm_version,
        "chaosstream": version("chaosstream"),
    }


def main() -> None:
    """Run the chosen benchmarks and write JSON + Markdown results."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small loads (about a minute).")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=[*PARTS],
        help="Run only these parts.",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="Interleaved rounds of scaling and first_byte."
    )
    parser.add_argument("--modes", nargs="*", help="Only these proxies (direct is the baseline).")
    parser.add_argument("--streams", type=int, help="Override the paced/fault stream count.")
    parser.add_argument("--paced-s", type=float, help="Length of the paced run in seconds.")
    parser.add_argument(
        "--shares",
        action="store_true",
        help="py-spy each proxy run: the share of its CPU in chaosstream, aiohttp, the loop "
        "(bench/shares.py; the same as BENCH_SHARES=1).",
    )
    args = parser.parse_args()
    if args.shares:
        os.environ["BENCH_SHARES"] = "1"  # read by measure(), also in bench.scaling's runs
    parts = args.only or list(PARTS)
    many = args.streams or (200 if args.quick else 1000)
    paced_s = args.paced_s or (4.0 if args.quick else 10.0)
    loads = {
        "burst": Load("burst", 20, 500) if args.quick else Load("burst", 50, 2000),
        "paced": Load("paced", many, int(20 * paced_s), rate=20, ramp_s=1.0),
    }
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "runs": {}, "notes": []}
    modes = passthrough_modes(args.modes)
    if "mitmproxy" in modes and not mitmdump_path():
        modes.remove("mitmproxy")
        results["notes"].append("mitmproxy: mitmdump not found (set BENCH_MITMDUMP)")
    if "direct" not in modes:
        modes.insert(0, "direct")
    for part in ("burst", "paced"):
        if part not in parts:
            continue
        runs = results["runs"].setdefault(part, {})
        for mode in modes:
            print(f"[bench] {part}: {mode} ...", file=sys.stderr, flush=True)
            try:
                runs[mode] = measure(mode, loads[part])
            except Exception as e:  # a failed proxy is a result, not a crash
                runs[mode] = {"mode": mode, "error": str(e)[:500]}
                results["notes"].append(f"{part}/{mode} failed: {str(e)[:200]}")
    if "scaling" in parts or "marginal" in parts or "first_byte" in parts:
        from bench import scaling

        rounds = max(1, args.rounds)
        if "scaling" in parts:
            seconds = 4.0 if args.quick else 10.0
            results["scaling"] = scaling.scaling(6000.0, seconds, rounds, args.modes)
        if "marginal" in parts:
            lengths = (2.0, 6.0) if args.quick else scaling.MARGINAL_S
            results["marginal"] = scaling.marginal(6000.0, rounds, args.modes, lengths)
        if "first_byte" in parts:
            results["first_byte"] = scaling.first_byte(many, rounds, args.modes)
    if "faults" in parts:
        runs = results["runs"].setdefault("faults", {})
        loops = ["chaosstream"] + (["chaosstream+uvloop"] if have_uvloop() else [])
        for name, (profile, load, setting) in fault_profiles(many).items():
            for mode in loops:
                key = name if mode == "chaosstream" else f"{name} (uvloop)"
                print(f"[bench] faults: {key} ...", file=sys.stderr, flush=True)
                run = measure(mode, load, profile)
                run["setting"] = setting
                runs[key] = run
    if "families" in parts:
        runs = results["runs"].setdefault("families", {})
        load = Load("families", 10, 500) if args.quick else Load("families", 20, 10_000)
        for name, profile in family_profiles().items():
            print(f"[bench] families: {name} ...", file=sys.stderr, flush=True)
            runs[name] = measure("chaosstream", load, profile)
    if "formats" in parts:
        from bench import formats

        print("[bench] formats: CPU per event, per wire format ...", file=sys.stderr, flush=True)
        results["formats"] = formats.measure(400 if args.quick else 2000)
    if "cassette" in parts:
        import asyncio

        from bench import cassette

        print("[bench] cassette: replay fidelity ...", file=sys.stderr, flush=True)
        results["cassette"] = asyncio.run(cassette.measure())
    if "load" in parts:
        from bench import load as load_bench

        print("[bench] load: users per core of a Locust worker ...", file=sys.stderr, flush=True)
        users = [100] if args.quick else [100, 300, 1000]
        results["load"] = load_bench.run(users, ["clean", "mobile-3g"], 8.0 if args.quick else 20.0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(results, indent=2)
    (RESULTS / f"{stamp}.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)
    table = markdown(results)
    if "scaling" in results:
        from bench import scaling

        table += "\n\n## Cost as streams grow\n\n" + "\n".join(
            scaling.scaling_table(results["scaling"])
        )
    if "marginal" in results:
        from bench import scaling

        table += "\n\n## One more event, one more stream\n\n" + "\n".join(
            scaling.marginal_table(results["marginal"])
        )
    if "first_byte" in results:
        from bench import scaling

        table += "\n\n## First-byte delay, streams starting together\n\n" + "\n".join(
            scaling.first_byte_table(results["first_byte"])
        )
    if "formats" in results:
        from bench import formats

        table += "\n\n## CPU per event, per wire format\n\n" + "\n".join(
            formats.table(results["formats"])
        )
    if "cassette" in results:
        from bench import cassette

        table += "\n\n## Cassette replay fidelity\n\n" + cassette.table(results["cassette"])
    if "load" in results:
        from bench import load as load_bench

        table += "\n\n## Load generator: users per core\n\n" + load_bench.table(results["load"])
    (RESULTS / "latest.md").write_text(table)
    print(table)
    if "formats" in results:
        # A format over its CPU budget fails the bench command (FAIL lines, exit 1).
        failed = formats.failures(results["formats"])
        for line in failed:
            print(line, file=sys.stderr)
        if failed:
            sys.exit(1)


if __name__ == "__main__":
    main()
