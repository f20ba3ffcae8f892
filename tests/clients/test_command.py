"""A client command under test, run as a real subprocess: the checks before it starts, the
environment that points it at the proxy, its output with arrival times, and its end (exit,
timeout with its whole process group killed, cancellation)."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from chaosstream.clients.command import (
    DUMMY_KEY,
    OUTPUT_LIMIT,
    check_command,
    client_env,
    run_client,
)
from chaosstream.mock import MockServer
from chaosstream.yamlfile import InputError

PY = sys.executable


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def _gone_soon(pid: int, limit_s: float = 5.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_check_command_accepts_programs_on_path_and_executable_files(tmp_path: Path) -> None:
    """A name on PATH or an executable file passes; nothing is run."""
    script = tmp_path / "client.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    check_command([PY, "x.py"])
    check_command(["sh", "-c", "true"])
    check_command([str(script)])


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ([], "no client command: give one after `--` or as `command:` in the file"),
        (["no-such-client-xyz", "--flag"], "client command not found: 'no-such-client-xyz'"),
        (["/nonexistent/client"], "client command not found: '/nonexistent/client' is not a file"),
    ],
)
def test_check_command_names_what_is_missing(command: list[str], message: str) -> None:
    """An empty command, a name not on PATH or a path that is no file: InputError saying so."""
    with pytest.raises(InputError) as bad:
        check_command(command)
    assert message in str(bad.value)


def test_check_command_refuses_a_file_that_is_not_executable(tmp_path: Path) -> None:
    """A script without the execute bit is refused before anything starts."""
    script = tmp_path / "client.py"
    script.write_text("print('hi')\n")
    script.chmod(0o644)
    with pytest.raises(InputError, match="client command not executable"):
        check_command([str(script)])
    with pytest.raises(InputError, match="is not a file"):
        check_command([str(tmp_path)])


def test_client_env_points_every_sdk_at_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """DESIGN.md's variables: proxy URL, scenario, OpenAI /v1 base, Anthropic base, unbuffered
    Python, dummy keys for the mock; the caller's environment is inherited."""
    monkeypatch.setenv("MY_APP_SETTING", "kept")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    env = client_env("http://127.0.0.1:4242", "midstream-reset", mock=True)
    assert env["CHAOSSTREAM_URL"] == "http://127.0.0.1:4242"
    assert env["CHAOSSTREAM_SCENARIO"] == "midstream-reset"
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:4242/v1"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4242"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["OPENAI_API_KEY"] == env["ANTHROPIC_API_KEY"] == DUMMY_KEY
    assert env["MY_APP_SETTING"] == "kept"
    assert "CHAOSSTREAM_URL" not in os.environ  # the runner's own environment is untouched


def test_client_env_keeps_real_keys_for_a_real_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a real upstream no dummy key is set: the user's own key (or none) goes through."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-user-real")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    env = client_env("http://127.0.0.1:4242", "clean", mock=False)
    assert env["OPENAI_API_KEY"] == "sk-user-real"
    assert "ANTHROPIC_API_KEY" not in env
    assert client_env("http://127.0.0.1:4242", "clean", mock=True)["OPENAI_API_KEY"] == DUMMY_KEY


