"""The session_expiry fault in memory; across requests see tests/streams/test_mcp.py."""

from __future__ import annotations

import json

from chaosstream.faults.session_expiry import SessionExpiry
from chaosstream.testing import make_request, run_fault

PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}


async def test_a_request_on_the_session_gets_404_with_a_jsonrpc_error() -> None:
    """With after_requests 0 the first request carrying a session id is refused 404."""
    req = make_request("/mcp", headers={"Mcp-Session-Id": "abc"}, body=PING)
    r = await run_fault(SessionExpiry(), [b"unused"], request=req)
    assert r.refusal is not None and r.refusal.status == 404
    assert json.loads(r.refusal.body)["error"]["code"] == -32001
    assert r.log[0].action == "refuse"


async def test_a_request_without_a_session_passes() -> None:
    """initialize carries no session id: it always passes, so a client can start over."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize"}
    r = await run_fault(SessionExpiry(), [b"ok"], request=make_request("/mcp", body=init))
    assert r.refusal is None and r.chunks_out == [b"ok"]


async def test_the_header_is_configurable() -> None:
    """Another protocol's session header can expire the same way."""
    req = make_request("/api", headers={"X-Session": "s1"}, body={})
    fault = SessionExpiry(header="X-Session")
    assert (await run_fault(fault, [b""], request=req)).refusal is not None
    other = make_request("/api", headers={"Mcp-Session-Id": "s1"}, body={})
    assert (await run_fault(fault, [b""], request=other)).refusal is None
