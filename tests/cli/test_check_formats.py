"""`chaosstream check` unchanged against a real client of each newer wire format.

The battery learns the format from the client's own requests (the record says
which); each verdict is checked against what that client really does, as
measured in the format's SDK tests (tests/mock/test_mock_responses.py,
test_mock_gemini.py, tests/streams/test_ollama.py, test_ui_message_stream.py).
The four runs go at once (each waits mostly on stalls and slow tokens) to keep
the suite's time in check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chaosstream.verify.battery import BATTERY
from tests.mock.test_mock_ui_stream import NODE_DIR, UI_CHAT

PROGRAMS = Path(__file__).parent.parent / "programs"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Client:
    provider: str
    command: list[str]
    timeout_s: float
    """Longer than the client's own read timeout, so its stall handling decides, and than
    its start (google-genai takes 2 s to import on a busy box) plus the 3 s first token."""


CLIENTS = {
    # responses.stream() with a 5 s timeout; falls back to stream=False on any failure.
    "openai-responses": Client(
        "openai-responses",
        [sys.executable, str(PROGRAMS / "responses_sdk.py"), "careful"],
        12,
    ),
    # generate_content_stream, prints chunks, exit 0 when the iteration ends; no timeout.
    "gemini": Client("gemini", [sys.executable, str(PROGRAMS / "gemini_sdk.py"), "naive"], 8),
    # chat(stream=True) with a 2 s timeout, checks the done line, falls back to stream=False.
    "ollama": Client("ollama", [sys.executable, str(PROGRAMS / "ollama_sdk.py"), "careful"], 8),
    # The ai package's AbstractChat (useChat's core): exit 1 when the chat ends in "error".
    "ui-message-stream": Client("ui-message-stream", ["node", str(UI_CHAT)], 7),
}


@dataclass
class Checked:
    code: int
    report: dict[str, Any]
    providers: set[str]
    output: str

    def scenario(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(s for s in self.report["scenarios"] if s["name"] == name)
        return found

    def observed(self, name: str) -> dict[str, Any]:
        obs: dict[str, Any] = self.scenario(name)["observed"]
        return obs


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Checked]]:
    """`python -m chaosstream check` on every client at once; their reports and records."""
    assert (NODE_DIR / "node_modules" / "ai").is_dir(), "run `npm ci --prefix tests/node` first"
    folder = tmp_path_factory.mktemp("check-formats")
    running = {}
    for name, client in CLIENTS.items():
        args = ["--seed", "5", "--timeout-s", str(client.timeout_s)]
        args += ["--json", str(folder / f"{name}.json"), "--record", str(folder / f"{name}.jsonl")]
        running[name] = subprocess.Popen(
            [sys.executable, "-m", "chaosstream", "check", *args, "--", *client.command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    results: dict[str, Checked] = {}
    try:
        for name, proc in running.items():
            output, _ = proc.communicate(timeout=240)
            lines = (folder / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
            results[name] = Checked(
                proc.returncode,
                json.loads((folder / f"{name}.json").read_text(encoding="utf-8")),
                {json.loads(line)["provider"] for line in lines},
                output,
            )
        yield results
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def passed(result: Checked) -> dict[str, bool]:
    return {s["name"]: s["passed"] for s in result.report["scenarios"]}


ALL = [name for name, _ in BATTERY]
# The `content` fault speaks the formats that have a length stop; the AI SDK UI stream
# has none, so its client never meets length-stop (and fails it: a fault not met is no pass).
UNMET = {"ui-message-stream": {"length-stop"}}


@pytest.mark.parametrize("name", list(CLIENTS))
def test_the_battery_learns_the_format_from_the_requests(
    checked: dict[str, Checked], name: str
) -> None:
    """Every exchange of the run is recorded as the client's format; every fault was met."""
    result = checked[name]
    assert result.providers == {name}, result.output
    assert [s["name"] for s in result.report["scenarios"]] == ALL
    for s in result.report["scenarios"]:
        unmet = s["name"] in UNMET.get(name, set())
        assert s["observed"]["fault_met"] is (None if s["name"] == "clean" else not unmet), s
    assert result.code == (0 if result.report["passed"] else 1)


