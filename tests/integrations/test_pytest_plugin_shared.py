"""The pytest plugin on a shared proxy (``--chaos-proxy``): one scope per test, under xdist."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosstream.integrations.pytest_plugin import scope_name
from chaosstream.proxy.scopes import check_scope_name

pytest_plugins = ["pytester"]

INI = """\
[pytest]
addopts = --strict-markers -p no:cacheprovider
filterwarnings = error
"""

# Eight tests, each sure its first request is refused: true only if no other test's
# request moved its counter (rate-limited-429 refuses request 1 only).
INNER = """
import json, urllib.error, urllib.request
import pytest
from chaosstream.integrations.pytest_plugin import ScopeHandle, assert_verdicts

BODY = json.dumps(
    {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
).encode()


def chat(url):
    req = urllib.request.Request(
        url + "/v1/chat/completions", data=BODY, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


@pytest.mark.parametrize("n", range(8))
def test_own_scope(chaos_proxy, n):
    proxy = chaos_proxy("rate-limited-429", seed=n)
    assert isinstance(proxy, ScopeHandle) and "/~/" in proxy.url
    first, _ = chat(proxy.url)
    second, body = chat(proxy.url)
    assert (first, second) == (429, 200)
    assert proxy.seed == n
    assert [(f.exchange, f.type) for f in proxy.fault_log] == [(1, "http_error")]
    assert [e["status"] for e in proxy.exchanges] == [429, 200]
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in body.splitlines()
        if line.startswith("data: {")
    )
    # The retry came sooner than Retry-After: 1, so the proxy's verifier fails `retries`.
    verdicts = assert_verdicts(proxy, retries=False, completes=True, text=text)
    assert "too soon" in verdicts[0]["evidence"]
"""


class Proxy:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.url = ""
        self.control = ""


@pytest.fixture
def shared_proxy(tmp_path: Path) -> Iterator[Proxy]:
    """``python -m chaosstream proxy`` with a control port, on free loopback ports."""
    log = tmp_path / "proxy.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaosstream",
                "proxy",
                "--profile",
                "clean",
                "--listen",
                "127.0.0.1:0",
                "--control",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    served = Proxy(proc, log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text(errors="replace")
            url = re.search(r"listening on (http://\S+)", text)
            control = re.search(r"control:\s+(http://\S+)", text)
            if url and control:
                served.url, served.control = url.group(1), control.group(1)
                break
            time.sleep(0.05)
        assert served.control, log.read_text(errors="replace")
        yield served
    finally:
        proc.terminate()
        proc.wait(10)


def test_scope_names_are_valid_and_distinct() -> None:
    """Generated scope names pass the proxy's rule, differ per test and per call."""
    ids = ["t.py::test_a", "t.py::test_a[x y/z]", "t.py::test_" + "long" * 40]
    names = {scope_name(i, "run12345", n) for i in ids for n in (1, 2)}
    assert len(names) == 6
    for name in names:
        assert check_scope_name(name) == name


def test_xdist_workers_share_one_proxy_without_touching(
    pytester: pytest.Pytester, shared_proxy: Proxy
) -> None:
    """Under ``pytest -n 4`` eight tests each get their own scope on one proxy process."""
    pytester.makeini(INI)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess(
        # pytest-benchmark, where installed, warns that xdist disables it: an error here.
        "-p",
        "no:benchmark",
        "-n",
        "4",
        "--chaos-proxy",
        shared_proxy.url,
        "--chaos-control",
        shared_proxy.control,
        timeout=120,
    )
    result.assert_outcomes(passed=8)
    # Every test's scope was deleted after it: the proxy holds none.
    with urllib.request.urlopen(f"{shared_proxy.control}/chaos/scopes", timeout=10) as resp:
        assert json.loads(resp.read())["scopes"] == []
    log = shared_proxy.log.read_text(errors="replace")
    assert log.count('"scope":') >= 16  # two exchanges logged per test, each with its scope


def test_without_control_a_builtin_profile_goes_in_the_path(
    pytester: pytest.Pytester, shared_proxy: Proxy
) -> None:
    """With only ``--chaos-proxy`` the profile is named in the scope's path."""
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        def test_path(chaos_proxy):
            proxy = chaos_proxy("midstream-reset")
            assert proxy.url.endswith("/midstream-reset")
            assert proxy.openai_base_url.endswith("/midstream-reset/v1")
        """
    )
    result = pytester.runpytest_subprocess("--chaos-proxy", shared_proxy.url, timeout=60)
    result.assert_outcomes(passed=1)
