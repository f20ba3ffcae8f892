"""The command line: profiles commands, bad input, the proxy command, the demo."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from chaosstream.cli.commands import cli

BAD_PROFILES = {
    "wrong-type.yaml": (
        "version: 1\nname: x\nfaults:\n  - type: latency\n    first_byte_ms: soon\n",
        r"wrong-type\.yaml:5: faults\[0\]\.first_byte_ms: ",
    ),
    "unknown-field.yaml": (
        "version: 1\nname: x\nfaults:\n"
        "  - type: disconnect\n    after_events: 3\n    colour: red\n",
        r"unknown-field\.yaml:6: faults\[0\]\.colour: unknown field",
    ),
    "unknown-type.yaml": (
        "version: 1\nname: x\nfaults:\n  - type: meteor\n",
        r"unknown-type\.yaml:4: faults\[0\].*unknown type 'meteor'",
    ),
    "bad-syntax.yaml": (
        "version: 1\nname: x\nfaults:\n  - type: latency\n   first_byte_ms: [1, 2\n",
        r"bad-syntax\.yaml:5: invalid YAML",
    ),
    "infinite.yaml": (
        "version: 1\nname: x\nfaults:\n  - type: latency\n    first_byte_ms: 1e400\n",
        r"infinite\.yaml:5: faults\[0\]\.first_byte_ms: Input should be a finite number",
    ),
    "half-window.yaml": (
        "version: 1\nname: x\nfaults:\n  - type: buffer\n    window: {for_s: 2}\n",
        r"half-window\.yaml:5: faults\[0\]\.window: .*needs both every_s and for_s",
    ),
    "endless-window.yaml": (
        "version: 1\nname: x\nfaults:\n  - type: buffer\n    window: {every_s: 2, for_s: 3}\n",
        r"endless-window\.yaml:5: faults\[0\]\.window: .*never closes",
    ),
    "missing-field.yaml": (
        "version: 1\nfaults: []\n",
        r"missing-field\.yaml:1: name: required field is missing",
    ),
    "top-level-field.yaml": (
        "version: 1\nname: x\nnetwork:\n  latency_ms: -5\n",
        r"top-level-field\.yaml:4: network\.latency_ms: Input should be greater than or equal to 0",
    ),
}


@pytest.mark.parametrize("filename", sorted(BAD_PROFILES))
def test_bad_profile_exits_2_naming_file_line_and_field(filename: str, tmp_path: Path) -> None:
    """Each kind of bad profile gives exit 2 and file:line: field, never a traceback."""
    text, expected = BAD_PROFILES[filename]
    path = tmp_path / filename
    path.write_text(text)
    result = CliRunner().invoke(cli, ["profiles", "validate", str(path)])
    assert result.exit_code == 2, result.output
    assert re.search(expected, result.output), result.output
    assert "Traceback" not in result.output


def test_validate_reports_every_file(tmp_path: Path) -> None:
    """validate checks every file given and lists each problem."""
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nname: good\nfaults: []\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\nname: bad\n")
    result = CliRunner().invoke(cli, ["profiles", "validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert "good.yaml: ok" in result.output
    assert "bad.yaml:1: version:" in result.output


def test_unknown_profile_name_exits_2() -> None:
    """An unknown built-in name lists the built-ins."""
    result = CliRunner().invoke(cli, ["profiles", "show", "no-such-profile"])
    assert result.exit_code == 2
    assert "unknown profile 'no-such-profile'" in result.output
    assert "clean" in result.output


def test_profiles_list_and_show_builtins() -> None:
    """list names the built-ins; show prints a validated profile."""
    listed = CliRunner().invoke(cli, ["profiles", "list"])
    assert listed.exit_code == 0
    assert re.search(r"^clean\s", listed.output, re.M)
    shown = CliRunner().invoke(cli, ["profiles", "show", "midstream-reset"])
    assert shown.exit_code == 0
    assert "type: disconnect" in shown.output


def test_schema_is_json_schema_with_fault_types() -> None:
    """schema prints a JSON Schema that knows every fault type."""
    result = CliRunner().invoke(cli, ["profiles", "schema"])
    schema = json.loads(result.output)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"latency", "disconnect"} <= {
        d.removeprefix("#/$defs/") for d in json.dumps(schema["$defs"]).split('"') if d
    } | set(json.dumps(schema).split('"'))


def test_proxy_command_serves_and_logs_one_json_line_per_exchange(tmp_path: Path) -> None:
    """`chaosstream proxy` on the embedded mock forwards requests and logs each exchange as JSON."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosstream",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "5",
            "--log-format",
            "json",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        url = ""
        deadline = time.monotonic() + 20
        while not url and time.monotonic() < deadline:
            line = proc.stderr.readline()
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                url = match.group(1)
        assert url, "proxy did not start"
        r = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"]
        record = None
        while record is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if line.startswith("{") and '"exchange"' in line:
                candidate = json.loads(line)
                if candidate.get("event") == "exchange":
                    record = candidate
        assert record is not None
        assert record["method"] == "POST"
        assert record["path"] == "/v1/chat/completions"
        assert record["status"] == 200
        assert record["seed"] == 5
        assert record["ttft_ms"] is not None and record["duration_ms"] is not None
        assert record["bytes"] > 0
        assert record["faults"] == []
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0


