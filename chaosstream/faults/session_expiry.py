"""Session expiry: the server forgets a session, and answers its next request 404."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chaosstream.faults.base import Fault, FaultContext, Refusal
from chaosstream.streams.providers import error_body


class SessionExpiry(Fault):
    """Expires a session: once `after_requests` requests carrying one session id (the
    `header`, MCP's `Mcp-Session-Id`) have passed, the next one is answered `404` with the
    format's error body, and so is every later request with that id, as a server that
    dropped the session answers (MCP Streamable HTTP, 2025-11-25: the client must then
    start a new session with a fresh `initialize`, which carries no session id and passes).

    `sessions` bounds how many sessions expire, so a client that re-initialises gets a
    session that lives. Requests without the header always pass. Use `match` to say which
    requests count, e.g. `{stream: true}` for MCP's `tools/call`s only.
    """

    type: Literal["session_expiry"] = "session_expiry"
    after_requests: int = Field(
        0, ge=0, description="Requests with a session id let through before it expires."
    )
    sessions: int = Field(1, ge=1, description="How many sessions expire in all.")
    header: str = Field("mcp-session-id", description="The header that names the session.")

    async def refuse(self, ctx: FaultContext) -> Refusal | None:
        """404 for an expired session (or the one this request expires); else let it pass."""
        session = ctx.request.headers.get(self.header.lower())
        if not session:
            return None
        expired: set[str] = ctx.state.setdefault("expired", set())
        seen: dict[str, int] = ctx.state.setdefault("seen", {})
        if session not in expired:
            count = seen.get(session, 0)
            if count < self.after_requests or len(expired) >= self.sessions:
                if len(seen) >= 4096:  # bounded: a client minting endless sessions
                    seen.clear()
                seen[session] = count + 1
                return None
            expired.add(session)
            seen.pop(session, None)
        return Refusal(404, error_body(ctx.request.provider, 404))

    def release(self, ctx: FaultContext) -> None:
        """Nothing to release: the expired ids stay expired until the proxy is reset."""
