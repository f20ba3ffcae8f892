"""`chaosstream proxy --max-scopes` and scoped exchanges in `--record`, as a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from chaosstream.cli import commands
from chaosstream.proxy import scopes

CLI = [sys.executable, "-m", "chaosstream"]


def test_cli_default_equals_the_library_cap() -> None:
    """The flag's written-out default (no aiohttp import for --help) is the library's."""
    assert commands.MAX_SCOPES == scopes.MAX_SCOPES


def test_max_scopes_zero_is_bad_input() -> None:
    """--max-scopes 0 exits 2 naming the flag, no traceback."""
    done = subprocess.run(
        [*CLI, "proxy", "--profile", "clean", "--max-scopes", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--max-scopes" in done.stderr
    assert "Traceback" not in done.stderr


def test_scopes_capped_and_recorded(tmp_path: Path) -> None:
    """With --max-scopes 1 a second scope evicts the first; --record gets both exchanges."""
    log, record = tmp_path / "proxy.log", tmp_path / "ex.jsonl"
    args = ["proxy", "--profile", "clean", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*CLI, *args, "--max-scopes", "1", "--record", str(record)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        url = control = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not control:
            text = log.read_text(errors="replace")
            found = (
                re.search(r"listening on (http://\S+)", text),
                re.search(r"control:\s+(http://\S+)", text),
            )
            if all(found):
                url, control = found[0].group(1), found[1].group(1)  # type: ignore[union-attr]
            time.sleep(0.05)
        assert control, log.read_text(errors="replace")
        for name in ("first", "second"):
            with urllib.request.urlopen(f"{url}/~/{name}/v1/models", timeout=10) as resp:
                assert resp.status == 200
        with urllib.request.urlopen(f"{control}/chaos/scopes", timeout=10) as resp:
            listed = json.loads(resp.read())
        assert [s["scope"] for s in listed["scopes"]] == ["second"] and listed["evicted"] == 1
        # --record writes from a thread, soon after each exchange: wait for both lines.
        for _ in range(200):
            lines = [json.loads(line) for line in record.read_text().splitlines()]
            if len(lines) >= 2:
                break
            time.sleep(0.05)
        assert [line["path"] for line in lines] == ["/v1/models", "/v1/models"]
    finally:
        proc.terminate()
        proc.wait(10)