def test_client_env_intercept_gives_proxy_and_ca_not_base_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the intercepting proxy's CA the client gets HTTPS_PROXY/HTTP_PROXY (both cases),
    loopback in NO_PROXY, the CA variables, dummy keys for the mock, and no base URL, not
    even one inherited from the shell."""
    monkeypatch.setenv("OPENAI_BASE_URL", "https://elsewhere.test/v1")
    env = client_env(
        "http://127.0.0.1:4242", "clean", mock=True, ca=("/ca/ca.pem", "/ca/ca-bundle.pem")
    )
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        assert env[name] == "http://127.0.0.1:4242"
    assert "127.0.0.1" in env["NO_PROXY"].split(",") and env["no_proxy"] == env["NO_PROXY"]
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == "/ca/ca-bundle.pem"
    assert env["NODE_EXTRA_CA_CERTS"] == "/ca/ca.pem"
    assert env["OPENAI_API_KEY"] == DUMMY_KEY
    assert not {"OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OLLAMA_HOST"} & set(env)


def test_client_env_keeps_loopback_off_an_inherited_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reverse mode adds loopback (and the proxy's host) to NO_PROXY/no_proxy, keeping the
    user's own entries from either spelling."""
    monkeypatch.setenv("NO_PROXY", "corp.example")
    monkeypatch.setenv("no_proxy", ".internal,corp.example")
    env = client_env("http://127.0.0.2:4242", "clean", mock=True)
    assert env["NO_PROXY"] == env["no_proxy"]
    entries = env["NO_PROXY"].split(",")
    assert entries == ["corp.example", ".internal", "localhost", "127.0.0.1", "::1", "127.0.0.2"]
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("no_proxy")
    env = client_env("http://127.0.0.1:4242", "clean", mock=True)
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"


async def test_a_corporate_proxy_in_the_environment_does_not_capture_the_client(
    monkeypatch: pytest.MonkeyPatch, mock: MockServer
) -> None:
    """With HTTP(S)_PROXY inherited from the shell (here a dead port), a client that honours
    it (urllib) still reaches the loopback proxy URL directly."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    code = (
        "import os, urllib.request\n"
        "print(urllib.request.urlopen(os.environ['CHAOSSTREAM_URL'] + '/api/version').status)\n"
    )
    run = await run_client([PY, "-c", code], client_env(mock.url, "clean", mock=True), 30)
    assert (run.exit_code, run.stdout) == (0, "200\n"), run.stderr


async def test_run_client_returns_exit_code_output_and_environment() -> None:
    """The client sees the environment it was given; its exit code, stdout and stderr return."""
    env = client_env("http://127.0.0.1:1", "clean", mock=True)
    code = (
        "import os, sys\n"
        "print(os.environ['CHAOSSTREAM_SCENARIO'], os.environ['OPENAI_BASE_URL'])\n"
        "print('caf\\u00e9', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    run = await run_client([PY, "-c", code], env, timeout_s=30)
    assert (run.exit_code, run.timed_out) == (3, False)
    assert run.stdout == "clean http://127.0.0.1:1/v1\n"
    assert run.stderr == "caf\u00e9\n"
    assert run.command == [PY, "-c", code]
    assert 0 < run.duration_s < 30


async def test_stdout_arrival_times_count_whole_characters() -> None:
    """Each pipe read is stamped with the characters seen so far; a UTF-8 character split across
    two writes counts once, when complete; the stamps follow the client's pauses."""
    code = (
        "import sys, time\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'ab\\xc3'); out.flush(); time.sleep(0.4)\n"
        "out.write(b'\\xa9!'); out.flush()\n"
    )
    run = await run_client([PY, "-c", code], dict(os.environ), timeout_s=30)
    assert run.exit_code == 0 and run.stdout == "ab\u00e9!"
    assert [chars for _, chars in run.stdout_times] == [2, 4]
    (first, _), (second, _) = run.stdout_times
    assert 0.3 <= second - first <= 5.0, run.stdout_times


async def test_undecodable_output_is_replaced_not_fatal() -> None:
    """Bytes that are not UTF-8 come back as U+FFFD; the run still returns."""
    code = "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end')"
    run = await run_client([PY, "-c", code], dict(os.environ), timeout_s=30)
    assert run.stdout == "ok \ufffd\ufffd end"


