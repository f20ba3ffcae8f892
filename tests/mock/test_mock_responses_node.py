"""OpenAI Responses read by openai-node (tests/node/responses_stream.mjs) through proxy and mock.

The script drives ``client.responses.create({stream: true})`` (``create``) or the
``client.responses.stream()`` helper and its ``finalResponse()`` (``stream``); it
reports the SDK's own error class, so each fault is judged by what openai-node
really throws, and ``chaosstream run`` by what it then records as ``observed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chaosstream.faults.profile import profile_from_data
from chaosstream.mock import MockServer, MockSettings, answer_text, start_mock
from chaosstream.proxy.record import Exchange
from chaosstream.proxy.server import ChaosProxy

TOKENS = 20
SETTINGS = MockSettings(ttft_ms=5, tokens_per_s=0, tokens=TOKENS)
PROMPT = "Tell me about rivers."
EXPECTED = answer_text({"input": PROMPT}, TOKENS)
NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "responses_stream.mjs"


def node() -> str:
    """The node binary, with openai-node installed (scripts/test.sh runs npm ci)."""
    found = shutil.which("node")
    assert found, "Node.js 20+ is needed (scripts/test.sh installs the test's npm packages)"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "run `npm ci --prefix tests/node`"
    return found


async def responses(base: str, mode: str) -> tuple[int, str, dict[str, Any]]:
    """Run the script in ``mode`` against ``base``: exit code, stdout, its JSON summary."""
    env = {**os.environ, "OPENAI_BASE_URL": base + "/v1", "OPENAI_API_KEY": "x"}
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(SCRIPT),
        mode,
        PROMPT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    summary: dict[str, Any] = json.loads(err.decode().strip().splitlines()[-1])
    return proc.returncode, out.decode(), summary


@contextlib.asynccontextmanager
async def chaos(faults: list[dict[str, Any]]) -> AsyncIterator[tuple[ChaosProxy, str, MockServer]]:
    """A mock behind a proxy running ``faults``."""
    mock = await start_mock(settings=SETTINGS)
    profile = profile_from_data({"version": 1, "name": "t", "faults": faults}, "test")
    proxy = ChaosProxy(mock.url, profile, seed=1)
    url = await proxy.start()
    try:
        yield proxy, url, mock
    finally:
        await proxy.close()
        await mock.close()


async def finished(proxy: ChaosProxy, count: int) -> list[Exchange]:
    """The proxy's exchanges once ``count`` of them have ended (recorded right after)."""
    for _ in range(200):
        done = [ex for ex in proxy.recorder.exchanges if ex.ended is not None]
        if len(done) >= count:
            return done
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} exchanges never ended: {list(proxy.recorder.exchanges)}")


async def test_same_text_direct_and_through_the_proxy() -> None:
    """Both openai-node streaming calls give the mock's text, direct and through the proxy."""
    async with chaos([]) as (proxy, url, mock):
        for base in (mock.url, url):
            runs = await asyncio.gather(responses(base, "create"), responses(base, "stream"))
            for code, out, summary in runs:
                assert (code, summary["error"], summary["text"]) == (0, None, EXPECTED), summary
                assert out.strip() == EXPECTED.strip()
                assert summary["lastType"] == "response.completed"
                assert summary["version"] == "6.49.0"
            assert runs[1][2]["finalText"] == EXPECTED
        exchanges = await finished(proxy, 2)
    assert all(ex.provider == "openai-responses" and ex.stream for ex in exchanges)
    assert all(ex.client_complete and ex.client_text == EXPECTED for ex in exchanges)