async def test_proxy_command_cuts_with_a_real_rst(tmp_path: Path) -> None:
    """`chaosstream proxy` (on uvloop when the speed extra is installed) resets as profiled."""
    from tests.proxy.test_server import dechunk, raw_stream

    profile = tmp_path / "cut.yaml"
    profile.write_text(
        "version: 1\nname: cut\nfaults:\n  - type: disconnect\n    after_events: 4\n"
        "    mode: reset\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chaosstream", "proxy", "--listen", "127.0.0.1:0",
        "--profile", str(profile), "--log-format", "json",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = ""
        while not url:
            line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
            assert line, "proxy exited before listening"
            match = re.search(r"listening on (http://\S+)", line)
            url = match.group(1) if match else ""
        raw, ending = await raw_stream(url, read_timeout=2.0)
        body, finished = dechunk(raw)
        assert ending == "reset"
        assert not finished
        assert body.count(b"data: ") == 4
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0


def test_proxy_help_lists_every_builtin_profile_with_one_line() -> None:
    """`proxy --help` names each built-in profile with the first sentence of its description."""
    from chaosstream.faults.profile import builtin_names, load_profile

    result = CliRunner().invoke(cli, ["proxy", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Built-in profiles" in result.output
    for name in builtin_names():
        first = " ".join(load_profile(name).description.split())[:12]
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(first)}", result.output, re.M), (
            name,
            result.output,
        )


def test_proxy_limit_flags_default_to_the_library_defaults() -> None:
    """The limit flags' defaults (written out in cli.py) equal proxy.py's and record.py's."""
    from chaosstream.cli import commands as cli_module
    from chaosstream.proxy import record
    from chaosstream.proxy import server as proxy

    assert cli_module.MAX_EVENT_BYTES == proxy.MAX_EVENT_BYTES
    assert cli_module.IDLE_TIMEOUT_S == proxy.IDLE_TIMEOUT_S
    assert cli_module.UPSTREAM_HEAD_TIMEOUT_S == proxy.UPSTREAM_HEAD_TIMEOUT_S
    assert cli_module.RECORD_BUDGET == record.RECORD_BUDGET
    assert cli_module.BODY_LIMIT == record.BODY_LIMIT
    shown = CliRunner().invoke(cli, ["proxy", "--help"], terminal_width=200).output
    for flag, default in [
        ("--max-event-bytes", proxy.MAX_EVENT_BYTES),
        ("--idle-timeout-s", proxy.IDLE_TIMEOUT_S),
        ("--upstream-timeout-s", proxy.UPSTREAM_HEAD_TIMEOUT_S),
        ("--record-budget-mib", record.RECORD_BUDGET // 2**20),
        ("--record-body-limit-mib", record.BODY_LIMIT // 2**20),
    ]:
        entry = shown.split(f"  {flag} ", 1)[1].split("\n  --", 1)[0]
        assert re.search(rf"\[default: {default}[;\]]", " ".join(entry.split())), (flag, entry)


@pytest.mark.parametrize(
    "args", [["--idle-timeout-s", "0"], ["--max-event-bytes", "0"], ["--upstream-timeout-s", "-1"]]
)
def test_proxy_limit_flags_reject_values_out_of_range(args: list[str]) -> None:
    """A limit of 0 (or below) is a usage error naming the flag, exit 2."""
    result = CliRunner().invoke(cli, ["proxy", *args])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[0]}'" in result.output, result.output
