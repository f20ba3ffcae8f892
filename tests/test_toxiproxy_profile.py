"""A profile's toxiproxy: section, applied through toxiproxy-python to chaosstream's own
Toxiproxy-compatible server, and removed again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from chaosstream.control import ControlServer
from chaosstream.mock import MockServer
from chaosstream.profile import Profile, load_text, profile_from_data
from chaosstream.toxiproxy import RunningServer
from chaosstream.toxiproxy_profile import (
    ToxiproxyError,
    ToxiproxySection,
    apply_toxiproxy,
    remove_toxiproxy,
)
from chaosstream.yamlfile import InputError
from tests.conftest import ProxyFactory


@pytest.fixture
async def model_proxy(tp: RunningServer, mock: MockServer) -> str:
    """A Toxiproxy proxy 'model' in front of the mock; returns its listen address."""
    proxy = await tp.server.create("model", "127.0.0.1:0", mock.url.removeprefix("http://"), True)
    return proxy.listen


def section(tp: RunningServer, **extra: object) -> ToxiproxySection:
    data: dict[str, object] = {
        "url": tp.url,
        "proxy": "model",
        "toxics": [{"type": "latency", "attributes": {"latency": 300}}],
        **extra,
    }
    return ToxiproxySection.model_validate(data)


def toxic_names(tp: RunningServer, proxy: str = "model") -> list[str]:
    return [str(t["name"]) for t in tp.server.get(proxy).toxics_json()]


async def _healthz_s(listen: str) -> float:
    async with aiohttp.ClientSession() as http:
        start = time.monotonic()
        async with http.get(f"http://{listen}/healthz") as resp:
            assert resp.status == 200
        return time.monotonic() - start


async def test_applies_and_removes_toxics_with_measured_latency(
    tp: RunningServer, model_proxy: str
) -> None:
    """The section's latency toxic is on the server and slows real traffic; remove takes it off."""
    applied = await apply_toxiproxy(section(tp))
    assert toxic_names(tp) == ["chaosstream_latency_downstream"]
    assert applied.added == ["chaosstream_latency_downstream"] and not applied.created_proxy
    slow = await _healthz_s(model_proxy)
    assert 0.28 <= slow < 3.0
    await remove_toxiproxy(applied)
    assert toxic_names(tp) == []
    assert await _healthz_s(model_proxy) < 0.25


async def test_creates_missing_proxy_and_deletes_it_at_exit(
    tp: RunningServer, mock: MockServer
) -> None:
    """With upstream given and no such proxy, it is created, used, and deleted at removal."""
    spec = section(tp, proxy="made", upstream=mock.url.removeprefix("http://"), toxics=[])
    applied = await apply_toxiproxy(spec)
    assert applied.created_proxy
    listen = tp.server.get("made").listen
    assert await _healthz_s(listen) < 2.0
    await remove_toxiproxy(applied)
    assert "made" not in tp.server.proxies


async def test_missing_proxy_without_upstream_is_a_clear_error(tp: RunningServer) -> None:
    """A proxy that does not exist and cannot be created names the fix."""
    with pytest.raises(ToxiproxyError, match=r"has no proxy 'model'.*toxiproxy\.upstream"):
        await apply_toxiproxy(section(tp))


async def test_unreachable_server_is_a_clear_error() -> None:
    """A Toxiproxy that is not listening gives 'cannot reach toxiproxy at URL'."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    spec = ToxiproxySection(url=f"http://127.0.0.1:{port}", proxy="model")
    with pytest.raises(ToxiproxyError, match=rf"cannot reach toxiproxy at http://127.0.0.1:{port}"):
        await apply_toxiproxy(spec)


async def test_server_refusal_undoes_what_landed(tp: RunningServer, model_proxy: str) -> None:
    """When the server refuses the second toxic, the first one is taken off again."""
    spec = section(
        tp,
        toxics=[
            {"type": "latency", "attributes": {"latency": 10}},
            {"type": "slicer", "attributes": {"average_size": -1}},
        ],
    )
    with pytest.raises(ToxiproxyError, match="refused to add toxics"):
        await apply_toxiproxy(spec)
    assert toxic_names(tp) == []


def test_section_errors_name_line_and_field() -> None:
    """A bad toxiproxy section is a profile error with file, line and field."""
    text = "version: 1\nname: t\ntoxiproxy:\n  proxy: m\n  toxics:\n    - type: lag\n"
    with pytest.raises(InputError, match=r"^p\.yaml:6: toxiproxy\.toxics\[0\]\.type: "):
        load_text(Profile, text, "p.yaml")
    with pytest.raises(InputError, match=r"toxiproxy\.url: .*http://HOST:PORT"):
        load_text(Profile, "version: 1\nname: t\ntoxiproxy: {proxy: m, url: 'https://x:1'}\n", "p")


async def test_profile_switch_over_control_api_swaps_toxics(
    tp: RunningServer, model_proxy: str, mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """PUT /chaos/profile removes the old profile's toxics and applies the new one's."""
    first = profile_from_data(
        {"version": 1, "name": "a", "toxiproxy": section(tp).model_dump()}, "<a>"
    )
    assert first.toxiproxy is not None
    proxy = await proxy_factory(mock.url, first)
    applied = await apply_toxiproxy(first.toxiproxy)
    control = ControlServer(proxy, external=applied)
    await control.start()
    try:
        body = (
            f"version: 1\nname: b\ntoxiproxy:\n  url: {tp.url}\n  proxy: model\n  toxics:\n"
            "    - {type: bandwidth, name: slow, attributes: {rate: 100}}\n"
        )
        async with (
            aiohttp.ClientSession() as http,
            http.put(f"{control.url}/chaos/profile", data=body) as resp,
        ):
            assert resp.status == 200, await resp.text()
        assert toxic_names(tp) == ["slow"]
        assert control.external is not None and control.external.added == ["slow"]
    finally:
        await control.close()
    assert control.external is not None
    await remove_toxiproxy(control.external)
    assert toxic_names(tp) == []


async def test_proxy_command_applies_at_start_and_removes_at_exit(
    tp: RunningServer, model_proxy: str, tmp_path: Path
) -> None:
    """`chaosstream proxy --profile FILE` adds toxics at start, removes them on SIGTERM."""
    profile = tmp_path / "tp.yaml"
    profile.write_text(
        f"version: 1\nname: with-toxiproxy\ntoxiproxy:\n  url: {tp.url}\n  proxy: model\n"
        "  toxics:\n    - {type: latency, attributes: {latency: 50, jitter: 5}}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chaosstream",
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--profile",
        str(profile),
        "--log-format",
        "json",
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "CHAOSSTREAM_CONTROL_TOKEN": ""},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while not any("control:" in line for line in lines):
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, f"proxy exited early: {lines}"
            lines.append(line)
        assert any("toxiproxy: 1 toxic(s) on 'model'" in line for line in lines), lines
        assert toxic_names(tp) == ["chaosstream_latency_downstream"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 15)
        code = await asyncio.wait_for(proc.wait(), 15)
    assert code == 0, rest.decode()
    assert toxic_names(tp) == []
