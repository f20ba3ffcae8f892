"""Hostile inputs: profile and scenario files an attacker or a typo could write."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from chaosstream.cli.commands import cli
from chaosstream.faults import Buffer, Chunk, Match, SystemClock, Window
from chaosstream.faults.profile import Profile, load_profile, profile_from_text
from chaosstream.faults.trigger import (
    MAX_HEADER_VALUE_CHARS,
    MIN_GATE_STEP_S,
    Injector,
    matches,
)
from chaosstream.mock import MockServer
from chaosstream.testing import make_request
from chaosstream.yamlfile import MAX_ERRORS, MAX_INPUT_BYTES, InputError, load_file
from tests.conftest import ProxyFactory, make_profile

EVIL = "(a+)+$"
"""Exponential for a backtracking engine on a run of a's that ends in a mismatch."""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def bad_profile(tmp_path: Path, text: str) -> str:
    """The message a profile file gets, asserting it is an input error."""
    with pytest.raises(InputError) as err:
        load_profile(str(write(tmp_path, text)))
    return str(err.value)


def header_profile(pattern: str) -> str:
    return (
        "version: 1\nname: h\nfaults:\n  - type: http_error\n    status: 503\n"
        f"    match:\n      headers:\n        x-team: '{pattern}'\n"
    )


# --- match.headers regexes -------------------------------------------------------


def test_bad_header_regex_fails_at_load_with_line(tmp_path: Path) -> None:
    """An unclosed group in match.headers is a load error naming file, line and header."""
    msg = bad_profile(tmp_path, header_profile("(unclosed"))
    assert msg.startswith(f"{tmp_path / 'p.yaml'}:8: faults[0].match.headers.x-team: "), msg
    assert "regular expression" in msg and "missing )" in msg, msg


def test_backreference_is_refused_at_load(tmp_path: Path) -> None:
    """A regex the linear-time engine cannot run (a backreference) is refused at load."""
    msg = bad_profile(tmp_path, header_profile(r"(a)\1"))
    assert ":8: faults[0].match.headers.x-team:" in msg, msg


def test_catastrophic_header_regex_matches_in_linear_time() -> None:
    """(a+)+$ against a long run of a's ending in '!' answers at once (backtracking took 27 s)."""
    request = make_request(headers={"x-team": "a" * 27 + "!"})
    start = time.perf_counter()
    assert not matches(Match(headers={"x-team": EVIL}), request)
    assert time.perf_counter() - start < 1.0


def test_header_value_matched_only_up_to_the_cap() -> None:
    """Only the first MAX_HEADER_VALUE_CHARS characters of a header value are matched."""
    long_value = "x" * MAX_HEADER_VALUE_CHARS + "needle"
    assert not matches(
        Match(headers={"x-team": "needle"}), make_request(headers={"x-team": long_value})
    )
    assert matches(Match(headers={"x-team": "^x+$"}), make_request(headers={"x-team": long_value}))


