"""``chaosstream demo``: the whole `check` battery against the reference client.

Everything runs on loopback: the embedded mock model, the proxy, and
:mod:`chaosstream.examples.resilient_client` as a real subprocess, so what the
scorecard shows is exactly what ``chaosstream check`` would show for your own
client.
"""

from __future__ import annotations

import sys

from chaosstream.battery import battery
from chaosstream.profile import load_profile
from chaosstream.scenario import Scenario

# Short enough that the whole battery runs in well under a minute, longer
# than the battery's slowest first token (3 s).
IDLE_TIMEOUT_S = 4.0
SCENARIO_TIMEOUT_S = 45.0

REFERENCE_CLIENT = [
    sys.executable,
    "-m",
    "chaosstream.examples.resilient_client",
    "--idle-timeout",
    str(IDLE_TIMEOUT_S),
]
"""The command the demo runs: the reference client, with a demo-sized idle timeout."""


def run_demo(profiles: list[str] | None, seed: int) -> int:
    """Run the battery (or only ``profiles``) and print the scorecard; 0 when all pass."""
    from chaosstream.cli_run import execute

    if profiles:
        scenarios = [
            (Scenario(name=name, profile=name, timeout_s=SCENARIO_TIMEOUT_S), load_profile(name))
            for name in profiles
        ]
    else:
        scenarios = battery(SCENARIO_TIMEOUT_S)
    return execute(
        scenarios,
        REFERENCE_CLIENT,
        upstream=None,
        seed=seed,
        json_path=None,
        junit_path=None,
        record=None,
        resilient=True,
        title="chaosstream demo: the reference client vs the check battery",
    )
