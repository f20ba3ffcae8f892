"""Concurrency limit: a provider's cap on open streams."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chaosstream.faults.base import Fault, FaultContext, Refusal
from chaosstream.faults.http_error import (
    retry_after_date_field,
    retry_after_headers,
    retry_after_ms_field,
    should_retry_field,
)
from chaosstream.streams.providers import error_body


class ConcurrencyLimit(Fault):
    """Refuses a request while `max_streams` matching exchanges are already open.

    Counts the exchanges this fault let through that have not ended yet (use
    `match: {stream: true}` to count streams only); one more gets `status`
    (429) with the provider's error JSON and `Retry-After` (the retry hints
    are those of `http_error`). The count lives with the proxy run and starts
    over when the proxy is reset.
    """

    type: Literal["concurrency_limit"] = "concurrency_limit"
    max_streams: int = Field(..., ge=0, description="Open exchanges allowed at once.")
    status: int = Field(429, ge=400, le=599, description="HTTP status for one too many.")
    retry_after_s: float | None = Field(
        1.0, ge=0, description="Send `Retry-After` with this many seconds (rounded up)."
    )
    retry_after_ms: float | None = retry_after_ms_field()
    retry_after_date: bool = retry_after_date_field()
    should_retry: bool | None = should_retry_field()

    async def refuse(self, ctx: FaultContext) -> Refusal | None:
        """Refuse when the limit is reached, else count this exchange as open."""
        open_ids: set[int] = ctx.state.setdefault("open", set())
        if len(open_ids) >= self.max_streams:
            body = error_body(ctx.request.provider, self.status)
            headers = retry_after_headers(
                self.retry_after_s,
                retry_after_ms=self.retry_after_ms,
                as_date=self.retry_after_date,
                should_retry=self.should_retry,
            )
            return Refusal(self.status, body, headers)
        open_ids.add(ctx.exchange)
        return None

    def release(self, ctx: FaultContext) -> None:
        """The exchange ended: it no longer counts."""
        open_ids: set[int] = ctx.state.setdefault("open", set())
        open_ids.discard(ctx.exchange)