async def test_evil_header_does_not_freeze_the_proxy(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A request whose header meets (a+)+$ gets its answer fast, and so do others at once."""
    profile = make_profile(
        [{"type": "http_error", "status": 503, "match": {"headers": {"x-team": EVIL}}}]
    )
    proxy = await proxy_factory(mock.url, profile)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    async def post(session: aiohttp.ClientSession, team: str) -> int:
        async with session.post(
            proxy.url + "/v1/chat/completions", json=body, headers={"X-Team": team}
        ) as resp:
            await resp.read()
            return resp.status

    start = time.monotonic()
    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(
            post(session, "a" * 28 + "!"), post(session, "aaaa"), post(session, "b")
        )
    assert statuses == [200, 503, 200]
    assert time.monotonic() - start < 3.0


# --- duplicate keys -----------------------------------------------------------------


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    """after_events given twice is an error naming both lines, not a silent last-wins."""
    msg = bad_profile(
        tmp_path,
        "version: 1\nname: d\nfaults:\n  - type: disconnect\n"
        "    after_events: 1\n    mode: reset\n    after_events: 2\n",
    )
    assert msg == f"{tmp_path / 'p.yaml'}:7: duplicate key 'after_events' (first at line 5)"
    # A merge (<<) followed by an explicit key is an override, and the line is the override's.
    merged = bad_profile(
        tmp_path,
        "version: 1\nname: m\nfaults:\n  - <<: {type: disconnect, after_events: 1}\n"
        "    after_events: -3\n",
    )
    assert "duplicate key" not in merged and ":5: faults[0].after_events:" in merged, merged


# --- size caps ------------------------------------------------------------------------


def test_validate_dev_zero_exits_2_with_a_clear_message() -> None:
    """`profiles validate /dev/zero` stops at the size cap: exit 2, one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "chaosstream", "profiles", "validate", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "/dev/zero: larger than the 1 MiB input cap" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_cap_is_settable_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CHAOSSTREAM_MAX_INPUT_BYTES lowers (or raises) the cap."""
    path = write(tmp_path, "version: 1\nname: small\n" + "#" * 200 + "\n")
    assert load_file(Profile, path).name == "small"
    monkeypatch.setenv("CHAOSSTREAM_MAX_INPUT_BYTES", "100")
    with pytest.raises(InputError, match="larger than the 100 B input cap"):
        load_file(Profile, path)


def test_profile_text_is_capped_too() -> None:
    """Profile text (as the control API gets it) obeys the same cap and duplicate-key rule."""
    assert profile_from_text("version: 1\nname: t\n", "request body").name == "t"
    with pytest.raises(InputError, match="request body: larger than the 1 MiB input cap"):
        profile_from_text("version: 1\nname: t\n#" + "x" * MAX_INPUT_BYTES, "request body")
    with pytest.raises(InputError, match=r"request body:2: duplicate key 'name'"):
        profile_from_text("name: a\nname: b\nversion: 1\n", "request body")


# --- recurring windows ---------------------------------------------------------------


def test_tiny_recurring_window_is_refused_at_load(tmp_path: Path) -> None:
    """every_s/for_s below 10 ms (a 2 us window spun the loop) are load errors with a line."""
    msg = bad_profile(
        tmp_path,
        "version: 1\nname: w\nfaults:\n  - type: buffer\n"
        "    window:\n      every_s: 0.000002\n      for_s: 0.000001\n",
    )
    assert ":6: faults[0].window.every_s: Input should be greater than or equal to 0.01" in msg
    assert ":7: faults[0].window.for_s: Input should be greater than or equal to 0.01" in msg


class CountingClock(SystemClock):
    """The real clock, counting the timers the code under test sets."""

    def __init__(self) -> None:
        self.sleeps = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        await super().sleep(seconds)


async def test_window_gate_cannot_busy_loop() -> None:
    """Even a 2 us window built past validation wakes at most once a millisecond."""
    clock = CountingClock()
    fault = Buffer(window=Window.model_construct(every_s=2e-6, for_s=1e-6))
    injector = Injector([fault], 0, clock)
    armed = injector.arm(1, make_request(), clock.now())[0]

    async def silent() -> AsyncIterator[Chunk]:
        await asyncio.sleep(0.5)
        return
        yield

    wall = time.monotonic()
    async for _ in armed.apply(silent()):
        pass
    wall = time.monotonic() - wall
    assert wall >= 0.45
    # One wake-up per millisecond at most (plus slack for the last, partial one).
    assert clock.sleeps <= wall / MIN_GATE_STEP_S + 10, f"{clock.sleeps} timers in {wall:.2f} s"


# --- messages: sorted, did you mean, no pydantic prefixes -------------------------------


def test_errors_sorted_by_line(tmp_path: Path) -> None:
    """Validation errors come in the order of the file's lines."""
    msg = bad_profile(
        tmp_path,
        "version: 1\nname: s\nnetwork:\n  latency_ms: -1\nfaults:\n  - type: disconnect\n"
        "    after_events: 1\n    mode: explode\nseed: nope\n",
    )
    lines = [int(line.split(":")[1]) for line in msg.splitlines()]
    assert lines == sorted(lines) and len(lines) == 3, msg


def test_error_list_is_capped(tmp_path: Path) -> None:
    """A file with thousands of problems lists the first MAX_ERRORS and counts the rest."""
    faults = "".join(f"  - {{type: noop, bad{i}: 1}}\n" for i in range(MAX_ERRORS + 500))
    msg = bad_profile(tmp_path, "version: 1\nname: many\nfaults:\n" + faults)
    lines = msg.splitlines()
    assert len(lines) == MAX_ERRORS + 1, len(lines)
    assert ":4: faults[0].bad0: unknown field" in lines[0]
    assert lines[-1] == "... and 500 more problems"


def test_unknown_field_suggests_the_known_one(tmp_path: Path) -> None:
    """A misspelt field gets a "did you mean" from the fields its entry knows."""
    msg = bad_profile(
        tmp_path,
        "version: 1\nname: u\nfaults:\n  - type: disconnect\n    after_event: 3\n    mode: reset\n",
    )
    assert ":5: faults[0].after_event: unknown field; did you mean 'after_events'?" in msg, msg


def test_unknown_fault_type_suggests_the_known_one(tmp_path: Path) -> None:
    """A misspelt fault type gets a "did you mean"."""
    msg = bad_profile(tmp_path, "version: 1\nname: u\nfaults:\n  - type: disconect\n")
    assert "did you mean 'disconnect'?" in msg, msg


def test_unknown_profile_name_suggests_a_builtin() -> None:
    """A misspelt built-in profile name gets a "did you mean"."""
    with pytest.raises(InputError, match="did you mean 'midstream-reset'"):
        load_profile("midstream-rest")


def test_validate_cli_prints_sorted_suggestions(tmp_path: Path) -> None:
    """`profiles validate` shows the sorted, suggested messages with exit 2."""
    path = write(
        tmp_path,
        "version: 1\nname: v\nfaults:\n  - type: latency\n    first_byte_m: 5\nsed: 3\n",
    )
    result = CliRunner().invoke(cli, ["profiles", "validate", str(path)])
    assert result.exit_code == 2
    out = result.output
    assert out.index(":5: faults[0].first_byte_m") < out.index(":6: sed"), out
    assert "did you mean 'first_byte_ms'?" in out and "did you mean 'seed'?" in out, out


def test_resilient_in_a_scenario_file_is_judged(tmp_path: Path) -> None:
    """`run` judges `expect: [resilient]`: a client that hides a cut fails it, with evidence."""
    path = write(
        tmp_path,
        "version: 1\nscenarios:\n  - name: cut\n    profile: midstream-close\n"
        "    expect: [resilient]\n    timeout_s: 30\n",
        "s.yaml",
    )
    report = tmp_path / "r.json"
    client = [sys.executable, str(Path(__file__).parent / "programs" / "swallow.py")]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaosstream",
            "run",
            str(path),
            "--json",
            str(report),
            "--",
            *client,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    expectations = json.loads(report.read_text())["scenarios"][0]["expectations"]
    assert [(e["name"], e["verdict"]) for e in expectations] == [("resilient", "fail")]
    assert "silent truncation" in expectations[0]["evidence"]
