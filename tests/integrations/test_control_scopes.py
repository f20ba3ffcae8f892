"""The control API per scope: the native routes under /chaos/scopes/{id}/, verdicts, health."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chaosstream.integrations.control import ControlServer
from chaosstream.mock import MockServer
from chaosstream.proxy.server import ChaosProxy
from tests.conftest import ProxyFactory

CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
RESET_FIRST = {
    "version": 1,
    "name": "cut-first",
    "faults": [{"type": "disconnect", "after_events": 3, "mode": "reset", "requests": [1]}],
}


@pytest.fixture
async def proxy(mock: MockServer, proxy_factory: ProxyFactory) -> ChaosProxy:
    return await proxy_factory(mock.url, "clean", seed=7)


@pytest.fixture
async def control(proxy: ChaosProxy) -> AsyncIterator[ControlServer]:
    server = ControlServer(proxy)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _chat(http: aiohttp.ClientSession, url: str) -> tuple[bool, bytes]:
    body = b""
    try:
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as resp:
            async for data in resp.content.iter_any():
                body += data
        return b"[DONE]" in body, body
    except aiohttp.ClientError:
        return False, body


async def test_scope_profile_put_get_and_traffic(
    proxy: ChaosProxy, control: ControlServer, http: aiohttp.ClientSession
) -> None:
    """PUT a scope's profile before its first request; it applies there and nowhere else."""
    base = f"{control.url}/chaos/scopes/t1"
    async with http.put(f"{base}/profile?seed=3", json=RESET_FIRST) as r:
        assert r.status == 200
        assert (await r.json())["name"] == "cut-first"
    async with http.get(f"{base}/profile") as r:
        got = await r.json()
        assert got["seed"] == 3 and got["profile"]["faults"][0]["mode"] == "reset"
    assert (await _chat(http, f"{proxy.url}/~/t1"))[0] is False  # cut in the scope
    assert (await _chat(http, f"{proxy.url}/~/t1"))[0] is True
    assert (await _chat(http, proxy.url))[0] is True  # the clean proxy is untouched
    async with http.get(f"{base}/fault-log") as r:
        faults = (await r.json())["faults"]
        assert [(f["exchange"], f["action"]) for f in faults] == [(1, "reset")]
    async with http.get(f"{base}/exchanges") as r:
        exchanges = (await r.json())["exchanges"]
        assert [e["outcome"] for e in exchanges] == ["fault", "complete"]
    async with http.get(f"{control.url}/chaos/fault-log") as r:
        assert (await r.json())["faults"] == []
    async with http.get(f"{control.url}/chaos/scopes") as r:
        listed = await r.json()
        assert [s["scope"] for s in listed["scopes"]] == ["t1"]
        assert listed["scopes"][0]["exchanges"] == 2 and listed["max_scopes"] == 1024


async def test_scope_reset_patch_and_delete(
    proxy: ChaosProxy, control: ControlServer, http: aiohttp.ClientSession
) -> None:
    """Reset, PATCH a fault and DELETE work per scope; an unknown scope is 404."""
    base = f"{control.url}/chaos/scopes/t2"
    async with http.get(f"{base}/fault-log") as r:
        assert r.status == 404
        assert "no scope 't2'" in (await r.json())["error"]
    async with http.put(f"{base}/profile", json=RESET_FIRST) as r:
        assert r.status == 200
    async with http.patch(f"{base}/faults/0", json={"enabled": False}) as r:
        assert (await r.json())["enabled"] is False
    assert (await _chat(http, f"{proxy.url}/~/t2"))[0] is True  # disabled: no cut
    async with http.post(f"{base}/reset", json={"seed": 11, "exchanges": True}) as r:
        assert (await r.json()) == {"seed": 11}
    async with http.get(f"{base}/exchanges") as r:
        assert (await r.json())["exchanges"] == []
    async with http.delete(f"{control.url}/chaos/scopes/t2") as r:
        assert (await r.json()) == {"deleted": "t2"}
    assert "t2" not in proxy.scopes
    async with http.get(f"{control.url}/chaos/scopes/bad%20name/profile") as r:
        assert r.status == 400


async def test_scope_profile_may_not_carry_toxiproxy(
    control: ControlServer, http: aiohttp.ClientSession
) -> None:
    """A scope's profile cannot change the Toxiproxy all scopes share: 400."""
    profile = {"version": 1, "name": "t", "toxiproxy": {"proxy": "p", "toxics": []}}
    async with http.put(f"{control.url}/chaos/scopes/t3/profile", json=profile) as r:
        assert r.status == 400
        assert "toxiproxy" in (await r.json())["error"]


async def test_verify_gives_verdicts_for_a_scope(
    proxy: ChaosProxy, control: ControlServer, http: aiohttp.ClientSession
) -> None:
    """POST verify judges the scope's exchanges: a retry after the cut passes, a storm fails."""
    base = f"{control.url}/chaos/scopes/v1"
    async with http.put(f"{base}/profile", json=RESET_FIRST) as r:
        assert r.status == 200
    assert (await _chat(http, f"{proxy.url}/~/v1"))[0] is False
    done, body = await _chat(http, f"{proxy.url}/~/v1")
    assert done
    shown = "".join(
        part.split('"content":"', 1)[1].split('"', 1)[0]
        for part in body.decode().split("\n")
        if '"content":"' in part
    )
    ask = {
        "expect": ["completes", {"retries": {"max_attempts": 3}}],
        "client": {"exit_code": 0, "stdout": shown},
    }
    async with http.post(f"{base}/verify", json=ask) as r:
        result = await r.json()
    assert result["scope"] == "v1" and result["passed"] is True, result
    assert result["observed"]["attempts"] == 2 and result["observed"]["fault_met"] is True
    assert [e["name"] for e in result["expectations"]] == ["completes", "retries"]
    strict = {"expect": [{"retries": {"max_attempts": 1}}], "client": {"stdout": shown}}
    async with http.post(f"{base}/verify", json=strict) as r:
        result = await r.json()
    assert result["passed"] is False and result["expectations"][0]["verdict"] == "fail"


async def test_verify_refuses_a_bad_body_with_the_field(
    control: ControlServer, http: aiohttp.ClientSession
) -> None:
    """A bad expectation or an unknown key is a 400 naming the field."""
    for body, phrase in (
        ({"expect": ["nope"]}, "expect.0"),
        ({"expect": []}, "expect"),
        ({"expect": ["completes"], "extra": 1}, "extra"),
        ([], "body"),
    ):
        async with http.post(f"{control.url}/chaos/verify", json=body) as r:
            assert r.status == 400
            assert phrase in (await r.json())["error"]


async def test_health_and_scope_metrics(
    proxy: ChaosProxy, control: ControlServer, http: aiohttp.ClientSession
) -> None:
    """/chaos/health answers 200; metrics count scopes and label scoped exchanges by profile."""
    async with http.get(f"{control.url}/chaos/health") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    await _chat(http, f"{proxy.url}/~/m1/rate-limited-429")
    await _chat(http, f"{proxy.url}/~/m2")
    async with http.get(f"{control.url}/metrics") as r:
        text = await r.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("chaosstream_scopes", ())] == 2
    path = ("path", "/v1/chat/completions")
    key = ("chaosstream_exchanges_total", (("outcome", "refused"), path))
    assert samples[(key[0], (*key[1], ("profile", "rate-limited-429")))] == 1
    done = ("chaosstream_exchanges_total", (("outcome", "complete"), path, ("profile", "clean")))
    assert samples[done] == 1
