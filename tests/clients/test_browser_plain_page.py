"""Pages without our data-testids: parts found by role and text, judged on what a person sees.

``tests/pages/docs_chat.html`` is shaped like the AI SDK docs' useChat page: a form with
one text field and a submit button, "User: " / "AI: " before each message, "An error
occurred." with a Retry button. It is driven in real Chromium through the proxy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from chaosstream.clients.browser import PageDriver
from chaosstream.clients.runner import RunOptions, run_scenarios
from chaosstream.faults.profile import load_profile
from chaosstream.mock import MockSettings, create_app
from chaosstream.verify.results import RunReport, ScenarioResult
from chaosstream.verify.scenario import Scenario

pytestmark = pytest.mark.browser
in_module_loop = pytest.mark.asyncio(loop_scope="module")

DOCS_PAGE = Path(__file__).parent.parent / "pages" / "docs_chat.html"
QUICK = MockSettings(ttft_ms=100, tokens_per_s=200, tokens=40)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def driver() -> AsyncIterator[PageDriver]:
    """One headless Chromium for the module."""
    async with PageDriver() as d:
        yield d


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site() -> AsyncIterator[str]:
    """The mock (its UI-stream route /api/ui/chat) with the docs-shaped page at /docs."""
    app = create_app(QUICK, web_dir=None)

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(DOCS_PAGE)

    app.router.add_get("/docs", page)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def run(
    driver: PageDriver, tmp_path: Path, site: str, profile: str, expect: list[Any], **browser: Any
) -> ScenarioResult:
    """One page scenario through the real runner; its result."""
    data = {
        "name": profile,
        "profile": profile,
        "expect": expect,
        "timeout_s": 20,
        "client": {"browser": {"url": "/docs", "settle_ms": 800, **browser}},
    }
    scenario = Scenario.model_validate(data)
    options = RunOptions(
        upstream=site, seed=3, page_driver=driver, artifacts_dir=tmp_path / "artifacts"
    )
    report: RunReport = await run_scenarios([(scenario, load_profile(profile))], [], options)
    return report.results[0]


def explain(result: ScenarioResult) -> str:
    """Every verdict with its evidence, and the chosen elements, for assertion messages."""
    page = result.observed.page or {}
    lines = [f"{v.name}: {v.verdict}: {v.evidence}" for v in result.verdicts]
    return "\n".join([*lines, f"elements: {page.get('elements')}"])


@in_module_loop
async def test_docs_page_completes_with_parts_found_by_role(
    driver: PageDriver, tmp_path: Path, site: str
) -> None:
    """Clean: the only text field, the form's submit, the growing block; the answer inside
    "AI: ..." completes, and the report names the elements chosen."""
    result = await run(driver, tmp_path, site, "clean", ["completes", "surfaces_error"])
    verdicts = {v.name: v.verdict for v in result.verdicts}
    assert verdicts == {"completes": "pass", "surfaces_error": "fail"}, explain(result)
    page = result.observed.page
    assert page is not None
    elements = page["elements"]
    assert elements["input"] == "input[name=prompt] (the only text field)"
    assert elements["send"] == "button (the prompt form's submit button)"
    assert elements["output"] == "div (the last text block that grew after Send)"
    assert elements["error"] == "none found"


@in_module_loop
async def test_docs_page_cut_by_reset_surfaces_its_error_notice(
    driver: PageDriver, tmp_path: Path, site: str
) -> None:
    """A RST mid-answer: "An error occurred." is what a person sees, so the error is surfaced."""
    result = await run(driver, tmp_path, site, "midstream-reset", ["surfaces_error"])
    assert result.passed, explain(result)
    assert result.observed.page is not None
    assert result.observed.page["error_shown"] == "An error occurred."


@in_module_loop
async def test_docs_page_cut_by_clean_close_is_a_silent_truncation(
    driver: PageDriver, tmp_path: Path, site: str
) -> None:
    """A FIN without the finish part: the page shows the partial answer as final."""
    result = await run(driver, tmp_path, site, "midstream-close", ["surfaces_error"])
    assert not result.passed
    assert result.observed.silent_truncation, explain(result)
    assert [f["type"] for f in result.observed.faults] == ["disconnect"]


@in_module_loop
async def test_named_selectors_are_used_as_given(
    driver: PageDriver, tmp_path: Path, site: str
) -> None:
    """`selectors:` in the scenario win over the search, and the report says they were named."""
    selectors = {"input": "#chat input", "send": "#chat button", "output": "#messages"}
    result = await run(driver, tmp_path, site, "clean", ["completes"], selectors=selectors)
    assert result.passed, explain(result)
    assert result.observed.page is not None
    elements = result.observed.page["elements"]
    assert elements["input"] == "#chat input (named)"
    assert elements["send"] == "#chat button (named)"
    assert elements["output"] == "div#messages"
