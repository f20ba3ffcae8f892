"""The naive example client (the OpenAI SDK streaming quickstart) as a real subprocess, against
the real mock through the real proxy: it completes on a clean link, and a clean cut mid-answer
makes it print half an answer and exit 0 -- the silent truncation the demo exists to show."""

from __future__ import annotations

import json
import sys

from chaosstream.clients.command import client_env, run_client
from chaosstream.examples.naive_client import DEFAULT_PROMPT
from chaosstream.mock import MockServer, answer_text
from chaosstream.proxy.server import ChaosProxy
from chaosstream.verify.expectations import ClientRun
from tests.conftest import FAST, ProxyFactory

NAIVE = [sys.executable, "-m", "chaosstream.examples.naive_client"]


async def _run(proxy: ChaosProxy, *args: str, timeout_s: float = 60) -> ClientRun:
    """The naive client with the environment the runner gives a client (OPENAI_BASE_URL, key)."""
    env = client_env(proxy.url, "naive", mock=True)
    return await run_client([*NAIVE, *args], env, timeout_s)


def _prompt(proxy: ChaosProxy, index: int = 0) -> str:
    body = json.loads(proxy.recorder.exchanges[index].request_body)
    assert body["stream"] is True and body["model"] == "gpt-4o-mini"
    (message,) = body["messages"]
    assert message["role"] == "user"
    return str(message["content"])


async def test_clean_link_prints_the_whole_answer(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """On a clean link it streams the whole answer to stdout, one request, exit 0; the prompt is
    its arguments joined."""
    proxy = await proxy_factory(mock.url, "clean")
    run = await _run(proxy, "Why is", "the sky blue?")
    assert run.exit_code == 0, run.stderr
    assert _prompt(proxy) == "Why is the sky blue?"
    full = answer_text(proxy.recorder.exchanges[0].request_body, FAST.tokens)
    assert run.stdout == full + "\n" and full
    assert [e.outcome for e in proxy.recorder.exchanges] == ["complete"]


async def test_midstream_close_prints_a_truncated_answer_and_exits_0(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """A clean FIN after 12 events with no [DONE]: the SDK's loop just ends, so it prints the
    first 12 tokens as if they were the answer and exits 0 -- no retry, no error."""
    proxy = await proxy_factory(mock.url, "midstream-close")
    run = await _run(proxy)
    assert _prompt(proxy) == DEFAULT_PROMPT
    full = answer_text(proxy.recorder.exchanges[0].request_body, FAST.tokens)
    shown = run.stdout.removesuffix("\n")
    assert run.exit_code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert shown and full.startswith(shown) and len(shown) < len(full)
    assert shown == proxy.recorder.exchanges[0].client_text
    assert [f.action for f in proxy.fault_log] == ["close"]
    assert len(proxy.recorder.exchanges) == 1  # it never asked again


async def test_midstream_reset_escapes_as_a_traceback(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """An RST mid-answer is an exception out of the SDK's iterator: the partial text is on
    stdout, a traceback on stderr, exit 1, and no retry (the SDK retries only before a stream)."""
    proxy = await proxy_factory(mock.url, "midstream-reset")
    run = await _run(proxy)
    full = answer_text(proxy.recorder.exchanges[0].request_body, FAST.tokens)
    assert run.exit_code == 1
    assert "Traceback" in run.stderr
    assert run.stdout and full.startswith(run.stdout) and len(run.stdout) < len(full)
    assert [f.action for f in proxy.fault_log] == ["reset"]
    assert len(proxy.recorder.exchanges) == 1


async def test_a_429_before_the_stream_is_retried_by_the_sdk_after_retry_after(
    mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """The SDK's own max_retries covers a 429 before the stream: it waits Retry-After (1 s) and
    the second request completes."""
    proxy = await proxy_factory(mock.url, "rate-limited-429")
    run = await _run(proxy)
    assert run.exit_code == 0, run.stderr
    first, second = proxy.recorder.exchanges
    assert (first.status, first.outcome, second.outcome) == (429, "refused", "complete")
    assert second.started - first.started >= 0.95
    assert run.stdout == answer_text(second.request_body, FAST.tokens) + "\n"
