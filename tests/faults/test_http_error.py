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


async def test_http_error_retry_hints_as_the_sdks_read_them() -> None:
    """retry-after-ms, Retry-After as an HTTP-date in the future, and x-should-retry."""
    import email.utils
    import time

    fault = HttpError(
        status=429, retry_after_s=3, retry_after_ms=1500, retry_after_date=True, should_retry=False
    )
    before = time.time()
    r = await run_fault(fault, STREAM)
    assert r.refusal is not None
    headers = r.refusal.headers
    assert (headers["retry-after-ms"], headers["x-should-retry"]) == ("1500", "false")
    at = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
    assert before + 3 <= at <= time.time() + 4  # the next whole second: never shorter


async def test_http_error_retry_after_ms_with_the_openai_sdk() -> None:
    """The OpenAI SDK waits what retry-after-ms says (not Retry-After), and the verifier agrees."""
    import openai

    from chaosstream.verify.expectations import retry_hint
    from tests.test_fault_e2e import CHAT, chaos

    fault = {
        "type": "http_error",
        "status": 429,
        "retry_after_s": 30,
        "retry_after_ms": 700,
        "requests": [1],
    }
    async with chaos([fault]) as (proxy, url, _m):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=2)
        stream = await client.chat.completions.create(**CHAT)
        async for _ in stream:
            pass
        await client.close()
    first, second = list(proxy.recorder.exchanges)[:2]
    assert retry_hint(first) == (0.7, "retry-after-ms 700")
    gap = second.started - (first.ended or first.started)
    assert 0.65 <= gap < 5.0  # ms hint honoured, the 30 s Retry-After ignored


async def test_http_error_529_and_x_should_retry_with_the_anthropic_sdk() -> None:
    """529 is Anthropic's OverloadedError; x-should-retry: false stops the SDK's retries."""
    import anthropic

    from tests.test_fault_e2e import chaos

    fault = {"type": "http_error", "status": 529, "should_retry": False}
    async with chaos([fault]) as (proxy, url, _m):
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=3)
        try:
            await client.messages.create(
                model="m", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
            )
        except anthropic.APIStatusError as e:
            error: anthropic.APIStatusError = e
        await client.close()
    assert isinstance(error, anthropic.OverloadedError)
    assert error.status_code == 529 and "overloaded_error" in str(error.body)
    assert len(proxy.recorder.exchanges) == 1  # told not to, the SDK did not retry
    assert proxy.recorder.exchanges[0].should_retry == "false"
