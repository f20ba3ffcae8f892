"""HTTP error: the request is refused before any stream starts."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from chaosstream.faults.base import Fault, FaultContext, Refusal
from chaosstream.streams.providers import error_body


def retry_after_headers(retry_after_s: float | None) -> dict[str, str]:
    """``Retry-After`` in whole seconds, rounded up (RFC 9110 section 10.2.3: delay-seconds)."""
    if retry_after_s is None:
        return {}
    return {"Retry-After": str(math.ceil(retry_after_s))}


class HttpError(Fault):
    """Answers the request with an HTTP error instead of calling upstream.

    The default body is the provider's own error JSON, picked from the request
    path: OpenAI `{"error": {"message", "type", "param", "code"}}`, Anthropic
    `{"type": "error", "error": {"type": "overloaded_error", ...}}`, so the
    official SDKs raise the exception they raise in production (429
    `RateLimitError`, 503 `InternalServerError` / `ServiceUnavailableError`,
    529 `OverloadedError`). `retry_after_s` becomes a `Retry-After` header in
    whole seconds.
    """

    type: Literal["http_error"] = "http_error"
    status: int = Field(503, ge=400, le=599, description="HTTP status code, 400-599.")
    retry_after_s: float | None = Field(
        None, ge=0, description="Send `Retry-After` with this many seconds (rounded up)."
    )
    body: str | None = Field(
        None, description="Response body; default: the provider's error JSON for `status`."
    )
    content_type: str = Field("application/json", description="Content-Type of the body.")

    async def refuse(self, ctx: FaultContext) -> Refusal | None:
        """Always refuses: the trigger already decided this exchange is hit."""
        body = (
            self.body.encode()
            if self.body is not None
            else error_body(ctx.request.provider, self.status)
        )
        return Refusal(
            self.status, body, retry_after_headers(self.retry_after_s), self.content_type
        )

    def release(self, ctx: FaultContext) -> None:
        """Nothing to release: an HTTP error holds no state."""
