"""Timelines from real runs: a swallowing and a storming client through the proxy and the mock."""

from __future__ import annotations

import sys
from pathlib import Path

from chaosstream.clients.runner import RunOptions, run_scenarios
from chaosstream.mock import MockSettings
from chaosstream.verify.battery import battery
from chaosstream.verify.results import RunReport
from chaosstream.verify.timeline import EVENT_LIMIT, run_timeline, scenario_timeline

PROGRAMS = Path(__file__).parent.parent / "programs"
QUICK = MockSettings(ttft_ms=30, tokens_per_s=400, tokens=40)


async def _run(program: str, *names: str) -> RunReport:
    scenarios = [(s, p) for s, p in battery(6) if s.name in names]
    options = RunOptions(seed=5, resilient=True, mock_settings=QUICK)
    return await run_scenarios(scenarios, [sys.executable, str(PROGRAMS / program)], options)


async def test_swallowing_client_timeline_has_lanes_cut_and_missing_answer() -> None:
    """A cut stream: one lane, its events stamped before the cut, the marker at the fault's time."""
    report = await _run("swallow.py", "midstream-reset")
    (result,) = report.results
    data = scenario_timeline(result, report.upstream)
    (ex,) = result.exchanges
    assert [lane["exchange"] for lane in data["lanes"]] == [ex.id]
    assert data["lanes"][0]["attempt"] == 1 and data["lanes"][0]["stream"] is True
    (fault,) = ex.faults
    (marker,) = data["faults"]
    assert marker["type"] == "disconnect" and marker["action"] == "reset"
    assert marker["t_ms"] == round(fault.at_ms, 1)  # the first request is the origin
    assert "cut after 12 events" in marker["label"]
    events = data["events"]
    assert len(events) == ex.events == data["lanes"][0]["events"] == 12
    times = [e["t_ms"] for e in events]
    assert times == sorted(times)
    assert data["lanes"][0]["first_byte_ms"] <= times[0] <= marker["t_ms"] + 1.0
    kinds = {e["kind"] for e in events}
    assert "token" in kinds and "terminal" not in kinds  # no terminal event reached the client
    failing = [v["name"] for v in data["expectations"] if v["verdict"] == "fail"]
    assert failing == [v.name for v in result.verdicts if v.verdict == "fail"] == ["resilient"]
    answer = data["answer"]
    assert answer is not None and not answer["complete"]
    assert "".join(p["text"] for p in answer["pieces"]) == result.answer
    assert any(p["missing"] for p in answer["pieces"])


async def test_storming_client_timeline_shows_retry_after_ignored() -> None:
    """A 429 with Retry-After: the window is shaded on the refused lane, the retry came early."""
    report = await _run("storm.py", "rate-limited-429")
    (result,) = report.results
    data = run_timeline(report)["scenarios"][0]
    assert len(data["lanes"]) == result.observed.attempts == len(result.exchanges) == 2
    assert [lane["attempt"] for lane in data["lanes"]] == [1, 2]
    refusal = next(f for f in data["faults"] if f["action"] == "refuse")
    assert refusal["label"] == "429 refused" and refusal["exchange"] == data["lanes"][0]["exchange"]
    (wait,) = data["waits"]
    assert wait["respected"] is False and wait["next"] == data["lanes"][1]["exchange"]
    assert wait["retry_after_ms"] - wait["from_ms"] == 1000.0
    assert wait["waited_ms"] < 500
    # The retry streamed to the end: its lane ends on the terminal event.
    assert data["events"][-1]["kind"] == "terminal"
    assert data["events"][-1]["lane"] == data["lanes"][1]["lane"]
    failing = [v["name"] for v in data["expectations"] if v["verdict"] == "fail"]
    assert failing == ["resilient"]
    assert data["answer"]["complete"] is True
    # stdout growth is stamped on the same clock: the text shows after the retry's first byte.
    assert data["output"] and data["output"][-1]["t_ms"] >= data["lanes"][1]["first_byte_ms"]


async def test_events_per_lane_are_capped() -> None:
    """A long stream draws at most EVENT_LIMIT events, and still says how many were delivered."""
    long = MockSettings(ttft_ms=1, tokens_per_s=100_000, tokens=EVENT_LIMIT + 500)
    scenarios = [(s, p) for s, p in battery(6) if s.name == "clean"]
    report = await run_scenarios(
        scenarios,
        [sys.executable, str(PROGRAMS / "swallow.py")],
        RunOptions(seed=5, resilient=True, mock_settings=long),
    )
    data = scenario_timeline(report.results[0], report.upstream)
    lane = data["lanes"][0]
    assert lane["events"] > EVENT_LIMIT == lane["events_drawn"] == len(data["events"])
    assert data["events"][-1]["kind"] == "terminal"  # the last one is always kept


async def test_page_layout_shift_trace_has_times_and_running_cls() -> None:
    """A page's layout shifts reach the report with their time since Send and the CLS so far."""
    from chaosstream.verify.page import PageObservation

    report = await _run("swallow.py", "clean")
    (result,) = report.results
    result.page = PageObservation(url="/", shifts=[0.02, 0.05], shift_ms=[120.0, 480.5])
    page = scenario_timeline(result, report.upstream)["page"]
    assert page["shift_trace"] == [
        {"ms": 120.0, "value": 0.02, "cls": 0.02},
        {"ms": 480.5, "value": 0.05, "cls": 0.07},
    ]
