"""Two hops: Chromium -> browser proxy -> a real AI SDK app server -> model proxy -> mock.

The app is ``tests/node/ai_sdk_app.mjs``: the AI SDK docs' route (``streamText`` with
``@ai-sdk/openai`` at OPENAI_BASE_URL, ``toUIMessageStreamResponse()``) on a plain Node
server that gzips like Next, serving ``tests/pages/docs_chat.html`` (no data-testid). The
four page runs share one app start (a module fixture); each test reads its scenario.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chaosstream.clients.app import BROWSER_IDS, AppProcess, merge_hops, split_hops
from chaosstream.clients.browser import PageDriver
from chaosstream.clients.runner import RunOptions, run_scenarios
from chaosstream.faults.profile import load_profile, profile_from_data
from chaosstream.mock import MockSettings
from chaosstream.proxy.record import Exchange
from chaosstream.verify.results import RunReport, ScenarioResult
from chaosstream.verify.scenario import AppServer, Scenario
from chaosstream.yamlfile import InputError

NODE_DIR = Path(__file__).parent.parent / "node"
APP = ["node", str(NODE_DIR / "ai_sdk_app.mjs")]
PAGE = "/?api=/api/chat"
QUICK = MockSettings(ttft_ms=100, tokens_per_s=200, tokens=40)
in_module_loop = pytest.mark.asyncio(loop_scope="module")

# (scenario name, profile, expectations, timeout_s)
RUNS: list[tuple[str, Any, list[Any], float]] = [
    ("clean", "clean", ["completes"], 20),
    ("model-close", "midstream-close", ["surfaces_error"], 20),
    ("model-stall", "silent-stall", ["surfaces_error"], 6),
    (
        "browser-cut",
        {
            "version": 1,
            "name": "browser-cut",
            "faults": [
                {
                    "type": "disconnect",
                    "after_events": 10,
                    "mode": "reset",
                    "hop": "browser",
                    "match": {"path": "/api/chat"},
                    "requests": [1],
                }
            ],
        },
        ["surfaces_error"],
        20,
    ),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def report(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunReport]:
    """The four scenarios through one app server and one Chromium."""
    assert shutil.which("node"), "Node 20+ runs the app server (scripts/test.sh installs it)"
    pairs = []
    for name, profile, expect, timeout_s in RUNS:
        data = {
            "name": name,
            "profile": profile,
            "expect": expect,
            "timeout_s": timeout_s,
            "client": {"browser": {"url": PAGE, "settle_ms": 800}},
        }
        prof = (
            load_profile(profile) if isinstance(profile, str) else profile_from_data(profile, "t")
        )
        pairs.append((Scenario.model_validate(data), prof))
    artifacts = tmp_path_factory.mktemp("app")
    async with PageDriver() as driver:
        options = RunOptions(
            mock_settings=QUICK,
            seed=5,
            page_driver=driver,
            artifacts_dir=artifacts,
            app=AppServer(command=APP),
        )
        yield await run_scenarios(pairs, [], options)


def result(report: RunReport, name: str) -> ScenarioResult:
    """The named scenario's result."""
    return next(r for r in report.results if r.name == name)


def explain(r: ScenarioResult) -> str:
    """Verdicts, evidence, hops and faults, for assertion messages."""
    lines = [f"{v.name}: {v.verdict}: {v.evidence}" for v in r.verdicts]
    lines += [f"#{e.id} {e.scope} {e.method} {e.path} {e.outcome} {e.faults}" for e in r.exchanges]
    return "\n".join(lines)


@in_module_loop
async def test_clean_two_hop_page_completes_without_test_ids(report: RunReport) -> None:
    """The AI SDK app's answer, gzipped on the browser hop, completes on the page."""
    r = result(report, "clean")
    assert r.passed, explain(r)
    hops = {e.scope for e in r.exchanges}
    assert hops == {"hop:model", "hop:browser"}, explain(r)
    chat = next(e for e in r.exchanges if e.scope == "hop:browser" and e.method == "POST")
    assert chat.provider == "ui-message-stream" and chat.id > BROWSER_IDS


