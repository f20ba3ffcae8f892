"""The http_error fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import json

from chaosstream.faults.http_error import HttpError
from chaosstream.testing import make_request, run_fault
from tests.faults._streams import STREAM


async def test_http_error_openai_body_and_retry_after() -> None:
    """An OpenAI path gets OpenAI's error JSON, and Retry-After in whole seconds."""
    r = await run_fault(HttpError(status=429, retry_after_s=1.5), STREAM)
    assert r.refusal is not None
    assert r.refusal.status == 429
    assert r.refusal.headers == {"Retry-After": "2"}
    assert json.loads(r.refusal.body)["error"]["code"] == "rate_limit_exceeded"
    assert r.chunks_out == []


async def test_http_error_anthropic_body() -> None:
    """An Anthropic path gets Anthropic's error JSON."""
    r = await run_fault(HttpError(status=529), STREAM, request=make_request("/v1/messages"))
    assert r.refusal is not None
    body = json.loads(r.refusal.body)
    assert body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


async def test_http_error_custom_body() -> None:
    """A given body is sent as is."""
    fault = HttpError(status=502, body="<html>bad gateway</html>", content_type="text/html")
    r = await run_fault(fault, STREAM)
    assert r.refusal is not None
    assert (r.refusal.body, r.refusal.content_type) == (b"<html>bad gateway</html>", "text/html")
