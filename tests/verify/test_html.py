"""The HTML report: one offline file, opened in real Chromium, its embedded data checked."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaosstream.clients.runner import RunOptions, run_scenarios
from chaosstream.mock import MockSettings
from chaosstream.verify.battery import BATTERY, battery
from chaosstream.verify.html import render_html, scenario_chart
from chaosstream.verify.results import RunReport
from chaosstream.verify.timeline import run_timeline

PROGRAMS = Path(__file__).parent.parent / "programs"
# Where the screenshot of one scenario is kept for a person to look at (as the browser tests do).
ARTIFACTS = Path(os.environ.get("CHAOSSTREAM_TEST_ARTIFACTS", "/tmp/cs"))
QUICK = MockSettings(ttft_ms=30, tokens_per_s=400, tokens=40)
DATA = re.compile(r'<script type="application/json" id="chaosstream-data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def battery_report() -> RunReport:
    """The whole battery against the swallowing client (stalls cut at 3 s)."""

    async def go() -> RunReport:
        options = RunOptions(seed=5, resilient=True, mock_settings=QUICK)
        command = [sys.executable, str(PROGRAMS / "swallow.py")]
        return await run_scenarios(battery(3), command, options)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def battery_html(battery_report: RunReport, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The battery's report written to a file."""
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render_html(battery_report), encoding="utf-8")
    return path


@pytest.fixture
def artifacts() -> Path:
    """The folder for a screenshot a person looks at after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def embedded(html: str) -> dict[str, Any]:
    """The report data the page carries."""
    match = DATA.search(html)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_battery_report_is_small_and_carries_its_data(
    battery_report: RunReport, battery_html: Path
) -> None:
    """Under 5 MB for the whole battery, every asset inline, the data block the whole timeline."""
    size = battery_html.stat().st_size
    assert size < 5 * 1024 * 1024, size
    html = battery_html.read_text(encoding="utf-8")
    assert not re.search(r'\b(src|href)="(https?:)?//', html)  # nothing fetched from anywhere
    data = embedded(html)
    assert data == json.loads(json.dumps(run_timeline(battery_report)))
    assert [s["name"] for s in data["scenarios"]] == [r.name for r in battery_report.results]
    assert len(data["scenarios"]) == len(BATTERY)
    for s, r in zip(data["scenarios"], battery_report.results, strict=True):
        assert len(s["lanes"]) == len(r.exchanges)
        assert [f["exchange"] for f in s["faults"]] == [e.id for e in r.exchanges for _ in e.faults]
        failed = {v.name for v in r.verdicts if v.verdict == "fail"}
        assert {v["name"] for v in s["expectations"] if v["verdict"] == "fail"} == failed
        if not r.passed:
            assert s["repro"] in html  # the summary's repro command
    # The swallowing client shows a cut answer as complete: the battery catches it.
    cut = next(s for s in data["scenarios"] if s["name"] == "midstream-close")
    assert not cut["passed"] and any(p["missing"] for p in cut["answer"]["pieces"])


def test_a_failed_scenario_shows_the_command_that_reruns_it(battery_report: RunReport) -> None:
    """With the run's command line known, each failed scenario's section has a `rerun:` line
    (its repro_run, HTML-escaped) and the embedded data carries it; a passed one has none."""
    from markupsafe import escape

    from chaosstream.verify.report import repro_run

    battery_report.origin, battery_report.command = ["check"], ["sh", "-c", "a && b"]
    try:
        expected = [repro_run(r, battery_report) for r in battery_report.results]
        html = render_html(battery_report)
    finally:
        battery_report.origin, battery_report.command = [], []
    data = embedded(html)
    assert [s["repro_run"] for s in data["scenarios"]] == expected
    for r, command in zip(battery_report.results, expected, strict=True):
        assert command is not None and f"--only {r.name} --seed 5 -- sh -c 'a && b'" in command
        assert (f"<p>rerun: <code>{escape(command)}</code></p>" in html) is not r.passed
    assert any(not r.passed for r in battery_report.results)


def test_report_text_cannot_break_out_of_the_page(battery_report: RunReport) -> None:
    """Client output with </script> and markup stays text in the data block and the page."""
    first = battery_report.results[0]
    hostile = "</script><script>alert(1)</script><b>bold</b>"
    first.client.stdout = hostile + first.client.stdout
    try:
        html = render_html(battery_report)
    finally:
        first.client.stdout = first.client.stdout[len(hostile) :]
    assert "<script>alert(1)" not in html and "<b>bold</b>" not in html
    assert embedded(html)["scenarios"][0]["shown_text"].startswith(hostile)


def test_chart_spec_is_vega_lite_with_one_lane_per_request(battery_report: RunReport) -> None:
    """The chart's lane axis lists the requests, in order, and the spec is schema-valid."""
    data = run_timeline(battery_report)
    storm = next(s for s in data["scenarios"] if s["lanes"])
    spec = scenario_chart(storm)
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    lanes = spec["vconcat"][0]["layer"][0]["encoding"]["y"]["scale"]["domain"]
    assert lanes == [lane["lane"] for lane in storm["lanes"]]


@pytest.mark.browser
async def test_report_opens_offline_in_chromium_without_errors(
    battery_html: Path, artifacts: Path
) -> None:
    """Real Chromium draws every chart, logs no error and makes no request but the file."""
    from chaosstream.clients.browser import PageDriver

    problems: list[str] = []
    requests: list[str] = []
    async with PageDriver() as driver:
        page = await driver.browser.new_page(viewport={"width": 1100, "height": 900})
        page.on(
            "console",
            lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        await page.goto(battery_html.as_uri())
        await page.wait_for_function("document.body.dataset.charts !== undefined")
        assert await page.evaluate("document.body.dataset.charts") == str(len(BATTERY))
        assert await page.locator("div.chart svg").count() == len(BATTERY)
        shot = artifacts / "html-report-midstream-close.png"
        section = page.locator('section[data-name="midstream-close"]')
        assert len(await section.screenshot(path=str(shot))) > 10_000
    assert problems == []
    assert requests == [battery_html.as_uri()]


def test_check_html_writes_the_report_and_refuses_a_missing_folder(tmp_path: Path) -> None:
    """`check --html FILE` writes the report (exit 1: the client fails); a bad path exits 2."""
    out = tmp_path / "r.html"
    base = [sys.executable, "-m", "chaosstream", "check", "--seed", "3", "--timeout-s", "5"]
    client = ["--", sys.executable, str(PROGRAMS / "swallow.py")]
    done = subprocess.run(
        [*base, "--only", "midstream-close", "--html", str(out), *client],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    data = embedded(out.read_text(encoding="utf-8"))
    assert [s["name"] for s in data["scenarios"]] == ["midstream-close"]
    assert data["seed"] == 3 and data["passed"] is False
    bad = subprocess.run(
        [*base, "--html", str(tmp_path / "nope" / "r.html"), *client],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "--html" in bad.stderr and "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
