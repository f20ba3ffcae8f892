"""Which Chromium drives a page: --chromium / $CHAOSSTREAM_CHROMIUM, Playwright's own, then PATH.

Every test launches (or fails to launch) a real browser through Playwright.
The "found on PATH" browsers are tiny wrapper scripts that leave a mark and
then exec the system Chromium, so a test can tell which candidate really ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chaosstream.browser import CHROMIUM_ENV, CHROMIUM_NAMES, PageDriver
from chaosstream.yamlfile import InputError

pytestmark = pytest.mark.browser

CHECK = [sys.executable, "-m", "chaosstream", "check"]
SYSTEM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


def wrapper(folder: Path, name: str, mark: Path) -> Path:
    """An executable ``name`` in ``folder`` that touches ``mark`` and runs the system Chromium."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    # No PATH lookups before the exec: the tests run with PATH pointing only at `folder`.
    script.write_text(
        f'#!/bin/sh\n: > "{mark}"\nPATH=/usr/bin:/bin exec "{SYSTEM}" "$@"\n', encoding="utf-8"
    )
    script.chmod(0o755)
    return script


@pytest.fixture
def no_browser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No browser anywhere: PATH is one empty folder, Playwright's browser folder is empty."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "ms-playwright"))
    monkeypatch.delenv(CHROMIUM_ENV, raising=False)
    return path


async def test_env_var_path_missing_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """$CHAOSSTREAM_CHROMIUM naming nothing is an InputError naming the variable and path."""
    monkeypatch.setenv(CHROMIUM_ENV, "/nonexistent/chrome")
    with pytest.raises(InputError, match=rf"\${CHROMIUM_ENV}.*/nonexistent/chrome"):
        await PageDriver().start()


async def test_env_var_browser_is_the_one_launched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """$CHAOSSTREAM_CHROMIUM is the browser that really starts."""
    mark = tmp_path / "ran"
    script = wrapper(tmp_path / "b", "my-chrome", mark)
    monkeypatch.setenv(CHROMIUM_ENV, str(script))
    async with PageDriver() as driver:
        assert driver.executable == str(script)
    assert mark.exists(), "the browser named by the environment variable never ran"


@pytest.mark.parametrize("name", ["chromium-browser", "google-chrome-stable"])
async def test_falls_back_to_a_chrome_on_path(no_browser: Path, tmp_path: Path, name: str) -> None:
    """Without a flag, a variable or Playwright's own browser, a Chrome/Chromium on PATH runs."""
    mark = tmp_path / "ran"
    script = wrapper(no_browser, name, mark)
    async with PageDriver() as driver:
        assert driver.executable == str(script)
    assert mark.exists(), f"{name} on PATH was not used"


async def test_nothing_found_names_everything_tried(no_browser: Path) -> None:
    """With no browser anywhere the message names each candidate and how to give one."""
    with pytest.raises(InputError) as caught:
        await PageDriver().start()
    message = str(caught.value)
    assert "\n" not in message
    for tried in (*CHROMIUM_NAMES, "Playwright", "--chromium", CHROMIUM_ENV):
        assert tried in message, f"{tried!r} missing from: {message}"


def test_check_chromium_flag_missing_path_exits_2(tmp_path: Path) -> None:
    """`check --browser / --chromium PATH` with a missing PATH: one line naming it, exit 2."""
    env = {k: v for k, v in os.environ.items() if k != CHROMIUM_ENV}
    proc = subprocess.run(
        [*CHECK, "--browser", "/", "--chromium", str(tmp_path / "no-chrome"), "--timeout-s", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "no-chrome" in line]
    assert len(lines) == 1 and "--chromium" in lines[0], proc.stderr[-2000:]


def test_check_env_var_missing_path_exits_2(tmp_path: Path) -> None:
    """`check --browser /` with $CHAOSSTREAM_CHROMIUM naming nothing: exit 2 before any scenario."""
    env = {**os.environ, CHROMIUM_ENV: str(tmp_path / "no-chrome")}
    proc = subprocess.run(
        [*CHECK, "--browser", "/", "--timeout-s", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "no-chrome" in proc.stderr and CHROMIUM_ENV in proc.stderr
