"""`chaosstream proxy` in-process: serve_proxy starts on a free port, serves, and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import click
import pytest

from chaosstream.cli.args import BadInput
from chaosstream.cli.serve import ProxyLimits, pick_loop, run_loop, serve_proxy
from chaosstream.faults.profile import load_profile
from chaosstream.proxy import record
from chaosstream.proxy import server as proxy_server
from chaosstream.yamlfile import InputError

BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "serve"}]}


class Stderr:
    """What serve_proxy echoes to stderr, gathered from capsys as it arrives."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    async def wait(self, pattern: str, after: int = 0, seconds: float = 15.0) -> str:
        """The first group of ``pattern`` once it shows at or after offset ``after``."""
        for _ in range(int(seconds / 0.05)):
            self.text += self.capsys.readouterr().err
            match = re.compile(pattern).search(self.text, after)
            if match:
                return match.group(1)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {pattern!r} on stderr within {seconds} s: {self.text[-2000:]}")


def refused(url: str) -> bool:
    """Nothing listens at ``url``'s host and port any more."""
    host, port = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


def test_serves_the_embedded_mock_and_stops_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Proxy, control API and mock on free ports; a stream and /metrics answer; SIGTERM closes
    all listeners and the record file holds the exchange."""
    jsonl = tmp_path / "x.jsonl"

    async def main() -> tuple[str, str, bytes, int]:
        task = asyncio.create_task(
            serve_proxy(
                upstream=None,
                profile=load_profile("clean"),
                listen=("127.0.0.1", 0),
                seed=11,
                control=("127.0.0.1", 0),
                record=str(jsonl),
            )
        )
        err = Stderr(capsys)
        url = await err.wait(r"listening on (http://\S+)")
        control = await err.wait(r"control:\s+(http://\S+)")
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/v1/chat/completions", json=BODY) as resp:
                body = await resp.read()
            async with session.get(control + "/metrics") as metrics:
                await metrics.read()
                metrics_status = metrics.status
        # serve_proxy installed its SIGTERM handler before it printed `listening`.
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 15)
        return url, control, body, metrics_status

    url, control, body, metrics_status = asyncio.run(main())
    assert body.rstrip().endswith(b"data: [DONE]"), body[-200:]
    assert metrics_status == 200
    assert refused(url) and refused(control)
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [(r["path"], r["outcome"]) for r in rows] == [("/v1/chat/completions", "complete")]


def test_banner_names_upstream_profile_seed_and_client_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The banner shows a given upstream as is, the profile, seed and client variables;
    cancelling the serving task closes the port too."""

    async def main() -> tuple[str, str]:
        upstream = asyncio.create_task(
            serve_proxy(upstream=None, profile=load_profile("clean"), listen=("127.0.0.1", 0))
        )
        err = Stderr(capsys)
        mock_proxy = await err.wait(r"listening on (http://\S+)")
        seen = len(err.text)
        task = asyncio.create_task(
            serve_proxy(
                upstream=mock_proxy,
                profile=load_profile("midstream-reset"),
                listen=("127.0.0.1", 0),
                seed=5,
            )
        )
        url = await err.wait(r"listening on (http://\S+)", after=seen)
        await err.wait(r"(clients:.*\n)", after=seen)
        banner = err.text[seen:]
        for running in (task, upstream):
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
        return url, banner

    url, banner = asyncio.run(main())
    assert re.search(r"upstream: http://127\.0\.0\.1:\d+\n", banner), banner
    assert "(embedded mock)" not in banner.split("upstream:", 1)[1].split("\n", 1)[0]
    assert "profile:  midstream-reset   seed: 5" in banner, banner
    assert f"OPENAI_BASE_URL={url}/v1  ANTHROPIC_BASE_URL={url}" in banner, banner
    assert refused(url)


def test_a_busy_port_is_bad_input_naming_the_address(capsys: pytest.CaptureFixture[str]) -> None:
    """Listening on a taken port raises BadInput `cannot listen on HOST:PORT`, not OSError."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BadInput, match=rf"cannot listen on 127\.0\.0\.1:{port}: "):
            asyncio.run(
                serve_proxy(
                    upstream=None, profile=load_profile("clean"), listen=("127.0.0.1", port)
                )
            )


def test_a_bad_toxiproxy_url_is_refused_before_anything_starts() -> None:
    """--toxiproxy must be http://HOST:PORT; the error names the flag."""
    with pytest.raises(InputError, match=r"--toxiproxy: .*must be http://HOST:PORT"):
        asyncio.run(
            serve_proxy(
                upstream=None,
                profile=load_profile("clean"),
                listen=("127.0.0.1", 0),
                toxiproxy_url="https://toxiproxy:8474/path",
            )
        )


def test_limits_default_to_the_proxy_and_recorder_defaults() -> None:
    """ProxyLimits() is exactly what ChaosProxy and Recorder use by default."""
    assert ProxyLimits() == ProxyLimits(
        max_event_bytes=proxy_server.MAX_EVENT_BYTES,
        idle_timeout_s=proxy_server.IDLE_TIMEOUT_S,
        upstream_head_timeout_s=proxy_server.UPSTREAM_HEAD_TIMEOUT_S,
        record_budget_bytes=record.RECORD_BUDGET,
        record_body_limit=record.BODY_LIMIT,
    )


def test_an_error_while_serving_is_not_chained_to_a_missing_uvloop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """run_loop runs the loop outside `except ImportError`: a failure never blames uvloop."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as without the `speed` extra

    async def fails() -> None:
        raise RuntimeError("failed while serving")

    with pytest.raises(RuntimeError) as info:
        run_loop(fails())
    assert info.value.__context__ is None, repr(info.value.__context__)


def test_run_loop_returns_the_coroutine_result() -> None:
    """run_loop gives back what the coroutine returns, on uvloop or asyncio alike."""

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_loop(answer()) == 42


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not support Windows")
def test_auto_picks_uvloop_which_the_install_brings() -> None:
    """uvloop is a base dependency off Windows: ``--loop auto`` runs on it, ``asyncio`` does not."""
    assert pick_loop("auto") == "uvloop"
    assert pick_loop("uvloop") == "uvloop"
    assert pick_loop("asyncio") == "asyncio"

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_loop(which()).startswith("uvloop")
    assert run_loop(which(), "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_asking_for_it_is_bad_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where uvloop is missing (Windows), auto is asyncio's loop; ``--loop uvloop`` is a clear
    usage error naming the option, not an ImportError."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert pick_loop("auto") == "asyncio"
    with pytest.raises(click.BadParameter) as info:
        pick_loop("uvloop")
    assert "--loop asyncio" in info.value.format_message()
