"""Two hops: the user's app server between the page and the model, a proxy on each side.

::

    Chromium ──▶ browser proxy ──▶ app server ──▶ model proxy ──▶ model (mock or real)
                 (hop: browser)    (started here,   (hop: model)
                                    OPENAI_BASE_URL → model proxy)

A fault names its hop (``hop: model | browser``, default model): :func:`split_hops`
gives each proxy its share of the scenario's profile. The app server is started
once per run (:class:`AppProcess`) -- an app reads its configuration once, so the
model proxy's address must not change between scenarios -- with the environment a
client command gets (``client_env``) plus ``PORT``. Both proxies' exchanges go to
the report on one timeline: the browser hop's are numbered after the model hop's
(:func:`merge_hops`) and each is labelled with its hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urljoin

from chaosstream.faults.profile import Profile
from chaosstream.proxy.record import Exchange
from chaosstream.verify.scenario import AppServer
from chaosstream.yamlfile import InputError

__all__ = ["BROWSER_IDS", "AppProcess", "free_port", "merge_hops", "split_hops"]

BROWSER_IDS = 1000
"""Browser-hop exchange ids are shown as this plus their own (#1001 ...), after the model's."""
# How often the ready URL is polled while the app starts.
POLL_S = 0.1
# Lines of the app's output quoted when it fails to start.
TAIL_LINES = 15


def free_port() -> int:
    """A free TCP port on loopback (for the app's PORT when none is given)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def split_hops(profile: Profile) -> tuple[Profile, Profile]:
    """``(model hop's profile, browser hop's profile)``: faults by their ``hop`` (none: model).

    The ``network:`` block stays with the model hop, like every fault without a hop.
    """
    model = [f for f in profile.faults if f.hop != "browser"]
    browser = [f for f in profile.faults if f.hop == "browser"]
    return (
        profile.model_copy(update={"faults": model}),
        profile.model_copy(update={"faults": browser, "network": None}),
    )


def merge_hops(model: list[Exchange], browser: list[Exchange]) -> list[Exchange]:
    """Both hops' exchanges on one timeline, ordered by start; browser ids moved past
    :data:`BROWSER_IDS` (their faults follow), each exchange's ``scope`` naming its hop."""
    for ex in model:
        ex.scope = ex.scope or "hop:model"
    for ex in browser:
        if ex.id < BROWSER_IDS:
            ex.id += BROWSER_IDS
            ex.faults = [dataclasses.replace(f, exchange=ex.id) for f in ex.faults]
        ex.scope = ex.scope or "hop:browser"
    return sorted([*model, *browser], key=lambda e: e.started)


class AppProcess:
    """The user's app server: started from ``server.command`` or already at ``server.url``."""

    def __init__(self, server: AppServer, log_path: str | Path | None = None) -> None:
        self.server = server
        self.url = server.url.rstrip("/") if server.url else ""
        self.port = server.port
        self.log_path = Path(log_path) if log_path is not None else None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._proc: asyncio.subprocess.Process | None = None
        self._log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self, env: Mapping[str, str]) -> str:
        """Start the app (when it is a command) and wait until its ready URL answers;
        return its base URL. Raises :class:`InputError` (exit 2) when it does not come up."""
        if self.server.command is not None:
            self.port = self.port or free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            full = {**env, "PORT": str(self.port), "HOSTNAME": "127.0.0.1"}
            try:
                # A session of its own: the whole tree (npm → node) is killed at the end.
                self._proc = await asyncio.create_subprocess_exec(
                    *self.server.command,
                    env=full,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                raise InputError(f"server.command {self.server.command[0]!r}: {e}") from None
            self._reader = asyncio.ensure_future(self._read_output())
        await self._wait_ready()
        return self.url

    async def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        sink = self.log_path.open("ab") if self.log_path is not None else None
        try:
            async for line in self._proc.stdout:
                self._log.append(line.decode("utf-8", "replace").rstrip())
                del self._log[:-TAIL_LINES]
                if sink is not None:
                    sink.write(line)
        finally:
            if sink is not None:
                sink.close()

    async def _wait_ready(self) -> None:
        import aiohttp

        target = urljoin(self.url + "/", self.server.ready.lstrip("/"))
        if self.server.ready.startswith(("http://", "https://")):
            target = self.server.ready
        deadline = time.monotonic() + self.server.ready_timeout_s
        why = "no answer"
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.returncode is not None:
                    raise InputError(self._failed(f"exited with code {self._proc.returncode}"))
                try:
                    timeout = aiohttp.ClientTimeout(total=5)
                    async with session.get(target, timeout=timeout) as resp:
                        if resp.status < 500:
                            return
                        why = f"HTTP {resp.status}"
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                    why = type(e).__name__
                await asyncio.sleep(POLL_S)
        await self.close()
        raise InputError(
            self._failed(f"{target} not ready within {self.server.ready_timeout_s:g} s ({why})")
        )

    def _failed(self, what: str) -> str:
        tail = "\n".join(f"  | {line}" for line in self._log[-TAIL_LINES:])
        return f"server: the app {what}" + (f"; its last output:\n{tail}" if tail else "")

    async def close(self) -> None:
        """Stop a started app: SIGTERM to its process group, SIGKILL after 3 s."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 1.0)
