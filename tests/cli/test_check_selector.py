"""`check --selector PART=CSS`: named page parts reach the battery; bad ones are exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chaosstream.clients.browser import page_battery
from chaosstream.verify.battery import battery


def check(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m chaosstream check ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "chaosstream", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--browser", "/", "--selector", "answer=#out"], "'answer' is not a page part"),
        (["--browser", "/", "--selector", "output"], "'output': expected PART=CSS"),
        (["--selector", "input=#q", "--", "true"], "--selector is for pages"),
    ],
)
def test_bad_selector_is_exit_2_naming_it(args: list[str], message: str) -> None:
    """A bad --selector is refused before anything runs: exit 2, one line, no traceback."""
    done = check(*args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_selectors_reach_every_page_scenario_and_the_rest_stay_unnamed() -> None:
    """Named parts are set on each battery scenario; unnamed ones are left to the search."""
    scenarios = page_battery(battery(30), "/chat", {"input": "#q", "output": ".answer"})
    for scenario, _ in scenarios:
        assert scenario.client is not None
        sel = scenario.client.browser.selectors
        assert (sel.input, sel.output) == ("#q", ".answer")
        assert sel.model_fields_set == {"input", "output"}
