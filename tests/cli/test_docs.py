"""docs/profiles.md: generated from the schema and docstrings, complete, checked for freshness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chaosstream.cli import docs
from chaosstream.faults import FAULT_TYPES
from chaosstream.faults.profile import PROFILE_DIR, builtin_names, profile_schema


def test_docs_page_is_fresh() -> None:
    """docs/profiles.md equals what `python -m chaosstream.cli.docs` generates."""
    assert docs.DOCS_PATH.read_text(encoding="utf-8") == docs.render(), (
        "docs/profiles.md is stale: run python -m chaosstream.cli.docs"
    )


def test_docs_cover_every_field() -> None:
    """Every field of every fault, of network, match and window appears in the page."""
    page = docs.render()
    defs = profile_schema()["$defs"]
    for name in ["Network", "Match", "Window", *(c.__name__ for c in FAULT_TYPES)]:
        for field in defs[name].get("properties", {}):
            assert f"`{field}`" in page, (name, field)
    for name in builtin_names():
        assert f"### `{name}`" in page
    assert "RFC 6298" in page


def test_page_shows_each_fault_docstring_and_each_builtin_file() -> None:
    """A fault's section holds its docstring; a built-in's section holds its YAML verbatim."""
    page = docs.render()
    for cls in FAULT_TYPES:
        name = cls.model_fields["type"].default
        first = (cls.__doc__ or "").strip().splitlines()[0]
        section = page.split(f"### `{name}`\n", 1)[1].split("\n### ", 1)[0]
        assert first in section, name
    for name in builtin_names():
        text = (PROFILE_DIR / f"{name}.yaml").read_text(encoding="utf-8").strip()
        assert f"```yaml\n{text}\n```" in page, name
    assert page.startswith("# Profiles\n") and page.endswith("\n") and not page.endswith("\n\n")


def test_trigger_fields_are_documented_once_not_per_fault() -> None:
    """probability, match, requests, every and window: in the trigger section, not per fault."""
    page = docs.render()
    assert set(docs.TRIGGER_FIELDS) >= {"probability", "match", "requests", "every", "window"}
    faults = page.split("## Fault types\n", 1)[1].split("## The loss model", 1)[0]
    triggers = page.split("## Trigger fields (every fault)\n", 1)[1].split("## Fault types", 1)[0]
    for field in (f for f in docs.TRIGGER_FIELDS if f != "type"):  # `type` heads each fault
        assert f"| `{field}` |" in triggers, field
        assert f"| `{field}` |" not in faults, field


def test_main_writes_the_page_and_check_tells_stale_from_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` exits 1 on a missing or edited page, 0 once main() has written it."""
    page = tmp_path / "docs" / "profiles.md"
    monkeypatch.setattr(docs, "DOCS_PATH", page)
    assert docs.main(["--check"]) == 1
    assert docs.main([]) == 0
    assert page.read_text(encoding="utf-8") == docs.render()
    assert f"wrote {page}" in capsys.readouterr().out
    assert docs.main(["--check"]) == 0
    page.write_text(docs.render() + "hand edit\n", encoding="utf-8")
    assert docs.main(["--check"]) == 1
    assert f"{page} is stale: run python -m chaosstream.cli.docs" in capsys.readouterr().err


def test_module_check_passes_on_the_committed_page() -> None:
    """`python -m chaosstream.cli.docs --check` (what CI can run) exits 0 and writes nothing."""
    before = docs.DOCS_PATH.stat().st_mtime_ns
    done = subprocess.run(
        [sys.executable, "-m", "chaosstream.cli.docs", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and docs.DOCS_PATH.stat().st_mtime_ns == before
