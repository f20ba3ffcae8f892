"""Browser clients: the runner drives a page in real Chromium through the proxy and judges it.

One Chromium serves the whole module. The reference page must pass what it
should under each built-in profile family; ``tests/pages/bad_chat.html`` (no
typing indicator, no Stop, no error state, a jumping layout) must fail exactly
the checks it deserves to fail, with a screenshot and console log named in the
JSON and JUnit reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

import chaosstream
from chaosstream.clients.browser import PageDriver, page_battery, resolve_url
from chaosstream.clients.runner import RunOptions, run_scenarios
from chaosstream.faults.profile import load_profile, profile_from_data
from chaosstream.mock import MockSettings, create_app
from chaosstream.verify.battery import battery
from chaosstream.verify.report import to_json, to_junit
from chaosstream.verify.results import RunReport, ScenarioResult
from chaosstream.verify.scenario import Scenario
from chaosstream.yamlfile import InputError

pytestmark = pytest.mark.browser
in_module_loop = pytest.mark.asyncio(loop_scope="module")

BAD_PAGE = Path(__file__).parent.parent / "pages" / "bad_chat.html"
WEB_DIR = Path(chaosstream.__file__).parent / "web"
SHOTS = Path("/tmp/cs")
# Short answers keep every run about a second; 40 tokens is enough for a cut after 12 events.
QUICK = MockSettings(ttft_ms=100, tokens_per_s=200, tokens=40)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def driver() -> AsyncIterator[PageDriver]:
    """One headless system Chromium for the module."""
    async with PageDriver() as d:
        yield d


def scenario(
    profile: str | dict[str, Any], expect: list[Any], url: str = "/?stall_ms=2000", **kw: Any
) -> tuple[Scenario, Any]:
    """A page scenario and its profile, as a scenario file would give them."""
    data = {"name": "page", "profile": profile, "expect": expect, "timeout_s": 25, **kw}
    data["client"] = {"browser": {"url": url, **data.get("client", {})}}
    s = Scenario.model_validate(data)
    prof = load_profile(profile) if isinstance(profile, str) else profile_from_data(profile, "t")
    return s, prof


async def run_page(
    driver: PageDriver,
    tmp_path: Path,
    *scenarios: tuple[Scenario, Any],
    settings: MockSettings = QUICK,
    upstream: str | None = None,
    resilient: bool = False,
) -> RunReport:
    """Run page scenarios through the real runner, reusing the module's browser."""
    options = RunOptions(
        upstream=upstream,
        mock_settings=settings,
        seed=7,
        resilient=resilient,
        page_driver=driver,
        artifacts_dir=tmp_path / "artifacts",
    )
    return await run_scenarios(list(scenarios), [], options)


def verdicts(result: ScenarioResult) -> dict[str, str]:
    """Expectation name -> pass/fail."""
    return {v.name: v.verdict for v in result.verdicts}


def keep(shot: Path, name: str) -> bytes:
    """The screenshot's bytes; a copy goes to /tmp/cs for a person to look at."""
    data = shot.read_bytes()
    SHOTS.mkdir(exist_ok=True)
    (SHOTS / name).write_bytes(data)
    return data


def explain(result: ScenarioResult) -> str:
    """Every verdict with its evidence, for assertion messages."""
    return "\n".join(f"{v.name}: {v.verdict}: {v.evidence}" for v in result.verdicts)


# --------------------------------------------------------------------------- reference page

# (built-in profile, page query, expectations the reference page must meet)
REFERENCE: list[tuple[str, str, list[Any]]] = [
    ("clean", "", ["completes", "shows_typing", "stable_layout"]),
    ("slow-first-token", "", ["shows_typing", "completes", "stable_layout"]),
    ("midstream-reset", "", ["retries", "completes", "stable_layout"]),
    ("midstream-close", "", ["retries", "completes"]),
    ("silent-stall", "stall_ms=2000", ["retries", "completes"]),
    # 429 (Retry-After 2), 503 (Retry-After 1), a cut stream, then success: 4 attempts.
    ("overloaded-api", "max_attempts=4", [{"retries": {"max_attempts": 5}}, "completes"]),
    ("buffering-proxy", "", ["shows_typing", "completes"]),
    ("malformed-events", "", ["retries", "completes"]),
    ("mobile-lossy", "", ["completes", "shows_typing", "stable_layout"]),
]


