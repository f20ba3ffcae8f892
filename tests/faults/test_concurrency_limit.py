"""The concurrency_limit fault in memory: chaosstream.testing, a fixed seed, a fake clock."""

from __future__ import annotations

import json

from chaosstream.faults.concurrency_limit import ConcurrencyLimit
from chaosstream.faults.trigger import Armed, Injector
from chaosstream.testing import FakeClock, make_request, run_fault
from tests.faults._streams import STREAM, WHOLE


async def test_concurrency_limit_counts_open_exchanges() -> None:
    """With max_streams 0 every request is refused with 429 and Retry-After."""
    r = await run_fault(ConcurrencyLimit(max_streams=0, retry_after_s=3), STREAM)
    assert r.refusal is not None
    assert (r.refusal.status, r.refusal.headers["Retry-After"]) == (429, "3")


async def test_concurrency_limit_lets_one_through() -> None:
    """Below the limit the stream passes untouched."""
    r = await run_fault(ConcurrencyLimit(max_streams=1), STREAM)
    assert (r.refusal, r.data) == (None, WHOLE)


async def test_concurrency_limit_frees_a_slot_when_a_stream_ends() -> None:
    """Two open streams fill max_streams 2; the third is refused until one of them ends."""
    clock = FakeClock()
    injector = Injector([ConcurrencyLimit(max_streams=2, retry_after_s=None)], 0, clock)

    def arm() -> Armed:
        (armed,) = injector.arm(injector.next_exchange(), make_request(), clock.now())
        return armed

    first, second, third = arm(), arm(), arm()
    assert await first.refuse() is None
    assert await second.refuse() is None
    refused = await third.refuse()
    assert refused is not None
    assert (refused.status, refused.headers) == (429, {})
    third.release()  # a refused exchange was never counted: releasing it frees nothing
    assert await arm().refuse() is not None
    first.release()
    assert await arm().refuse() is None


async def test_concurrency_limit_status_and_provider_body() -> None:
    """The status is settable and the body is the provider's error JSON (Anthropic here)."""
    fault = ConcurrencyLimit(max_streams=0, status=529)
    r = await run_fault(fault, STREAM, request=make_request("/v1/messages"))
    assert r.refusal is not None
    assert (r.refusal.status, r.refusal.headers) == (529, {"Retry-After": "1"})
    assert json.loads(r.refusal.body)["error"]["type"] == "overloaded_error"
    assert [(e.action, e.detail) for e in r.log] == [("refuse", "status 529")]


async def test_concurrency_limit_sends_the_retry_hints() -> None:
    """One too many gets retry-after-ms and x-should-retry next to Retry-After."""
    fault = ConcurrencyLimit(max_streams=0, retry_after_s=2, retry_after_ms=250, should_retry=True)
    r = await run_fault(fault, STREAM)
    assert r.refusal is not None
    assert r.refusal.headers == {
        "retry-after-ms": "250",
        "Retry-After": "2",
        "x-should-retry": "true",
    }
