"""`run` and `check` with `--upstream cassette:DIR`: a session recorded once, replayed offline."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from chaosstream.streams.cassette import load_cassette, save_cassette
from chaosstream.streams.registry import response_text
from tests.cli.test_commands_process import CLI, ENV, served

PROGRAMS = Path(__file__).parent.parent / "programs"
# A word the embedded mock never says: seen in a client's output, it came from the cassette.
MARK = "Cassettewort"


def _record(folder: Path, tmp: Path) -> str:
    """Record one streamed chat from the embedded mock through `proxy --cassette`; mark the
    recorded text and return it."""
    args = ["proxy", "--listen", "127.0.0.1:0", "--cassette", str(folder), "--log-format", "json"]
    with served(args, tmp / "record.log") as proxy:
        url = proxy.wait_url()
        done = subprocess.run(
            [sys.executable, str(PROGRAMS / "well_behaved.py")],
            env={**ENV, "CHAOSSTREAM_URL": url},
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
    cassette = load_cassette(folder)
    (it,) = cassette.interactions
    word = ""
    for frame in it.response.frames:
        payload = (frame.data or "").removeprefix("data: ").strip()
        if payload.startswith("{"):
            word = json.loads(payload)["choices"][0]["delta"].get("content") or ""
        if word:
            break
    for frame in it.response.frames:
        if frame.data is not None:
            frame.data = frame.data.replace(f'"content":"{word}"', f'"content":"{MARK}"')
    save_cassette(cassette, folder)
    body = load_cassette(folder).interactions[0].response.body
    text = response_text(body, "text/event-stream", "openai")
    assert MARK in text
    return text


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A cassette recorded from the embedded mock by the real CLI, with its answer text."""
    tmp = tmp_path_factory.mktemp("tape")
    return tmp / "tape", _record(tmp / "tape", tmp)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120
    )


def _verdict_lines(stdout: str) -> list[str]:
    """The terminal report's lines that state a failure and how to repeat it."""
    keep = ("FAIL ", "  reproduce: ", "  rerun: ")
    return [line for line in stdout.splitlines() if line.startswith(keep)]