@in_module_loop
async def test_model_hop_close_is_a_silent_truncation_on_the_page(report: RunReport) -> None:
    """A FIN on the app's model call: the app finishes its own stream cleanly, the page shows
    the partial answer as whole -- caught as a silent truncation."""
    r = result(report, "model-close")
    assert not r.passed
    assert r.observed.silent_truncation, explain(r)
    faulted = [e for e in r.exchanges if e.faults]
    assert [e.scope for e in faulted] == ["hop:model"], explain(r)
    browser = next(e for e in r.exchanges if e.scope == "hop:browser" and e.method == "POST")
    assert browser.outcome == "complete" and browser.upstream_complete  # the app said "finish"


@in_module_loop
async def test_model_hop_stall_is_a_hang_on_the_page(report: RunReport) -> None:
    """A silent model stream: the app waits, the page waits; the run ends as a hang."""
    r = result(report, "model-stall")
    assert not r.passed
    assert r.client.timed_out, explain(r)
    assert not r.observed.surfaced_error
    assert [f["type"] for f in r.observed.faults] == ["disconnect"]


@in_module_loop
async def test_browser_hop_cut_is_a_surfaced_error(report: RunReport) -> None:
    """A RST between page and app: the page's "An error occurred." is seen."""
    r = result(report, "browser-cut")
    assert r.passed, explain(r)
    assert r.observed.page is not None
    assert r.observed.page["error_shown"] == "An error occurred."
    faulted = [e for e in r.exchanges if e.faults]
    assert [e.scope for e in faulted] == ["hop:browser"], explain(r)


def test_split_hops_sends_faults_without_a_hop_to_the_model() -> None:
    """A fault without `hop` (and the network block) is the model hop's; `browser` faults
    are the browser hop's only."""
    profile = profile_from_data(
        {
            "version": 1,
            "name": "p",
            "network": {"latency_ms": 5},
            "faults": [
                {"type": "latency", "first_byte_ms": 1},
                {"type": "latency", "first_byte_ms": 2, "hop": "browser"},
                {"type": "latency", "first_byte_ms": 3, "hop": "model"},
            ],
        },
        "t",
    )
    model, browser = split_hops(profile)
    assert [f.first_byte_ms for f in model.faults] == [1, 3]  # type: ignore[attr-defined]
    assert [f.first_byte_ms for f in browser.faults] == [2]  # type: ignore[attr-defined]
    assert model.network is not None and browser.network is None


def test_merge_hops_numbers_browser_exchanges_after_the_model_ones() -> None:
    """One timeline: ordered by start, browser ids past BROWSER_IDS, each labelled."""

    def ex(i: int, started: float) -> Exchange:
        return Exchange(
            id=i, method="POST", path="/x", provider="sse", stream=True, started=started
        )

    merged = merge_hops([ex(1, 0.2)], [ex(1, 0.1), ex(2, 0.3)])
    assert [(e.id, e.scope) for e in merged] == [
        (BROWSER_IDS + 1, "hop:browser"),
        (1, "hop:model"),
        (BROWSER_IDS + 2, "hop:browser"),
    ]


@in_module_loop
async def test_app_that_exits_is_bad_input_with_its_output(tmp_path: Path) -> None:
    """An app command that dies before it is ready is exit 2, quoting what it printed."""
    app = AppProcess(
        AppServer(command=[sys.executable, "-c", "print('boom: no config'); raise SystemExit(3)"]),
        tmp_path / "app.log",
    )
    with pytest.raises(InputError, match=r"exited with code 3[\s\S]*boom: no config"):
        await app.start({})
    await app.close()


def test_check_app_runs_the_battery_on_the_model_hop(tmp_path: Path) -> None:
    """`check --app CMD --browser /` as a process: the clean scenario completes through both
    hops, and the docs' page is told it shows no typing indicator."""
    out = tmp_path / "r.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaosstream",
            "check",
            "--app",
            " ".join(APP),
            "--browser",
            PAGE,
            "--only",
            "clean",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The docs' page shows no typing indicator: the battery's clean run says so (exit 1).
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(out.read_text())
    (scenario,) = report["scenarios"]
    verdicts = {v["name"]: v["verdict"] for v in scenario["expectations"]}
    assert verdicts["resilient"] == "pass" and verdicts["shows_typing"] == "fail", verdicts
    assert scenario["observed"]["completed"]
