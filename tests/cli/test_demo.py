"""`chaosstream demo`: a plain SDK client next to the reference client, in plain words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_shows_plain_client_failing_next_to_reference_client() -> None:
    """On a clean cut the plain SDK client shows a cut answer, the reference one recovers."""
    # No key and no base URL of the user's: the demo brings its own mock and dummy keys.
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    done = subprocess.run(
        [sys.executable, "-m", "chaosstream", "demo", "--profile", "midstream-close"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    out = done.stdout
    assert done.returncode == 0, (out, done.stderr)
    assert "plain SDK client" in out and "reference client" in out
    row = next(line for line in out.splitlines() if "midstream-close" in line)
    assert "cut after 12 events (FIN, no end event)" in row  # not `disconnect:close`
    assert "FAIL cut answer shown as complete" in row
    assert "PASS full answer after a retry" in row
    assert row.index("FAIL") < row.index("PASS")  # the plain client's column comes first
    assert "plain SDK client: 0/1 scenarios passed" in out
    assert "reference client: 1/1 scenarios passed" in out
    assert "chaosstream check -- python your_client.py" in out
    # The HTML report: both clients' runs, its path printed.
    line = next(line for line in out.splitlines() if line.startswith("HTML report (timelines): "))
    html = Path(line.split(": ", 1)[1].strip())
    try:
        text = html.read_text(encoding="utf-8")
        assert "plain SDK client: midstream-close" in text
        assert "reference client: midstream-close" in text
    finally:
        html.unlink()