def test_openai_responses_careful_client(checked: dict[str, Checked]) -> None:
    """openai-python: every failed stream falls back and completes; the stall is its read
    timeout, which keep-alive comments reset (a hang); the fallback after a 429 ignores
    Retry-After (max_retries=0, at once); a length stop falls back to the whole answer."""
    result = checked["openai-responses"]
    fails = {"rate-limited-429", "keepalive-stall"}
    assert passed(result) == {n: n not in fails for n in ALL}, result.output
    for name in ("midstream-reset", "midstream-close", "silent-stall", "overloaded-in-stream"):
        obs = result.observed(name)
        assert obs["fell_back"] and obs["completed"] and obs["attempts"] == 2, (name, obs)
    # The malformed event's stream ended with response.completed; the SDK still failed it.
    assert result.observed("malformed-event")["fell_back"]
    refused = result.observed("rate-limited-429")
    assert refused["fell_back"] and not refused["respected_retry_after"]
    evidence = result.scenario("rate-limited-429")["expectations"][0]["evidence"]
    assert "retried before Retry-After" in evidence


def test_gemini_naive_client(checked: dict[str, Checked]) -> None:
    """google-genai: errors and cuts raise (exit 1); a close without finishReason iterates
    to a quiet end (silent truncation); with no read timeout the stall hangs; a MAX_TOKENS
    stop is printed as the whole answer (silent truncation)."""
    result = checked["gemini"]
    fails = {"midstream-close", "silent-stall", "length-stop"}
    assert passed(result) == {n: n not in fails for n in ALL}, result.output
    close = result.observed("midstream-close")
    assert close["silent_truncation"] and close["exit_code"] == 0 and close["attempts"] == 1
    assert result.observed("silent-stall")["exit_code"] is None  # killed: a hang
    for name in ("midstream-reset", "rate-limited-429", "overloaded-in-stream", "malformed-event"):
        obs = result.observed(name)
        assert obs["surfaced_error"] and obs["exit_code"] == 1 and not obs["retried"], name


def test_ollama_careful_client(checked: dict[str, Checked]) -> None:
    """ollama: its 2 s timeout and done-line check turn every fault into a fallback that
    completes, the 3 s first token too; its fixed 1.5 s wait covers Retry-After 1. But it
    checks the done line, not done_reason: a length stop is shown as the whole answer."""
    result = checked["ollama"]
    assert passed(result) == {n: n != "length-stop" for n in ALL}, result.output
    assert result.observed("length-stop")["silent_truncation"]
    cut_or_refused = (
        "slow-first-token",
        "midstream-reset",
        "midstream-close",
        "silent-stall",
        "keepalive-stall",
        "rate-limited-429",
        "unavailable-503",
        "overloaded-in-stream",
        "malformed-event",
    )
    for name in cut_or_refused:
        obs = result.observed(name)
        assert obs["fell_back"] and obs["completed"] and obs["attempts"] == 2, (name, obs)
    assert result.observed("rate-limited-429")["respected_retry_after"]


def test_ui_message_stream_chat_client(checked: dict[str, Checked]) -> None:
    """The ai package's chat: errors end in status "error" (exit 1); a close without the
    finish part ends "ready" with the partial text (silent truncation); no read timeout, so
    both stalls hang; length-stop is never met (the format has no length stop)."""
    result = checked["ui-message-stream"]
    fails = {"midstream-close", "silent-stall", "keepalive-stall", "length-stop"}
    assert passed(result) == {n: n not in fails for n in ALL}, result.output
    close = result.observed("midstream-close")
    assert close["silent_truncation"] and close["exit_code"] == 0
    evidence = result.scenario("midstream-close")["expectations"][0]["evidence"]
    assert evidence.startswith("silent truncation: exit 0"), evidence
    assert result.observed("silent-stall")["exit_code"] is None
    for name in ("midstream-reset", "unavailable-503", "overloaded-in-stream", "malformed-event"):
        obs = result.observed(name)
        assert obs["surfaced_error"] and obs["exit_code"] == 1, name
