"""The scenario runner in-process: real mock, real proxy, real client subprocesses. Fresh proxy
state and the seed rule per scenario, progress calls, the record file, a real upstream, and the
full answer each scenario is judged against."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from chaosstream.clients.runner import RunOptions, expected_answer, run_scenarios
from chaosstream.faults.profile import Profile, load_profile, profile_from_data
from chaosstream.mock import MockSettings, answer_text, start_mock
from chaosstream.verify.results import ScenarioResult
from chaosstream.verify.scenario import Scenario
from chaosstream.yamlfile import InputError

PROGRAMS = Path(__file__).parent.parent / "programs"
QUICK = MockSettings(ttft_ms=10, tokens_per_s=1000, tokens=20)
CUT_FIRST = {
    "version": 1,
    "name": "cut-first",
    "faults": [
        {
            "type": "disconnect",
            "after_events": 3,
            "mode": "reset",
            "match": {"stream": True},
            "requests": [1],
        }
    ],
}


def client(name: str) -> list[str]:
    return [sys.executable, str(PROGRAMS / name)]


def scenario(
    name: str, profile: str | dict[str, Any], expect: list[Any], **extra: Any
) -> tuple[Scenario, Profile]:
    """A scenario and its profile, as a scenario file would give them."""
    s = Scenario.model_validate({"name": name, "profile": profile, "expect": expect, **extra})
    p = load_profile(profile) if isinstance(profile, str) else profile_from_data(profile, name)
    return s, p


class Progress:
    """Notes every call the runner makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self, name: str, index: int, total: int, timeout_s: float) -> None:
        self.calls.append(("start", name, index, total, timeout_s))

    def end(self, result: ScenarioResult) -> None:
        self.calls.append(("end", result.name, result.passed))


async def test_every_scenario_starts_from_fresh_proxy_state(tmp_path: Path) -> None:
    """The same cut-first profile twice: each scenario's counters restart, so the fault meets
    request #1 both times; exchange ids restart at 1; progress hears every start and end; the
    record file gets every exchange of the run."""
    record = tmp_path / "run.jsonl"
    progress = Progress()
    report = await run_scenarios(
        [
            scenario("first", CUT_FIRST, ["completes", "retries"], timeout_s=20),
            scenario("again", CUT_FIRST, ["completes", "retries"], timeout_s=21),
        ],
        client("well_behaved.py"),
        RunOptions(mock_settings=QUICK, seed=4, record=record),
        progress,
    )
    assert [r.name for r in report.results] == ["first", "again"]
    for result in report.results:
        assert result.passed, [v.evidence for v in result.verdicts]
        assert [e.id for e in result.exchanges] == [1, 2]
        assert [(e.outcome, [f.type for f in e.faults]) for e in result.exchanges] == [
            ("fault", ["disconnect"]),
            ("complete", []),
        ]
        assert result.client.exit_code == 0
    assert progress.calls == [
        ("start", "first", 0, 2, 20.0),
        ("end", "first", True),
        ("start", "again", 1, 2, 21.0),
        ("end", "again", True),
    ]
    rows = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["outcome"]) for r in rows] == [(1, "fault"), (2, "complete")] * 2
    assert report.upstream == "embedded mock" and report.seed == 4


async def test_the_seed_comes_from_options_then_scenario_then_profile_then_run() -> None:
    """--seed beats everything; else a scenario's seed, else its profile's, else the run's."""
    seeded_profile = {"version": 1, "name": "seeded", "seed": 55, "faults": []}
    scenarios = [
        scenario("own", "clean", ["completes"], seed=11),
        scenario("profile", seeded_profile, ["completes"]),
        scenario("run", "clean", ["completes"]),
    ]
    free = await run_scenarios(
        scenarios, client("well_behaved.py"), RunOptions(mock_settings=QUICK)
    )
    assert [r.seed for r in free.results] == [11, 55, free.seed]
    forced = await run_scenarios(
        scenarios, client("well_behaved.py"), RunOptions(mock_settings=QUICK, seed=9)
    )
    assert forced.seed == 9 and [r.seed for r in forced.results] == [9, 9, 9]
    assert all(r.passed for r in (*free.results, *forced.results))


async def test_a_missing_client_is_refused_before_anything_starts() -> None:
    """A command that cannot run is InputError before a mock, proxy or scenario starts."""
    progress = Progress()
    with pytest.raises(InputError, match="client command not found: 'no-such-client-xyz'"):
        await run_scenarios(
            [scenario("clean", "clean", ["completes"])],
            ["no-such-client-xyz"],
            RunOptions(mock_settings=QUICK),
            progress,
        )
    assert progress.calls == []


