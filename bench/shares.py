"""Where a proxy's CPU goes, by library: py-spy samples of its process while a load runs.

``with Shares(pid) as shares: ...`` records the process with ``py-spy record --format raw``
for the block's duration; ``shares.result`` is then the share of samples whose innermost
Python frame lies in chaosstream, aiohttp, the event loop (asyncio, uvloop), structlog or
elsewhere — self time, as ``py-spy top`` counts it. Time spent inside a C call (a
``send()`` system call, the C HTTP parser) is charged to the Python frame that made the
call, so "aiohttp" includes the socket writes aiohttp issues.

Off unless asked (``python -m bench --shares``, or ``BENCH_SHARES=1``): py-spy stops the
process ~100 times a second to read its stack, which costs the proxy a little CPU of its
own. Needs ``py-spy`` on PATH and the right to trace the process (root, or
``kernel.yama.ptrace_scope=0``); without them ``result`` says why instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

#: Innermost-frame file path fragments, first match wins; the rest is "other".
LIBRARIES = (
    ("chaosstream", f"{os.sep}chaosstream{os.sep}"),
    ("aiohttp", f"{os.sep}aiohttp{os.sep}"),
    ("loop", f"{os.sep}asyncio{os.sep}"),
    ("loop", "uvloop"),
    ("structlog", f"{os.sep}structlog{os.sep}"),
)
RATE_HZ = 100


def enabled() -> bool:
    """``BENCH_SHARES=1`` asks every measured proxy run for its shares."""
    return os.environ.get("BENCH_SHARES", "") not in ("", "0")


def classify(frame: str) -> str:
    """The library a py-spy frame (``func (path/file.py:12)``) belongs to."""
    for name, fragment in LIBRARIES:
        if fragment in frame:
            return name
    return "other"


def shares_of(raw: str) -> dict[str, Any]:
    """Per-library shares (0..1) of the samples in py-spy's raw (folded) output."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[classify(stack.rsplit(";", 1)[-1])] += int(n)
    total = sum(counts.values())
    out: dict[str, Any] = {"samples": total}
    for name in ("chaosstream", "aiohttp", "loop", "structlog", "other"):
        out[name] = round(counts[name] / total, 3) if total else None
    return out


class Shares:
    """py-spy on ``pid`` for the duration of a ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.result: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="bench-shares-")
        self._out = Path(self._dir.name) / "raw.txt"

    def __enter__(self) -> Shares:
        spy = shutil.which("py-spy")
        if spy is None:
            self.result = {"error": "py-spy is not on PATH (pip install py-spy)"}
            return self
        cmd = [spy, "record", "--pid", str(self.pid), "--format", "raw", "--rate", str(RATE_HZ)]
        cmd += ["--output", str(self._out), "--nonblocking", "--full-filenames"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        try:
            if proc is None:
                return
            # SIGINT is py-spy's "stop and write what you have".
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if self._out.exists() and self._out.stat().st_size:
                self.result = shares_of(self._out.read_text(errors="replace"))
            else:
                why = err.decode(errors="replace").strip().splitlines()[-1:] or ["no samples"]
                self.result = {"error": f"py-spy: {why[0][:200]}"}
        finally:
            self._dir.cleanup()
