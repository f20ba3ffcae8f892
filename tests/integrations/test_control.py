"""The control API: profile, faults, reset, exchanges, metrics, tokens, Toxiproxy routes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import toxiproxy
from click.testing import CliRunner

from chaosstream.cli.commands import cli
from chaosstream.integrations.control import ControlError, ControlServer, check_bind, parse_profile
from chaosstream.mock import MockServer
from chaosstream.proxy.server import ChaosProxy
from chaosstream.toxiproxy import ToxiproxyServer
from chaosstream.yamlfile import InputError
from tests.conftest import ProxyFactory

YAML = {"Content-Type": "application/yaml"}
CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
BAD_PROFILE = """\
version: 1
name: bad
faults:
  - type: disconnect
    after_events: -3
"""


@pytest.fixture
async def proxy(mock: MockServer, proxy_factory: ProxyFactory) -> ChaosProxy:
    return await proxy_factory(mock.url, "midstream-reset", seed=7)


@pytest.fixture
async def control(proxy: ChaosProxy) -> AsyncIterator[ControlServer]:
    server = ControlServer(proxy, toxiproxy=ToxiproxyServer(seed=1))
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _stream(http: aiohttp.ClientSession, proxy: ChaosProxy) -> tuple[bool, bytes]:
    """One streaming chat request; (completed, body received)."""
    body = b""
    try:
        async with http.post(f"{proxy.url}/v1/chat/completions", json=CHAT) as resp:
            async for data in resp.content.iter_any():
                body += data
        return b"[DONE]" in body, body
    except aiohttp.ClientPayloadError:
        return False, body


async def test_get_profile_shows_profile_and_seed(
    control: ControlServer, http: aiohttp.ClientSession
) -> None:
    """GET /chaos/profile returns the active profile as written, with the seed in use."""
    async with http.get(f"{control.url}/chaos/profile") as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["name"] == "midstream-reset" and data["seed"] == 7
    fault = data["profile"]["faults"][0]
    assert fault["type"] == "disconnect" and fault["after_events"] == 12


async def test_put_bad_profile_is_400_with_line_and_field(
    control: ControlServer, proxy: ChaosProxy, http: aiohttp.ClientSession
) -> None:
    """A bad profile gets 400 naming line and field, as the CLI does, and changes nothing."""
    async with http.put(f"{control.url}/chaos/profile", data=BAD_PROFILE, headers=YAML) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error.startswith("request body:5: faults[0].after_events: ")
    assert "greater than or equal to 0" in error
    assert proxy.profile.name == "midstream-reset"


async def test_put_json_profile_applies_to_next_request(
    control: ControlServer, proxy: ChaosProxy, http: aiohttp.ClientSession
) -> None:
    """A JSON profile replaces the active one; the next stream meets its fault."""
    assert (await _stream(http, proxy))[0] is False  # midstream-reset cuts the first
    doc = {
        "version": 1,
        "name": "close-early",
        "faults": [{"type": "disconnect", "after_events": 3, "mode": "close"}],
    }
    url = f"{control.url}/chaos/profile?seed=11"
    async with http.put(url, data=json.dumps(doc), headers=YAML) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["name"] == "close-early" and data["seed"] == 11 and proxy.seed == 11
    completed, body = await _stream(http, proxy)
    assert not completed and body.count(b"data: ") == 3


async def test_put_builtin_name_and_unknown_name(
    control: ControlServer, proxy: ChaosProxy, http: aiohttp.ClientSession
) -> None:
    """A bare built-in name switches profile; an unknown name or a file path is a 400."""
    async with http.put(f"{control.url}/chaos/profile", data="clean", headers=YAML) as resp:
        assert resp.status == 200
    assert proxy.profile.name == "clean"
    for name in ("no-such-profile", "/etc/passwd"):
        async with http.put(f"{control.url}/chaos/profile", data=name, headers=YAML) as resp:
            assert resp.status == 400
            assert "unknown built-in profile" in (await resp.json())["error"]
    assert proxy.profile.name == "clean"


async def test_patch_disables_and_enables_one_fault(
    control: ControlServer, proxy: ChaosProxy, http: aiohttp.ClientSession
) -> None:
    """PATCH /chaos/faults/0 {"enabled": false} lets the stream through; true arms it again."""
    url = f"{control.url}/chaos/faults/0"
    async with http.patch(url, json={"enabled": False}) as resp:
        assert resp.status == 200
        assert (await resp.json())["enabled"] is False
    assert (await _stream(http, proxy))[0] is True
    async with http.patch(url, json={"enabled": True}) as resp:
        assert resp.status == 200
    # requests: [1] counted only the exchange it saw while enabled: a reset restarts it.
    async with http.post(f"{control.url}/chaos/reset") as resp:
        assert resp.status == 200
    assert (await _stream(http, proxy))[0] is False
    async with http.get(f"{control.url}/chaos/faults") as resp:
        listed = await resp.json()
    assert [(f["index"], f["type"], f["enabled"]) for f in listed] == [(0, "disconnect", True)]


async def test_patch_rejects_bad_index_and_body(
    control: ControlServer, http: aiohttp.ClientSession
) -> None:
    """An index out of range is 404; a body other than {"enabled": bool} is 400."""
    async with http.patch(f"{control.url}/chaos/faults/5", json={"enabled": False}) as resp:
        assert resp.status == 404
        assert "has 1" in (await resp.json())["error"]
    for body in ('{"enabled": "no"}', "[1]", "{", '{"enabled": true, "x": 1}'):
        async with http.patch(f"{control.url}/chaos/faults/0", data=body, headers=YAML) as resp:
            assert resp.status == 400, body


async def test_reset_restarts_counters_and_sets_seed(
    control: ControlServer, proxy: ChaosProxy, http: aiohttp.ClientSession
) -> None:
    """POST /chaos/reset makes request 1 fire again, takes the new seed, clears the fault log."""
    assert (await _stream(http, proxy))[0] is False
    assert (await _stream(http, proxy))[0] is True
    assert len(proxy.fault_log) == 1
    async with http.post(f"{control.url}/chaos/reset", json={"seed": 99}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"seed": 99}
    assert proxy.seed == 99 and proxy.fault_log == []
    assert (await _stream(http, proxy))[0] is False
    async with http.post(f"{control.url}/chaos/reset", json={"seed": "x"}) as resp:
        assert resp.status == 400


async def test_exchanges_and_fault_log(
    control: ControlServer, proxy: ChaosProxy, http: aiohttp.ClientSession
) -> None:
    """GET /chaos/exchanges lists recent exchanges with their fault events; limit keeps the last."""
    await _stream(http, proxy)
    await _stream(http, proxy)
    async with http.get(f"{control.url}/chaos/exchanges") as resp:
        exchanges = (await resp.json())["exchanges"]
    assert [e["id"] for e in exchanges] == [1, 2]
    first = exchanges[0]
    assert first["outcome"] == "fault" and first["stream"] is True
    assert [(f["type"], f["action"], f["events"]) for f in first["faults"]] == [
        ("disconnect", "reset", 12)
    ]
    assert first["events"] == 12 and first["response_text"]
    assert exchanges[1]["outcome"] == "complete" and exchanges[1]["faults"] == []
    async with http.get(f"{control.url}/chaos/exchanges?limit=1") as resp:
        assert [e["id"] for e in (await resp.json())["exchanges"]] == [2]
    async with http.get(f"{control.url}/chaos/exchanges?limit=x") as resp:
        assert resp.status == 400
    async with http.get(f"{control.url}/chaos/fault-log") as resp:
        assert [f["action"] for f in (await resp.json())["faults"]] == ["reset"]
    async with http.post(f"{control.url}/chaos/reset", json={"exchanges": True}) as resp:
        assert resp.status == 200
    assert list(proxy.recorder.exchanges) == []


async def test_metrics_endpoint(
    control: ControlServer, proxy: ChaosProxy, http: aiohttp.ClientSession
) -> None:
    """GET /metrics serves the proxy's own registry in the Prometheus text format."""
    await _stream(http, proxy)
    async with http.get(f"{control.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert (
        'chaosstream_exchanges_total{outcome="fault",path="/v1/chat/completions",'
        'profile="midstream-reset"} 1.0' in text
    )


