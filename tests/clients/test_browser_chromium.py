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
import tempfile
from pathlib import Path

import pytest

from chaosstream.clients.browser import CHROMIUM_ENV, CHROMIUM_NAMES, PageDriver
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


async def test_the_browser_leaves_nothing_in_the_temporary_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Playwright's driver leaves two empty folders in the temporary folder per launch
    (1.65): it gets one of the driver's own, in use while the browser runs and removed
    on close; TMPDIR is as it was."""
    # A short temporary folder of the test's own: Chromium puts Unix sockets under it
    # (108 bytes at most), and tests on the other worker use the system's meanwhile.
    folder = Path(tempfile.mkdtemp(prefix="cs-t-"))
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    try:
        for _ in range(2):
            async with PageDriver(SYSTEM):
                assert [name[:11] for name in _names(folder)] == ["cs-browser-"]
                assert os.environ["TMPDIR"] == str(folder)
            assert _names(folder) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


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


# --------------------------------------------------------------------------- scripts/test.sh

TEST_SH = Path(__file__).resolve().parents[2] / "scripts" / "test.sh"
FAKE_APT = """#!/bin/sh
# Records each call; `update` says the lists lock is busy until $LOCKED_FOR calls have failed.
echo "$*" >> "$LOG"
case " $* " in *" update "*)
    n=$(cat "$COUNT" 2>/dev/null || echo 0); echo $((n + 1)) > "$COUNT"
    if [ "$n" -lt "$LOCKED_FOR" ]; then
        echo "E: Could not get lock $LOCK. It is held by process 1 (apt-get)" >&2; exit 100
    fi;;
esac
"""


def fake_apt(tmp_path: Path, locked_for: int = 0) -> dict[str, str]:
    """A PATH whose apt-get and sudo only record their arguments; python3 fails loudly."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT, encoding="utf-8")
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n', encoding="utf-8")
    # A script that reached pip or pytest here would be doing far more than installing Chromium.
    (bin_dir / "python3").write_text("#!/bin/sh\necho python3 called >&2\nexit 99\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "apt.log"),
        "COUNT": str(tmp_path / "count"),
        "LOCK": "/var/lib/apt/lists/lock",
        "LOCKED_FOR": str(locked_for),
    }


def source_and_run(env: dict[str, str], call: str) -> subprocess.CompletedProcess[str]:
    """Source scripts/test.sh (which must run nothing then) and call one of its functions."""
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "{TEST_SH}"; {call}'],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_script_installs_chromium_without_recommends_waiting_for_the_apt_lock(
    tmp_path: Path,
) -> None:
    """test.sh's apt calls wait for the dpkg lock and skip Recommends (no avahi, samba, perl)."""
    env = fake_apt(tmp_path)
    proc = source_and_run({**env, "APT_LOCK_TIMEOUT_S": "42"}, "install_chromium")
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert [c.split()[-1] for c in calls] == ["update", "fonts-liberation"], calls
    assert all("-o DPkg::Lock::Timeout=42" in c for c in calls), calls
    assert "install -y --no-install-recommends chromium fonts-liberation" in calls[1]


def test_script_waits_for_the_apt_lists_lock(tmp_path: Path) -> None:
    """`apt-get update` refused by a held lists lock is retried until the lock is free."""
    env = fake_apt(tmp_path, locked_for=2)
    proc = source_and_run(env, "install_chromium")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "count").read_text().strip() == "3"


def test_script_gives_up_on_the_apt_lock_after_its_timeout(tmp_path: Path) -> None:
    """A lists lock held past APT_LOCK_TIMEOUT_S fails with apt's own message, not a hang."""
    env = fake_apt(tmp_path, locked_for=1000)
    proc = source_and_run({**env, "APT_LOCK_TIMEOUT_S": "1"}, "install_chromium")
    assert proc.returncode != 0
    assert "Could not get lock" in proc.stderr
    assert int((tmp_path / "count").read_text()) <= 3


@pytest.mark.skipif(
    not Path("/usr/bin/python3").exists()
    or not list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED")),
    reason="no externally-managed system Python here",
)
def test_script_explains_an_externally_managed_python(tmp_path: Path) -> None:
    """With the system's PEP 668 Python active, test.sh says how to proceed (exit 2), no pip."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to("/usr/bin/python3")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PIP_BREAK_SYSTEM_PACKAGES", None)
    proc = subprocess.run(
        ["bash", str(TEST_SH), "--co", "-q"], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "PEP 668" in proc.stderr and "python3 -m venv" in proc.stderr, proc.stderr[-2000:]