@in_module_loop
@pytest.mark.parametrize(("profile", "query", "expect"), REFERENCE, ids=[r[0] for r in REFERENCE])
async def test_reference_page_passes_under_each_profile(
    driver: PageDriver, tmp_path: Path, profile: str, query: str, expect: list[Any]
) -> None:
    """The reference page meets its expectations and the battery rule under each profile."""
    report = await run_page(
        driver, tmp_path, scenario(profile, expect, url=f"/?{query}"), resilient=True
    )
    result = report.results[0]
    assert result.passed, explain(result)
    page = result.observed.page
    assert page is not None and page["state"] == "complete"
    assert not result.observed.artifacts  # nothing failed, nothing saved
    if profile == "overloaded-api":
        assert result.observed.attempts == 4 and result.observed.respected_retry_after


@in_module_loop
async def test_reference_page_surfaces_error_then_retry_click_recovers(
    driver: PageDriver, tmp_path: Path
) -> None:
    """With one attempt the cut shows an error; the Retry click sends an equivalent request."""
    report = await run_page(
        driver,
        tmp_path,
        scenario("midstream-reset", ["surfaces_error", "retries", "completes"], "/?max_attempts=1"),
    )
    result = report.results[0]
    assert verdicts(result) == {
        "surfaces_error": "pass",
        "retries": "pass",
        "completes": "pass",
    }, explain(result)
    page = result.observed.page
    assert page is not None
    assert page["retry_clicked"] and "connection was lost" in page["error_shown"]
    assert result.observed.attempts == 2


@in_module_loop
async def test_reference_page_falls_back_after_two_cut_streams(
    driver: PageDriver, tmp_path: Path
) -> None:
    """Two streams closed early make the page ask once more without streaming, and complete."""
    cut_two = {
        "version": 1,
        "name": "cut-two",
        "faults": [
            {"type": "disconnect", "after_events": 5, "mode": "close", "requests": [1, 2]},
        ],
    }
    report = await run_page(driver, tmp_path, scenario(cut_two, ["falls_back", "completes"]))
    result = report.results[0]
    assert result.passed, explain(result)
    assert [e.stream for e in result.exchanges if e.method == "POST"] == [True, True, False]


@in_module_loop
async def test_reference_page_stop_closes_the_upstream_request(
    driver: PageDriver, tmp_path: Path
) -> None:
    """Stop aborts the fetch and the proxy sees its upstream request closed within a second."""
    slow = MockSettings(ttft_ms=50, tokens_per_s=25, tokens=200)
    report = await run_page(
        driver, tmp_path, scenario("clean", ["cancels_upstream"]), settings=slow
    )
    result = report.results[0]
    assert result.passed, explain(result)
    page = result.observed.page
    assert page is not None and page["state"] == "stopped" and page["stop_clicked"]
    closed = [e for e in result.exchanges if e.outcome == "client_gone"]
    assert len(closed) == 1


# --------------------------------------------------------------------------- the bad page


@pytest_asyncio.fixture(loop_scope="module")
async def bad_site() -> AsyncIterator[str]:
    """The mock's API with the bad page at /bad and the reference page at /: an upstream URL."""
    app = create_app(MockSettings(ttft_ms=700, tokens_per_s=80, tokens=40), web_dir=None)

    async def bad(request: web.Request) -> web.FileResponse:
        return web.FileResponse(BAD_PAGE)

    app.router.add_get("/bad", bad)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@in_module_loop
async def test_bad_page_fails_typing_layout_and_stop_but_completes(
    driver: PageDriver, tmp_path: Path, bad_site: str
) -> None:
    """On a clean network the bad page renders the answer but has no typing, jumps, can't stop."""
    expect = ["completes", "shows_typing", "stable_layout", "cancels_upstream"]
    report = await run_page(
        driver, tmp_path, scenario("clean", expect, url="/bad"), upstream=bad_site
    )
    result = report.results[0]
    assert verdicts(result) == {
        "completes": "pass",
        "shows_typing": "fail",
        "stable_layout": "fail",
        "cancels_upstream": "fail",
    }, explain(result)
    evidence = {v.name: v.evidence for v in result.verdicts}
    assert "no typing indicator" in evidence["shows_typing"]
    assert "no Stop control" in evidence["cancels_upstream"]
    page = result.observed.page
    assert page is not None and page["cls"] >= 0.1
    # Each shift keeps when it happened, after Send and in order, for the report's trace.
    assert result.page is not None and len(result.page.shift_ms) == len(result.page.shifts) > 0
    assert all(ms >= 0 for ms in result.page.shift_ms)
    assert result.page.shift_ms == sorted(result.page.shift_ms)