@pytest.mark.parametrize(
    ("fault", "create_throws", "stream_throws"),
    [
        # A reset: undici's body read fails with TypeError "terminated"; create() lets it
        # through as is, the stream helper wraps it in OpenAIError (same message).
        ({"type": "disconnect", "after_tokens": 5, "mode": "reset"}, "TypeError", "OpenAIError"),
        # A clean close without response.completed: nothing throws. Unlike openai-python
        # (RuntimeError from get_final_response), the helper's finalResponse() returns the
        # snapshot built so far: the partial text as the "final" response.
        ({"type": "disconnect", "after_tokens": 5, "mode": "close"}, None, None),
        ({"type": "corrupt", "action": "drop_terminal"}, None, None),
        # The error event: Stream.fromSSEResponse throws APIError(undefined, data.error).
        ({"type": "stream_error", "after_events": 6, "kind": "overloaded"}, "APIError", "APIError"),
        # JSON.parse's SyntaxError, wrapped by the helper as above.
        (
            {"type": "corrupt", "action": "malformed_json", "after_events": 6},
            "SyntaxError",
            "OpenAIError",
        ),
        ({"type": "http_error", "status": 429}, "RateLimitError", "RateLimitError"),
    ],
)
async def test_faults_make_openai_node_throw_what_it_really_does(
    fault: dict[str, Any], create_throws: str | None, stream_throws: str | None
) -> None:
    """Each battery fault on a Responses stream: openai-node's own error class; records agree."""
    async with chaos([fault]) as (proxy, url, _mock):
        runs = await asyncio.gather(responses(url, "create"), responses(url, "stream"))
        exchanges = await finished(proxy, 2)
    for (code, _, summary), expected in zip(runs, (create_throws, stream_throws), strict=True):
        error = summary["error"]
        assert (error and error["class"]) == expected, summary
        assert code == (1 if expected else 0)
        if fault["type"] == "stream_error":
            assert error["isAPIError"] and error["type"] == "server_error" and not error["status"]
        if fault.get("status") == 429:
            assert error["status"] == 429
        if expected is None:
            # What it shows as the answer is all that arrived, and less than the whole.
            assert summary["text"] != EXPECTED or fault.get("action") == "drop_terminal"
            assert summary["lastType"] != "response.completed"
    if fault.get("mode") == "close":
        assert runs[1][2]["finalText"] == runs[1][2]["text"] != EXPECTED
    # The recorder judges from the terminal event: only a malformed event (a lost token,
    # the stream still completed) leaves a record of a whole delivery.
    malformed = fault.get("action") == "malformed_json"
    for ex in exchanges:
        assert ex.faults and ex.client_complete is malformed
        if fault["type"] == "disconnect":
            assert ex.client_text in {s["text"] for _, _, s in runs}


SCENARIOS = """\
version: 1
scenarios:
  - name: clean
    profile: clean
    expect: [completes]
  - name: reset
    profile: midstream-reset
    expect: [resilient]
  - name: close-no-terminal
    profile: midstream-close
    expect: [resilient]
  - name: overloaded
    profile: overloaded-in-stream
    expect: [resilient]
"""


def test_run_observes_what_openai_node_did(tmp_path: Path) -> None:
    """`chaosstream run` on the create() client: observed says what it did in each scenario."""
    path = tmp_path / "scenarios.yaml"
    path.write_text(SCENARIOS, encoding="utf-8")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "chaosstream", "run", str(path), "--seed", "3"]
    command += ["--timeout-s", "20", "--json", str(report), "--", node(), str(SCRIPT), "create"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    scenarios = {s["name"]: s for s in json.loads(report.read_text())["scenarios"]}
    clean = scenarios["clean"]["observed"]
    assert scenarios["clean"]["passed"] and clean["completed"] and clean["exit_code"] == 0
    # Thrown errors end the script with exit 1: the error is surfaced, nothing truncated shown.
    for name in ("reset", "overloaded"):
        obs = scenarios[name]["observed"]
        assert scenarios[name]["passed"], scenarios[name]["expectations"]
        assert obs["surfaced_error"] and obs["exit_code"] == 1 and obs["fault_met"]
        assert not obs["completed"] and not obs["silent_truncation"] and obs["attempts"] == 1
    # A close without response.completed: no error, exit 0, part of the answer shown.
    close = scenarios["close-no-terminal"]
    assert not close["passed"]
    assert close["observed"]["silent_truncation"] and close["observed"]["exit_code"] == 0
    assert close["expectations"][0]["evidence"].startswith("silent truncation: exit 0")
