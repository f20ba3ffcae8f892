"""SIGINT/SIGTERM during `run` and `check`: the client's group dies, the report of the
finished scenarios is written marked interrupted, and the exit code says which signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

CLIENTS = Path(__file__).parent.parent / "programs"

# The client under test: well behaved in the `clean` scenario, else it starts a
# grandchild that sleeps and hangs itself. Every pid goes to PIDS so the test can
# check that none survives the runner.
CLIENT = """
import os, runpy, subprocess, sys, time
pids = open(sys.argv[1], "a")
def note(pid):
    pids.write(f"{os.environ['CHAOSSTREAM_SCENARIO']} {pid}\\n")
    pids.flush()
sys.path.insert(0, sys.argv[2])
if os.environ["CHAOSSTREAM_SCENARIO"] == "clean":
    note(os.getpid())
    runpy.run_path(os.path.join(sys.argv[2], "well_behaved.py"), run_name="__main__")
else:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    note(child.pid)
    note(os.getpid())
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may wait on a lazy init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(pids: Path, scenario: str, count: int, limit_s: float = 60.0) -> list[int]:
    """The pids noted by `scenario`, once there are `count` of them."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pids.exists():
            found = [
                int(pid)
                for name, pid in (line.split() for line in pids.read_text().splitlines() if line)
                if name == scenario
            ]
            if len(found) >= count:
                return found
        time.sleep(0.1)
    raise AssertionError(f"the client never started scenario {scenario!r}")


def _interrupt(
    tmp_path: Path, args: list[str], sig: signal.Signals, scenario: str
) -> tuple[subprocess.Popen[str], list[int], str, str]:
    """Start chaosstream with the pid-noting client, signal it once `scenario` runs."""
    pids = tmp_path / "pids"
    client = tmp_path / "client.py"
    client.write_text(CLIENT, encoding="utf-8")
    tail = [str(pids), str(CLIENTS)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaosstream", *args, "--", sys.executable, str(client), *tail],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        hung = _wait_for(pids, scenario, 2)
        time.sleep(0.5)  # let the hanging client's scenario settle into its wait
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc, [*_wait_for(pids, "clean", 1), *hung], out, err


def _gone(pids: list[int]) -> list[int]:
    """The pids still alive after a short grace (reaping is asynchronous)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_sigterm_during_check_kills_client_and_writes_interrupted_report(tmp_path: Path) -> None:
    """SIGTERM mid-battery: exit 143, client group gone, JSON+JUnit of finished scenarios."""
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    args = ["check", "--seed", "1", "--timeout-s", "60", "--json", str(report)]
    args += ["--junit", str(junit)]
    started = time.monotonic()
    proc, pids, out, err = _interrupt(tmp_path, args, signal.SIGTERM, "slow-first-token")
    assert proc.returncode == 143, (out, err)
    assert time.monotonic() - started < 45, "the runner waited for the hanging client"
    assert _gone(pids) == [], "the client or its child survived the runner"
    assert "Traceback" not in err + out
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and data["passed"] is False
    assert [s["name"] for s in data["scenarios"]] == ["clean"]
    assert data["scenarios"][0]["passed"] is True
    assert 'name="interrupted" value="true"' in junit.read_text()
    assert "interrupted by SIGTERM" in out + err


def test_sigint_during_run_exits_130(tmp_path: Path) -> None:
    """SIGINT during `run`: exit 130 (never 1), client group gone, report marked interrupted."""
    scenarios = tmp_path / "s.yaml"
    scenarios.write_text(
        "version: 1\nscenarios:\n"
        "  - {name: clean, profile: clean, expect: [completes]}\n"
        "  - {name: stuck, profile: clean, expect: [completes], timeout_s: 60}\n"
        "  - {name: never, profile: clean, expect: [completes]}\n",
        encoding="utf-8",
    )
    report = tmp_path / "r.json"
    args = ["run", str(scenarios), "--seed", "1", "--json", str(report)]
    proc, pids, out, err = _interrupt(tmp_path, args, signal.SIGINT, "stuck")
    assert proc.returncode == 130, (out, err)
    assert _gone(pids) == []
    assert "Traceback" not in err + out
    data = json.loads(report.read_text())
    assert data["interrupted"] is True
    assert [s["name"] for s in data["scenarios"]] == ["clean"]
