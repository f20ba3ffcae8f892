"""The `check` battery: the DESIGN.md list, each scenario under the shipped profile of its name."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from chaosstream.cli import docs
from chaosstream.cli.commands import cli
from chaosstream.faults.profile import PROFILE_DIR, Profile, builtin_names
from chaosstream.verify.battery import BATTERY, battery
from chaosstream.yamlfile import load_text

# Faults a retry can recover from: the battery fires them on the first attempt only.
RECOVERABLE = ("disconnect", "http_error", "stream_error", "corrupt", "content")


def test_battery_covers_the_design_list() -> None:
    """The battery has the scenarios DESIGN.md lists, each with a valid profile, plus the
    keep-alive-only stall and the length stop (issue 14)."""
    names = [name for name, _ in BATTERY]
    assert names == [
        "clean",
        "slow-first-token",
        "midstream-reset",
        "midstream-close",
        "silent-stall",
        "keepalive-stall",
        "rate-limited-429",
        "unavailable-503",
        "overloaded-in-stream",
        "malformed-event",
        "buffering-middlebox",
        "length-stop",
        "mobile-3g-lossy",
    ]
    loaded = battery(timeout_s=5)
    assert [s.name for s, _ in loaded] == names
    assert all(s.timeout_s == 5 for s, _ in loaded)
    types = {f.type for _, p in loaded for f in p.faults}
    assert {"disconnect", "latency", "http_error", "stream_error", "corrupt", "buffer"} <= types
    assert "content" in types


def test_every_battery_profile_is_builtin() -> None:
    """Each `check` scenario's profile is a built-in `profiles show` knows and the docs list."""
    names = builtin_names()
    page = docs.render()
    for (scenario, profile), (_, ref) in zip(battery(), BATTERY, strict=True):
        assert scenario.profile == profile.name == ref and ref in names, scenario.name
        shown = CliRunner().invoke(cli, ["profiles", "show", ref])
        assert shown.exit_code == 0 and f"name: {ref}" in shown.output, shown.output
        assert f"| `{scenario.name}` | `{ref}` |" in page
    assert "`resilient`" in page


def test_battery_profiles_are_the_shipped_files() -> None:
    """Each profile equals its file in the package's profiles/; scenarios carry only the battery
    rule (`resilient`, the default of a scenario naming none) and a 60 s limit by default."""
    for scenario, profile in battery():
        shipped = PROFILE_DIR / f"{scenario.profile}.yaml"
        source = f"profiles/{scenario.profile}.yaml"
        assert profile == load_text(Profile, shipped.read_text(encoding="utf-8"), source)
        assert [e.name for e in scenario.expect] == ["resilient"], scenario
        assert scenario.timeout_s == 60.0, scenario
        assert scenario.seed is None and scenario.client is None, scenario


def test_recoverable_faults_hit_the_first_attempt_only() -> None:
    """Cuts, refusals, error events and corruption fire on request 1, always: a client that
    retries can complete, and every scenario but `clean` has something to meet."""
    for scenario, profile in battery():
        for fault in profile.faults:
            if fault.type in RECOVERABLE:
                assert fault.requests == [1] and fault.probability == 1, (scenario.name, fault)
                assert fault.every is None and fault.window is None, (scenario.name, fault)
        has_chaos = bool(profile.faults) or profile.network is not None
        assert has_chaos == (scenario.name != "clean"), scenario.name


def test_a_file_named_like_a_builtin_does_not_replace_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` run in a folder holding a file called `clean` still runs the built-in `clean`."""
    (tmp_path / "clean").write_text(
        "version: 1\nname: impostor\nfaults: [{type: buffer}]\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    profiles = {scenario.name: profile for scenario, profile in battery()}
    assert profiles["clean"].name == "clean" and profiles["clean"].faults == []
