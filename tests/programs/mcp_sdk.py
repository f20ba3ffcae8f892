"""An MCP client on the official ``mcp`` SDK's Streamable HTTP transport, at $CHAOSSTREAM_URL/mcp.

Calls the mock's ``stream_answer`` tool with a progress callback and prints the
tool result. ``naive``: any JSON-RPC error (the SDK's ``MCPError``) is printed and
exits 1. ``careful``: on ``Session terminated`` (the SDK's words for a 404 on a
request with a session id) it opens a new session (a fresh ``initialize``) and
calls once more, as the spec says a client must. A read timeout bounds a
silent stream (the SDK's default is 300 s).
"""

import asyncio
import os
import sys

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

MODE = sys.argv[1] if len(sys.argv) > 1 else "careful"
URL = os.environ["CHAOSSTREAM_URL"].rstrip("/") + "/mcp"
PROMPT = sys.argv[2] if len(sys.argv) > 2 else "Tell me about rivers."


async def progress(done: float, total: float | None, message: str | None) -> None:
    """Asking for progress makes the SDK send a progressToken, so the tool streams."""


async def call() -> str:
    http = httpx2.AsyncClient(timeout=httpx2.Timeout(10, read=2))
    async with (
        http,
        streamable_http_client(URL, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool(
            "stream_answer", {"prompt": PROMPT}, read_timeout_seconds=8, progress_callback=progress
        )
        if result.is_error:
            raise RuntimeError(f"tool error: {result.content}")
        return "".join(getattr(block, "text", "") for block in result.content)


async def main() -> int:
    for attempt in (1, 2):
        try:
            text = await call()
        except Exception as group:  # the SDK's errors come wrapped in anyio's groups
            e: BaseException = group
            while getattr(e, "exceptions", None):
                e = e.exceptions[0]  # type: ignore[attr-defined]
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
            # A 404 on the session: the SDK says "Session not found" (the server's JSON-RPC
            # error) or "Session terminated"; the spec says: start a new session.
            if (
                MODE == "careful"
                and attempt == 1
                and isinstance(e, MCPError)
                and "Session" in str(e)
            ):
                continue
            return 1
        print(text)
        return 0
    return 1


sys.exit(asyncio.run(main()))
