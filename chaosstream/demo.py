"""``chaosstream demo``: the mock, the proxy and a small client, on loopback only."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from rich.console import Console
from rich.table import Table

from chaosstream.logs import quiet
from chaosstream.mock import MockSettings, answer_text, start_mock
from chaosstream.profile import load_profile
from chaosstream.providers import is_terminal, token_text
from chaosstream.proxy import ChaosProxy
from chaosstream.sse import EventDecoder

DEFAULT_PROFILES = [
    "clean",
    "slow-first-token",
    "midstream-reset",
    "midstream-close",
    "silent-stall",
]
PROMPT = "Explain why streaming makes AI answers feel fast."
IDLE_TIMEOUT_S = 5.0


@dataclass
class Seen:
    """What the demo client saw on one streaming request."""

    text: str = ""
    tokens: int = 0
    ttft_ms: float | None = None
    duration_s: float = 0.0
    ending: str = ""

    @property
    def tokens_per_s(self) -> float | None:
        if self.ttft_ms is None or self.tokens < 2:
            return None
        streaming = self.duration_s - self.ttft_ms / 1000.0
        return (self.tokens - 1) / streaming if streaming > 0 else None


async def stream_once(session: aiohttp.ClientSession, base_url: str) -> Seen:
    """One streaming chat completion; classify how it ended."""
    seen = Seen()
    start = time.monotonic()
    body = {"model": "mock", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    decoder = EventDecoder()
    try:
        async with session.post(f"{base_url}/v1/chat/completions", json=body) as resp:
            if resp.status != 200:
                seen.ending = f"HTTP {resp.status}"
                return seen
            while True:
                data = await asyncio.wait_for(resp.content.readany(), IDLE_TIMEOUT_S)
                if not data:
                    seen.ending = "ended without [DONE] (truncated)"
                    break
                for event in decoder.feed(data):
                    if is_terminal(event, "openai"):
                        seen.ending = "complete"
                        break
                    piece = token_text(event, "openai")
                    if piece:
                        if seen.ttft_ms is None:
                            seen.ttft_ms = (time.monotonic() - start) * 1000.0
                        seen.tokens += 1
                        seen.text += piece
                if seen.ending:
                    break
    except asyncio.TimeoutError:
        seen.ending = f"stalled (no bytes for {IDLE_TIMEOUT_S:.0f} s)"
    except aiohttp.ClientError as e:
        seen.ending = f"connection error ({type(e).__name__})"
    seen.duration_s = time.monotonic() - start
    return seen


async def run_demo(profiles: list[str] | None, seed: int) -> int:
    """Run each profile once and print a table; exit code 0 when the demo itself worked."""
    console = Console()
    quiet()
    names = profiles or DEFAULT_PROFILES
    loaded = [load_profile(name) for name in names]
    settings = MockSettings(ttft_ms=150, tokens_per_s=80, tokens=40)
    full = answer_text({"messages": [{"role": "user", "content": PROMPT}]}, settings.tokens)
    table = Table(title=f"chaosstream demo  (seed {seed}, embedded mock, loopback only)")
    for column in ("profile", "TTFT ms", "tokens/s", "tokens", "faults fired", "client saw"):
        table.add_column(column)
    async with await start_mock(settings=settings) as mock:
        proxy = ChaosProxy(mock.url, loaded[0], seed=seed)
        await proxy.start()
        try:
            async with aiohttp.ClientSession() as session:
                for profile in loaded:
                    proxy.set_profile(profile, seed)
                    console.print(f"[dim]running {profile.name} ...[/dim]")
                    seen = await stream_once(session, proxy.url)
                    fired = ", ".join(f"{f.type}:{f.action}" for f in proxy.fault_log) or "-"
                    proxy.fault_log.clear()
                    saw = seen.ending
                    if seen.ending == "complete" and seen.text != full:
                        saw = "complete but text differs!"
                    table.add_row(
                        profile.name,
                        "-" if seen.ttft_ms is None else f"{seen.ttft_ms:.0f}",
                        "-" if seen.tokens_per_s is None else f"{seen.tokens_per_s:.0f}",
                        f"{seen.tokens}/{settings.tokens}",
                        fired,
                        saw,
                    )
        finally:
            await proxy.close()
    console.print(table)
    return 0