async def test_token_checked_on_every_request(
    proxy: ChaosProxy, http: aiohttp.ClientSession
) -> None:
    """With a token, requests without it or with a wrong one get 401, Toxiproxy's too."""
    server = ControlServer(proxy, token="s3cret", toxiproxy=ToxiproxyServer())
    await server.start()
    try:
        for path in ("/chaos/profile", "/metrics", "/version", "/proxies"):
            async with http.get(server.url + path) as resp:
                assert resp.status == 401, path
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer s3creT"}
        async with http.get(f"{server.url}/chaos/profile", headers=wrong) as resp:
            assert resp.status == 401
        good = {"Authorization": "Bearer s3cret"}
        async with http.get(f"{server.url}/chaos/profile", headers=good) as resp:
            assert resp.status == 200
        async with http.get(
            f"{server.url}/version", headers={"X-Chaosstream-Token": "s3cret"}
        ) as resp:
            assert resp.status == 200
    finally:
        await server.close()


async def test_exposed_address_needs_a_token(proxy: ChaosProxy) -> None:
    """Binding beyond loopback without a token is refused before anything listens."""
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.internal"):
        with pytest.raises(ControlError, match="--control-token"):
            check_bind(host, None)
    check_bind("0.0.0.0", "t")
    for host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        check_bind(host, None)
    server = ControlServer(proxy)
    with pytest.raises(ControlError):
        await server.start("0.0.0.0", 0)
    assert server.url == ""


def test_cli_refuses_exposed_control_without_token() -> None:
    """`proxy --control 0.0.0.0:PORT` without a token exits 2 with a message naming the fix."""
    result = CliRunner().invoke(
        cli, ["proxy", "--control", "0.0.0.0:0"], env={"CHAOSSTREAM_CONTROL_TOKEN": ""}
    )
    assert result.exit_code == 2
    assert "--control 0.0.0.0:0" in result.output
    assert "CHAOSSTREAM_CONTROL_TOKEN" in result.output
    assert "Traceback" not in result.output


def test_parse_profile_reports_yaml_and_json_errors() -> None:
    """JSON and YAML bodies both get line-numbered errors under the 'request body' source."""
    with pytest.raises(InputError, match=r"^request body:1: invalid YAML"):
        parse_profile('{"version": 1, "name": ')
    with pytest.raises(InputError, match=r"^request body:1: name: required field is missing"):
        parse_profile('{"version": 1}')
    assert parse_profile('{"version": 1, "name": "j"}').name == "j"


async def test_toxiproxy_python_drives_the_control_port(
    control: ControlServer, mock: MockServer, http: aiohttp.ClientSession
) -> None:
    """toxiproxy-python creates a proxy through the control port and traffic flows through it."""
    port = int(control.url.rpartition(":")[2])

    def create() -> str:
        client = toxiproxy.Toxiproxy()
        client.update_api_consumer("127.0.0.1", port)
        upstream = mock.url.removeprefix("http://")
        listen: str = client.create(upstream=upstream, name="model").listen
        return listen

    listen = await asyncio.to_thread(create)
    async with http.get(f"http://{listen}/healthz") as resp:
        assert resp.status == 200