@in_module_loop
async def test_bad_page_truncates_silently_and_reports_artifacts(
    driver: PageDriver, tmp_path: Path, bad_site: str
) -> None:
    """A cut leaves the bad page showing partial text as final; the report names its artifacts."""
    report = await run_page(
        driver,
        tmp_path,
        scenario("midstream-reset", ["surfaces_error"], url="/bad"),
        upstream=bad_site,
        resilient=True,
    )
    result = report.results[0]
    assert verdicts(result) == {"surfaces_error": "fail", "resilient": "fail"}, explain(result)
    assert result.observed.silent_truncation
    assert "no error visible" in result.verdicts[0].evidence

    artifacts = result.observed.artifacts
    shot, log = Path(artifacts["screenshot"]), Path(artifacts["console"])
    assert shot.parent == tmp_path / "artifacts"
    assert keep(shot, "browser-bad-page-failed.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"stream failed" in keep(log, "browser-bad-page-failed.console.log")

    scenario_json = to_json(report)["scenarios"][0]
    assert scenario_json["observed"]["artifacts"] == artifacts
    assert scenario_json["observed"]["page"]["state"] == ""
    junit = to_junit(report)
    outs = "".join(e.text or "" for e in junit.iter("system-out"))
    assert f"[[ATTACHMENT|{shot}]]" in outs and f"[[ATTACHMENT|{log}]]" in outs


@in_module_loop
async def test_reference_page_saves_artifacts_when_an_expectation_fails(
    driver: PageDriver, tmp_path: Path
) -> None:
    """A clean run asked to surface an error fails, and its screenshot shows the finished page."""
    report = await run_page(driver, tmp_path, scenario("clean", ["surfaces_error"]))
    result = report.results[0]
    assert verdicts(result) == {"surfaces_error": "fail"}
    shot = Path(result.observed.artifacts["screenshot"])
    assert len(keep(shot, "browser-reference-complete.png")) > 5000


# --------------------------------------------------------------------------- files and CLI


@in_module_loop
async def test_missing_chromium_is_bad_input() -> None:
    """A browser path that does not exist is an InputError naming it, not a traceback."""
    with pytest.raises(InputError, match="--chromium /nonexistent/chromium: no such executable"):
        await PageDriver(executable="/nonexistent/chromium").start()


def test_page_url_resolves_against_the_proxy() -> None:
    """A path goes on the proxy; {proxy} is substituted in a full URL."""
    assert resolve_url("/?x=1", "http://127.0.0.1:9/") == "http://127.0.0.1:9/?x=1"
    assert resolve_url("http://localhost:3000/?api={proxy}", "http://127.0.0.1:9") == (
        "http://localhost:3000/?api=http://127.0.0.1:9"
    )


def test_check_browser_battery_drives_the_page_in_every_scenario() -> None:
    """`check --browser` keeps the battery's scenarios and adds the page checks where fitting."""
    scenarios = page_battery(battery(), "/")
    assert [s.name for s, _ in scenarios] == [s.name for s, _ in battery()]
    assert all(s.client is not None and s.client.browser.url == "/" for s, _ in scenarios)
    names = {s.name: [e.name for e in s.expect] for s, _ in scenarios}
    assert names["clean"] == ["resilient", "shows_typing", "stable_layout"]
    assert names["midstream-reset"] == ["resilient"]


def test_run_command_drives_a_page_and_writes_json(tmp_path: Path) -> None:
    """`chaosstream run` with a page scenario and no command exits 0 and reports the page."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "version: 1\n"
        "scenarios:\n"
        "  - name: clean-page\n"
        "    profile: clean\n"
        "    client: {browser: {url: /}}\n"
        "    expect: [completes, shows_typing, stable_layout]\n"
    )
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "chaosstream", "run", str(path), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    observed = data["scenarios"][0]["observed"]
    assert observed["completed"] and observed["page"]["state"] == "complete"
    assert [e["verdict"] for e in data["scenarios"][0]["expectations"]] == ["pass"] * 3


def test_check_rejects_both_browser_and_command() -> None:
    """`check --browser URL -- cmd` is a usage error (exit 2)."""
    proc = subprocess.run(
        [sys.executable, "-m", "chaosstream", "check", "--browser", "/", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "not both" in proc.stderr