async def test_a_real_upstream_gets_no_dummy_keys_and_judges_by_its_own_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --upstream the runner starts no mock, the client gets no dummy key, and the full
    answer is what that upstream produced."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "print('key:', os.environ.get('OPENAI_API_KEY', '<none>'), file=sys.stderr)\n"
        f"sys.path.insert(0, {str(PROGRAMS)!r})\n"
        "from _common import chat, out\n"
        "text, ok = chat(stream=True)\n"
        "out(text)\n"
        "sys.exit(0 if ok else 1)\n",
        encoding="utf-8",
    )
    settings = MockSettings(ttft_ms=10, tokens_per_s=1000, tokens=9)
    async with await start_mock(settings=settings) as real:
        report = await run_scenarios(
            [scenario("clean", "clean", ["completes"])],
            [sys.executable, str(probe)],
            RunOptions(upstream=real.url, mock_settings=QUICK, seed=1),
        )
    (result,) = report.results
    assert report.upstream == real.url
    assert result.client.stderr == "key: <none>\n"
    assert result.passed, [v.evidence for v in result.verdicts]
    full = answer_text(result.exchanges[0].request_body, 9)
    assert result.client.stdout == full + "\n"
    assert expected_answer(result.exchanges, None) == full


async def test_expected_answer_never_takes_a_resumed_tail() -> None:
    """After a cut and a Last-Event-ID resume, the full answer is the mock's whole text for the
    prompt, not the tail the resumed request carried; with no mock and no whole answer there is
    none to judge against."""
    sse_cut = {
        "version": 1,
        "name": "sse-cut",
        "faults": [{"type": "disconnect", "after_events": 5, "mode": "reset", "requests": [1]}],
    }
    report = await run_scenarios(
        [scenario("resume", sse_cut, ["resumes", "completes"])],
        client("resume.py"),
        RunOptions(mock_settings=QUICK, seed=2),
    )
    (result,) = report.results
    assert result.passed, [v.evidence for v in result.verdicts]
    cut, tail = result.exchanges
    assert cut.outcome == "fault" and not cut.upstream_complete
    assert tail.last_event_id == "5" and tail.upstream_complete
    whole = answer_text("rivers", QUICK.tokens)
    assert expected_answer(result.exchanges, QUICK) == whole
    assert tail.response_text != whole
    assert expected_answer(result.exchanges, None) is None
    assert expected_answer([], QUICK) is None
    assert result.client.stdout == whole + "\n"


STALL = {
    "version": 1,
    "name": "stall",
    "faults": [{"type": "disconnect", "after_events": 2, "mode": "stall"}],
}


async def test_a_stream_left_open_by_one_scenario_is_not_judged_in_the_next(
    tmp_path: Path,
) -> None:
    """A client that leaves a stalled stream open past its scenario (a detached child holding
    it) does not lend that exchange, or its id 1, to the next scenario; the record file still
    gets it when it ends."""
    linger = tmp_path / "linger.py"
    linger.write_text(
        f"import sys, time\nsys.path.insert(0, {str(PROGRAMS)!r})\n"
        "from _common import connect\n"
        "conn = connect(20)\n"
        "conn.request('POST', '/v1/chat/completions', "
        '\'{"model":"m","stream":true,"messages":[]}\')\n'
        "time.sleep(8)\n",  # bounded: the proxy's close ends it sooner
        encoding="utf-8",
    )
    spawner = tmp_path / "spawner.py"
    spawner.write_text(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, sys.argv[1]], start_new_session=True,\n"
        "    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "time.sleep(0.5)\n",
        encoding="utf-8",
    )
    record = tmp_path / "run.jsonl"
    report = await run_scenarios(
        [
            scenario("leaves-a-stream", STALL, ["surfaces_error"], timeout_s=10),
            scenario("clean", "clean", ["completes"], timeout_s=10),
        ],
        [sys.executable, str(spawner), str(linger)],
        RunOptions(mock_settings=QUICK, seed=3, record=record),
    )
    first, second = report.results
    # Still open when judged (a stall's outcome is set as it begins): the first scenario's.
    assert [(e.id, e.outcome) for e in first.exchanges] == [(1, "fault")]
    assert [(e.id, e.outcome, e.faults) for e in second.exchanges] == [(1, "complete", [])]
    rows = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    assert sorted((r["id"], r["outcome"], len(r["faults"])) for r in rows) == [
        (1, "complete", 0),
        (1, "fault", 1),
    ]
