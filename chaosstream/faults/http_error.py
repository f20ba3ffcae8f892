"""HTTP error: the request is refused before any stream starts."""

from __future__ import annotations

import email.utils
import math
import time
from typing import Any, Literal

from pydantic import Field

from chaosstream.faults.base import Fault, FaultContext, Refusal
from chaosstream.streams.providers import error_body


def retry_after_headers(
    retry_after_s: float | None,
    *,
    retry_after_ms: float | None = None,
    as_date: bool = False,
    should_retry: bool | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """The retry hints of a refusal, as the official SDKs read them.

    ``Retry-After`` is delay-seconds rounded up, or with ``as_date`` an
    HTTP-date (RFC 9110 section 10.2.3) on the next whole second after
    ``now + retry_after_s``, so the wait it names is never shorter than asked.
    ``retry-after-ms`` is the header the Stainless SDKs read first
    (openai-python / anthropic-python ``_base_client.py``,
    ``_parse_retry_after_header``); ``x-should-retry`` overrides their
    retry-by-status rule (``_should_retry``).
    """
    headers: dict[str, str] = {}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = f"{retry_after_ms:g}"
    if retry_after_s is not None:
        if as_date:
            at = math.ceil((time.time() if now is None else now) + retry_after_s)
            headers["Retry-After"] = email.utils.formatdate(at, usegmt=True)
        else:
            headers["Retry-After"] = str(math.ceil(retry_after_s))
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return headers


def retry_after_ms_field() -> Any:
    """The `retry_after_ms` field both refusing faults share."""
    return Field(
        None,
        ge=0,
        description="Send `retry-after-ms` with this many milliseconds: the header the "
        "Stainless SDKs (openai-python, anthropic-python, their Node twins) read first.",
    )


def retry_after_date_field() -> Any:
    """The `retry_after_date` field both refusing faults share."""
    return Field(
        False,
        description="Send `Retry-After` as an HTTP-date (`retry_after_s` from now, on the next "
        "whole second) instead of delay-seconds.",
    )


def should_retry_field() -> Any:
    """The `should_retry` field both refusing faults share."""
    return Field(
        None,
        description="Send `x-should-retry: true|false`, which the Stainless SDKs obey over "
        "their retry-by-status rule.",
    )


class HttpError(Fault):
    """Answers the request with an HTTP error instead of calling upstream.

    The default body is the provider's own error JSON, picked from the request
    path: OpenAI `{"error": {"message", "type", "param", "code"}}`, Anthropic
    `{"type": "error", "error": {"type": "overloaded_error", ...}}`, so the
    official SDKs raise the exception they raise in production (429
    `RateLimitError`, 503 `InternalServerError` / `ServiceUnavailableError`,
    529 `OverloadedError`: Anthropic's "API temporarily overloaded" status).
    `retry_after_s` becomes a `Retry-After` header in whole seconds (or an
    HTTP-date with `retry_after_date`); `retry_after_ms` a `retry-after-ms`
    header, which the Stainless SDKs prefer to `Retry-After` and honour at
    millisecond precision; `should_retry` an `x-should-retry` header, which
    they obey whatever the status (Anthropic sends it on its own errors).
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
    retry_after_ms: float | None = retry_after_ms_field()
    retry_after_date: bool = retry_after_date_field()
    should_retry: bool | None = should_retry_field()

    async def refuse(self, ctx: FaultContext) -> Refusal | None:
        """Always refuses: the trigger already decided this exchange is hit."""
        body = (
            self.body.encode()
            if self.body is not None
            else error_body(ctx.request.provider, self.status)
        )
        headers = retry_after_headers(
            self.retry_after_s,
            retry_after_ms=self.retry_after_ms,
            as_date=self.retry_after_date,
            should_retry=self.should_retry,
        )
        return Refusal(self.status, body, headers, self.content_type)

    def release(self, ctx: FaultContext) -> None:
        """Nothing to release: an HTTP error holds no state."""