def _rerun(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Execute a report's repro_run as a user would paste it (`chaosstream` is this one)."""
    words = shlex.split(command)
    assert words[0] == "chaosstream"
    return _cli(words[1:], cwd)


def test_check_replays_the_recording_offline_and_judges_the_client(
    tape: tuple[Path, str], tmp_path: Path
) -> None:
    """check --upstream cassette:DIR: the clean scenario completes with the recorded text and
    a retrying client survives a reset (its retry is answered from the cassette)."""
    folder, text = tape
    report = tmp_path / "c.json"
    done = _cli(
        [
            "check",
            "--upstream",
            f"cassette:{folder}",
            "--seed",
            "7",
            "--timeout-s",
            "10",
            "--only",
            "clean",
            "--only",
            "midstream-reset",
            "--json",
            str(report),
            "--",
            sys.executable,
            str(PROGRAMS / "well_behaved.py"),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    by = {s["name"]: s for s in data["scenarios"]}
    assert by["clean"]["passed"] and by["midstream-reset"]["passed"]
    shown = len("".join(text.split()))
    (verdict,) = by["clean"]["expectations"]
    assert f"{shown} of {shown} characters shown" in verdict["evidence"]
    reset = by["midstream-reset"]["observed"]
    assert reset["fault_met"] and reset["retried"] and reset["completed"]


def test_a_failed_scenario_under_a_cassette_repeats_with_the_cassette(
    tape: tuple[Path, str], tmp_path: Path
) -> None:
    """A client that passes a cut answer off as whole fails midstream-close against the
    recorded text (known from the cassette though every live attempt was cut); the repro
    line, in the JSON and on the terminal, names the cassette."""
    folder, text = tape
    report = tmp_path / "c.json"
    done = _cli(
        [
            "check",
            "--upstream",
            f"cassette:{folder}",
            "--replay-speed",
            "0",
            "--seed",
            "7",
            "--only",
            "midstream-close",
            "--json",
            str(report),
            "--",
            sys.executable,
            str(PROGRAMS / "swallow.py"),
        ],
        tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (scenario,) = json.loads(report.read_text())["scenarios"]
    assert scenario["observed"]["silent_truncation"] is True
    shown = len("".join(text.split()))
    assert f"of {shown} characters shown" in scenario["expectations"][0]["evidence"]
    repro = f"chaosstream proxy --upstream cassette:{folder} --profile midstream-close --seed 7"
    assert scenario["repro"] == repro
    assert f"reproduce: {repro}" in done.stdout
    client = shlex.join([sys.executable, str(PROGRAMS / "swallow.py")])
    rerun = (
        f"chaosstream check --upstream cassette:{folder} --replay-speed 0 "
        f"--only midstream-close --seed 7 -- {client}"
    )
    assert scenario["repro_run"] == rerun
    assert f"  rerun: {rerun}" in done.stdout
    # Pasted as is (no report files), it reproduces the verdict, evidence and all.
    again = _rerun(rerun, tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert _verdict_lines(again.stdout) == _verdict_lines(done.stdout)
    assert "FAIL midstream-close / resilient: silent truncation" in again.stdout


def test_run_replays_a_cassette_for_a_scenario_file(tape: tuple[Path, str], tmp_path: Path) -> None:
    """run SCENARIO.yaml --upstream cassette:DIR --match-on ...: the client prints the recorded
    text (the marked word the mock never says); cut short, it exits 0, so surfaces_error
    fails and the repro names the cassette."""
    folder, text = tape
    (tmp_path / "s.yaml").write_text(
        "version: 1\n"
        "scenarios:\n"
        "  - name: plain\n"
        "    profile: clean\n"
        "    expect: [completes]\n"
        "  - name: cut\n"
        "    profile: midstream-close\n"
        "    expect: [surfaces_error]\n"
    )
    # Each scenario's output is also kept in a file named after it (CHAOSSTREAM_SCENARIO).
    client = f'{sys.executable} {PROGRAMS / "swallow.py"} --say-error | tee "$CHAOSSTREAM_SCENARIO"'
    done = _cli(
        [
            "run",
            "s.yaml",
            "--upstream",
            f"cassette:{folder}",
            "--match-on",
            "method,path,body",
            "--seed",
            "3",
            "--json",
            "r.json",
            "--",
            "sh",
            "-c",
            client,
        ],
        tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    plain, cut = json.loads((tmp_path / "r.json").read_text())["scenarios"]
    assert plain["passed"] and not cut["passed"]
    assert cut["expectations"][0]["evidence"] == "exit code 0"
    assert cut["repro"] == (
        f"chaosstream proxy --upstream cassette:{folder} --profile midstream-close --seed 3"
    )
    assert cut["repro_run"] == (
        f"chaosstream run s.yaml --upstream cassette:{folder} --match-on method,path,body "
        f"--only cut --seed 3 -- sh -c {shlex.quote(client)}"
    )
    again = _rerun(cut["repro_run"], tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert _verdict_lines(again.stdout) == _verdict_lines(done.stdout)
    assert "0/1 scenarios passed" in again.stdout
    assert (tmp_path / "plain").read_text() == text + "\n" and MARK in text
    partial = (tmp_path / "cut").read_text().splitlines()
    assert partial[1] == "error: the answer was cut" and text.startswith(partial[0])
    assert len(partial[0]) < len(text)


def test_a_missing_cassette_or_replay_flag_without_one_is_bad_input(tmp_path: Path) -> None:
    """No cassette in DIR, or --replay-speed without a cassette: one error line, exit 2."""
    for args, words in [
        (["--upstream", f"cassette:{tmp_path / 'none'}"], "no such cassette"),
        (["--replay-speed", "0"], "give --upstream cassette:DIR"),
        (["--strict"], "give --upstream cassette:DIR"),
    ]:
        done = _cli(["check", *args, "--only", "clean", "--", sys.executable, "-c", "0"], tmp_path)
        assert done.returncode == 2 and words in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_strict_makes_a_request_without_a_recording_fail_the_run(
    tape: tuple[Path, str], tmp_path: Path
) -> None:
    """check --strict --upstream cassette:DIR: a client whose request differs from the
    recorded one gets the 404 either way (and here surfaces it, so the scenario passes);
    without --strict the run passes and says so, with it the run fails (exit 1) on a line
    naming the request and the nearest recording, and the JSON says which scenario missed."""
    from chaosstream.streams.cassette import load_cassette, save_cassette

    folder, _ = tape
    cassette = load_cassette(folder)
    request = cassette.interactions[0].request
    assert request.body is not None and "rivers" in request.body
    request.body = request.body.replace("rivers", "lakes")  # the client asks about rivers
    save_cassette(cassette, tmp_path / "lakes")
    client = [sys.executable, str(PROGRAMS / "well_behaved.py")]
    args = ["check", "--upstream", f"cassette:{tmp_path / 'lakes'}", "--seed", "1"]
    args += ["--only", "clean", "--replay-speed", "0", "--json", "r.json", "--", *client]
    lenient = _cli(args, tmp_path)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "cassette: 4 request(s) matched no recording (--strict fails the run)" in (
        lenient.stdout
    )
    strict = _cli([*args[:1], "--strict", *args[1:]], tmp_path)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is False
    (scenario,) = data["scenarios"]
    assert scenario["passed"] is True and len(scenario["unmatched"]) == 4
    why = (
        "no recorded request matches POST /v1/chat/completions; nearest is interaction 1 "
        "(POST /v1/chat/completions), which differs in messages[0].content: recorded "
        '"Tell me about lakes." != request "Tell me about rivers."'
    )
    assert scenario["unmatched"][0] == f"chaosstream cassette: {why}"
    flat = " ".join(strict.stdout.split())  # the terminal wraps long lines
    assert f"UNMATCHED clean (4x): chaosstream cassette: {why}" in flat
    assert "--strict: 4 request(s) matched no recording" in strict.stdout
    assert "--strict" in scenario["repro_run"].split()


@pytest.mark.parametrize("strict", [False, True])
def test_proxy_strict_replay_fails_on_a_request_without_a_recording(
    tape: tuple[Path, str], tmp_path: Path, strict: bool
) -> None:
    """`proxy --upstream cassette:DIR --strict` exits 1 naming the unmatched request, else 0."""
    folder, _ = tape
    args = ["proxy", "--listen", "127.0.0.1:0", "--upstream", f"cassette:{folder}"]
    with served([*args, *(["--strict"] if strict else [])], tmp_path / "proxy.log") as proxy:
        url = proxy.wait_url()
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "never"}]}
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        refused.value.close()
        assert refused.value.code == 404  # the cassette's miss, in the provider's shape
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=20) == (1 if strict else 0)
    log = proxy.stderr()
    assert ("--strict: 1 request(s) matched no recording" in log) is strict
    assert "Traceback" not in log
