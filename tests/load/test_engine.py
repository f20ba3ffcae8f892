"""The Locust engine, as `python -m chaosstream load` runs it: one process, and a cluster."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

CMD = [sys.executable, "-m", "chaosstream", "load"]
SHORT = ["--spawn-rate", "20", "--run-time", "4s"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_greenlets_waiting_on_the_asyncio_thread_all_wake() -> None:
    """300 greenlets x 100 calls through AsyncBridge, most of them done before their
    greenlet waits; 300 killed mid-call, whose coroutines must be cancelled; then one
    lone call, which a gevent AsyncResult set from the loop's thread failed with
    LoopExit ("This operation would block forever": nothing of the hub's own would
    wake it); then a stop with 300 calls out. A process of its own: the engine
    patches it for gevent."""
    script = Path(__file__).with_name("bridge_stress.py")
    result = subprocess.run(
        [sys.executable, str(script), "300", "100"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "answered 30000 of 30000 " in result.stdout
    assert "cancelled 300 of 300" in result.stdout
    assert "answers after: True" in result.stdout
    # Left pending, they were destroyed with the loop, logging from its thread while the
    # main thread's logging.shutdown took the same (gevent-patched) lock: a hang at exit.
    assert "stopped with 300 out: 300 cancelled, 300 greenlets ended" in result.stdout
    assert "Task was destroyed" not in result.stderr


def test_metric_definitions_on_a_mock_with_known_timing(tmp_path: Path) -> None:
    """Mock at TTFT 200 ms and 50 tokens/s: clean gives TTFT ~200 ms and ITL ~20 ms,
    mobile-3g a TTFT slower by its round trip; Locust's CSVs are written too."""
    out = tmp_path / "load.json"
    result = subprocess.run(
        [*CMD, "--users", "12", *SHORT, "--mix", "clean=0.5,mobile-3g=0.5", "--json", str(out),
         "--csv", str(tmp_path / "locust"), "--mock-ttft-ms", "200",
         "--mock-tokens-per-s", "50", "--mock-tokens", "20"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    clean, mobile = doc["profiles"]["clean"], doc["profiles"]["mobile-3g"]
    assert clean["streams"] >= 6 and mobile["streams"] >= 3
    assert 190 <= clean["ttft_ms"]["p50"] <= 320
    assert 15 <= clean["itl_ms"]["p50"] <= 30
    assert 15 <= clean["tpot_ms"]["p50"] <= 30
    # 20 tokens: the last comes ~19 gaps after the first.
    assert 500 <= clean["ttlt_ms"]["p50"] <= 900
    assert mobile["ttft_ms"]["p50"] >= clean["ttft_ms"]["p50"] + 300
    assert clean["interruption_rate"] == 0.0 and clean["errors"] == {}
    assert doc["overall"]["streams"] == clean["streams"] + mobile["streams"]
    stats_csv = (tmp_path / "locust_stats.csv").read_text()
    assert "STREAM,clean," in stats_csv and "STREAM,mobile-3g," in stats_csv


def test_two_worker_cluster_gives_the_same_report_shape(tmp_path: Path) -> None:
    """A master and two worker processes on loopback: the master's report merges both."""
    port = str(_free_port())
    mix = ["--mix", "clean=0.5,midstream-reset=0.5"]
    out = tmp_path / "cluster.json"
    master = subprocess.Popen(
        [*CMD, "--master", "--master-bind-host", "127.0.0.1", "--master-port", port,
         "--expect-workers", "2", "--users", "8", *SHORT, *mix, "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    worker = [*CMD, "--worker", "--master-port", port, *mix, "--mock-ttft-ms", "100"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    workers = [subprocess.Popen(worker, **quiet) for _ in range(2)]
    try:
        _, err = master.communicate(timeout=90)
        assert master.returncode == 0, err
        for w in workers:
            assert w.wait(timeout=30) == 0
    finally:
        for p in (master, *workers):
            if p.poll() is None:
                p.kill()
                p.wait()
    doc = json.loads(out.read_text())
    assert doc["run"]["workers"] == 2 and doc["run"]["mode"] == "master"
    assert set(doc["profiles"]) == {"clean", "midstream-reset"}
    assert doc["overall"]["streams"] >= 8
    assert doc["profiles"]["midstream-reset"]["errors"].get("reset", 0) >= 1
    assert doc["overall"]["ttft_ms"]["p50"] is not None
    assert max(doc["overall"]["timeline"]["open_streams"]) >= 2