async def test_output_beyond_the_limit_keeps_its_head_and_its_tail() -> None:
    """A client printing 6 MiB on each stream is never blocked on its pipe; what is kept is
    bounded and holds both ends: the answer's beginning and the error printed last."""
    code = (
        "import sys\n"
        "sys.stdout.write('head\\n' + 'x' * (6 * 1024 * 1024) + '\\nthe end\\n')\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('y' * (6 * 1024 * 1024) + '\\nRuntimeError: stream cut\\n')\n"
    )
    run = await run_client([PY, "-c", code], dict(os.environ), timeout_s=30)
    assert run.exit_code == 0 and not run.timed_out
    assert run.stdout.startswith("head\n") and run.stdout.endswith("x\nthe end\n")
    assert run.stderr.startswith("y") and run.stderr.endswith("y\nRuntimeError: stream cut\n")
    for text in (run.stdout, run.stderr):
        assert OUTPUT_LIMIT // 2 <= len(text) <= OUTPUT_LIMIT + 65536 + 200, len(text)
        assert "bytes of output not kept" in text  # the cut is marked where it is


async def test_output_within_the_limit_is_kept_whole() -> None:
    """Output just under the limit comes back byte for byte, with no mark."""
    code = "import sys; sys.stdout.write('a' * (4 * 1024 * 1024 - 10) + 'z')"
    run = await run_client([PY, "-c", code], dict(os.environ), timeout_s=30)
    assert run.stdout == "a" * (OUTPUT_LIMIT - 10) + "z"


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """At timeout_s the client and a grandchild holding its pipes are killed: no exit code of
    its own, timed_out, output so far kept, and the run returns soon after the limit."""
    pids = tmp_path / "pids"
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('partial answer', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    run = await run_client([PY, "-c", code], dict(os.environ), timeout_s=1.5)
    elapsed = time.monotonic() - started
    assert run.timed_out is True
    assert run.exit_code is None  # killed: no exit code of its own
    assert run.stdout == "partial answer\n"
    assert 1.4 <= elapsed < 5.0, elapsed
    for pid in map(int, pids.read_text().split()):
        assert await asyncio.to_thread(_gone_soon, pid), f"pid {pid} survived the timeout"


async def test_grandchildren_of_a_client_that_exited_are_killed(tmp_path: Path) -> None:
    """A client that exits by itself leaves nothing behind: a grandchild it started (holding
    the pipes or not) is killed with its process group, not left to run into the next
    scenario."""
    pids = tmp_path / "pids"
    code = (
        "import subprocess, sys\n"
        "sleep = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        "quiet = subprocess.Popen(sleep, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "holder = subprocess.Popen(sleep)\n"
        f"open({str(pids)!r}, 'w').write(f'{{quiet.pid}} {{holder.pid}}')\n"
        "print('answer', flush=True)\n"
    )
    run = await run_client([PY, "-c", code], dict(os.environ), timeout_s=30)
    assert (run.exit_code, run.timed_out, run.stdout) == (0, False, "answer\n")
    for pid in map(int, pids.read_text().split()):
        assert await asyncio.to_thread(_gone_soon, pid, 3.0), f"grandchild {pid} survived"


async def test_cancelling_the_run_kills_the_client(tmp_path: Path) -> None:
    """When the runner itself is cancelled (Ctrl-C), the client is killed, not left behind."""
    pid_file = tmp_path / "pid"
    code = (
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    task = asyncio.ensure_future(run_client([PY, "-c", code], dict(os.environ), timeout_s=60))
    for _ in range(250):  # 5 s at most for the interpreter to start
        if pid_file.exists() and pid_file.read_text():
            break
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(_gone_soon, pid), "the client outlived the cancelled run"


async def test_a_command_that_cannot_start_is_bad_input(tmp_path: Path) -> None:
    """A program that is missing or not executable is InputError naming it, not a traceback."""
    with pytest.raises(InputError, match="cannot start client command '/nonexistent/x'"):
        await run_client(["/nonexistent/x"], dict(os.environ), timeout_s=5)
    script = tmp_path / "client.py"
    script.write_text("print('hi')\n")
    script.chmod(0o644)
    with pytest.raises(InputError, match="cannot start client command"):
        await run_client([str(script)], dict(os.environ), timeout_s=5)
