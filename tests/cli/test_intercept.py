"""`chaosstream proxy --mode intercept` as a real process: an unmodified SDK through it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "chaosstream"]

OPENAI_CLIENT = r"""
import openai, sys
c = openai.OpenAI(max_retries=0)
try:
    s = c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    print("TEXT", "".join((ch.choices[0].delta.content or "") for ch in s if ch.choices))
except openai.APIError as e:
    print("ERROR", type(e).__name__)
    sys.exit(1)
"""


@contextmanager
def intercepting(home: Path, *args: str) -> Iterator[tuple[str, str]]:
    """A `proxy --mode intercept` process on a free loopback port: (its URL, its banner)."""
    log = home.parent / "proxy.log"
    env = {**os.environ, "CHAOSSTREAM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [*CLI, "proxy", "--mode", "intercept", "--listen", "127.0.0.1:0", *args],
            env=env,
            stderr=err,
            stdout=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = log.read_text()
            found = re.search(r"listening on (http://\S+)", text)
            if found and "clients:" in text:
                yield found.group(1), text
                break
            assert proc.poll() is None, text
            time.sleep(0.05)
        else:
            pytest.fail(f"no URL in 30 s: {log.read_text()}")
    finally:
        proc.terminate()
        proc.wait(10)


def sdk(url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_BASE_URL", "_PROXY"))}
    env.update(HTTPS_PROXY=url, SSL_CERT_FILE=str(home / "ca.pem"), OPENAI_API_KEY="sk-test")
    return subprocess.run(
        [sys.executable, "-c", OPENAI_CLIENT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sdk_through_the_process_gets_the_mock_answer(tmp_path: Path) -> None:
    """The banner says how to point clients; the SDK with only HTTPS_PROXY and SSL_CERT_FILE
    streams the embedded mock's answer for api.openai.com; the log holds no key."""
    home = tmp_path / "home"
    with intercepting(home) as (url, banner):
        assert f"HTTPS_PROXY={url}" in banner and str(home / "ca.pem") in banner
        assert "api.openai.com" in banner and "embedded mock" in banner
        out = sdk(url, home)
        log = (tmp_path / "proxy.log").read_text()
    assert "PRIVATE KEY" not in log and "exchange" in log  # the key is never logged
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("TEXT ") and len(out.stdout) > 20


def test_profile_acts_on_the_intercepted_sdk(tmp_path: Path) -> None:
    """With a 429 profile the same SDK call fails as a rate limit."""
    home = tmp_path / "home"
    with intercepting(home, "--profile", "rate-limited-429") as (url, _):
        out = sdk(url, home)
    assert out.returncode == 1
    assert "ERROR RateLimitError" in out.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "0.0.0.0:0"], "set --token"),
        (["--upstream", "real", "--mode", "reverse"], "`real` is for --mode intercept"),
        (["--workers", "2"], "one process"),
    ],
)
def test_bad_combinations_are_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    """A public address without a token, `real` in reverse mode, several workers: exit 2."""
    env = {**os.environ, "CHAOSSTREAM_HOME": str(tmp_path / "home")}
    mode = [] if "--mode" in args else ["--mode", "intercept"]
    out = subprocess.run(
        [*CLI, "proxy", *mode, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert says in out.stderr and "Traceback" not in out.stderr


def test_check_intercept_tests_an_unmodified_sdk_client(tmp_path: Path) -> None:
    """`check --intercept` gives the client HTTPS_PROXY and the CA, no base URL: the SDK
    calling api.openai.com is judged on clean and midstream-reset from the mock's answer."""
    client = tmp_path / "client.py"
    client.write_text(
        "import os\n"
        "assert 'OPENAI_BASE_URL' not in os.environ and os.environ['HTTPS_PROXY']\n" + OPENAI_CLIENT
    )
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY")}
    env.update(CHAOSSTREAM_HOME=str(tmp_path / "home"), OPENAI_BASE_URL="http://192.0.2.1/v1")
    out = subprocess.run(
        [
            *CLI,
            "check",
            "--intercept",
            "--only",
            "clean",
            "--only",
            "midstream-reset",
            "--json",
            str(report),
            "--",
            sys.executable,
            str(client),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(report.read_text())
    observed = {s["name"]: s["observed"] for s in data["scenarios"]}
    assert observed["clean"]["completed"] and observed["clean"]["attempts"] == 1
    assert observed["midstream-reset"]["fault_met"]
    assert observed["midstream-reset"]["surfaced_error"]


def test_run_upstream_real_needs_intercept(tmp_path: Path) -> None:
    """`--upstream real` without --intercept is bad input (exit 2), before any scenario."""
    out = subprocess.run(
        [*CLI, "check", "--upstream", "real", "--only", "clean", "--", sys.executable, "-V"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "needs --intercept" in out.stderr
