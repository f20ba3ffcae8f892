"""A profile's toxiproxy: section, applied through toxiproxy-python to chaosstream's own
Toxiproxy-compatible server, and removed again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chaosstream.faults.profile import Profile, load_text, profile_from_data
from chaosstream.faults.toxiproxy_section import (
    ToxiproxyError,
    ToxiproxySection,
    apply_toxiproxy,
    remove_toxiproxy,
)
from chaosstream.integrations.control import ControlServer
from chaosstream.mock import MockServer
from chaosstream.toxiproxy import RunningServer
from chaosstream.yamlfile import InputError
from tests.conftest import ProxyFactory

YAML = {"Content-Type": "application/yaml"}


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
    with pytest.raises(ToxiproxyError, match=r"refused to add toxic .*HTTP 400"):
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
    """PUT /chaos/profile removes the old profile's toxics and applies the new one's;
    closing the control server takes the new ones off."""
    first = profile_from_data(
        {"version": 1, "name": "a", "toxiproxy": section(tp).model_dump()}, "<a>"
    )
    assert first.toxiproxy is not None
    proxy = await proxy_factory(mock.url, first)
    applied = await apply_toxiproxy(first.toxiproxy)
    control = ControlServer(proxy, external=applied, toxiproxy_url=tp.url)
    await control.start()
    try:
        body = (
            f"version: 1\nname: b\ntoxiproxy:\n  url: {tp.url}\n  proxy: model\n  toxics:\n"
            "    - {type: bandwidth, name: slow, attributes: {rate: 100}}\n"
        )
        async with (
            aiohttp.ClientSession() as http,
            http.put(f"{control.url}/chaos/profile", data=body, headers=YAML) as resp,
        ):
            assert resp.status == 200, await resp.text()
        assert toxic_names(tp) == ["slow"]
        assert control.external is not None and control.external.added == ["slow"]
    finally:
        await control.close()
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


# -- hostile or broken Toxiproxy servers, swaps under load (issue 10 items 6, 7) -------


@pytest.fixture
async def hung() -> AsyncIterator[str]:
    """A server that accepts connections and never answers; yields its http:// URL."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()


@pytest.fixture
async def foreign() -> AsyncIterator[tuple[str, list[str]]]:
    """A non-Toxiproxy server on loopback recording each request line; (URL, lines)."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path_qs}")
        return web.Response(text="SECRET-INTERNAL-PAGE " * 100)

    server = web.Server(answer)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_pushed_profile_cannot_choose_the_toxiproxy_address(
    tp: RunningServer,
    model_proxy: str,
    mock: MockServer,
    proxy_factory: ProxyFactory,
    foreign: tuple[str, list[str]],
) -> None:
    """A pushed profile naming another Toxiproxy URL is refused 403; nothing calls that URL."""
    url, seen = foreign
    proxy = await proxy_factory(mock.url, "clean")
    control = ControlServer(proxy, toxiproxy_url=tp.url)
    await control.start()
    try:
        body = f"version: 1\nname: ssrf\ntoxiproxy: {{url: '{url}', proxy: model}}\n"
        async with (
            aiohttp.ClientSession() as http,
            http.put(f"{control.url}/chaos/profile", data=body, headers=YAML) as resp,
        ):
            assert resp.status == 403
            error = (await resp.json())["error"]
        assert "toxiproxy.url" in error and "SECRET" not in error
        assert seen == [] and proxy.profile.name == "clean"
        # Without a url the section goes to the configured Toxiproxy.
        body = "version: 1\nname: ok\ntoxiproxy: {proxy: model, toxics: [{type: latency}]}\n"
        async with (
            aiohttp.ClientSession() as http,
            http.put(f"{control.url}/chaos/profile", data=body, headers=YAML) as resp,
        ):
            assert resp.status == 200, await resp.text()
        assert toxic_names(tp) == ["chaosstream_latency_downstream"]
    finally:
        await control.close()
    assert toxic_names(tp) == []


async def test_proxy_and_toxic_names_are_escaped(tp: RunningServer, mock: MockServer) -> None:
    """Names with '?', '#', '%' and spaces reach the right proxy and toxic, not another path."""
    name = "db ?x=1#frag%2F"
    await tp.server.create(name, "127.0.0.1:0", mock.url.removeprefix("http://"), True)
    spec = section(tp, proxy=name, toxics=[{"type": "latency", "name": "lag ?#%"}])
    applied = await apply_toxiproxy(spec)
    assert toxic_names(tp, name) == ["lag ?#%"]
    await remove_toxiproxy(applied)
    assert toxic_names(tp, name) == []


@pytest.mark.parametrize(
    ("status", "body", "expect"),
    [
        (200, b"SECRET not json", "unexpected answer"),
        (200, b"[]", "unexpected answer"),
        (200, b'{"name": "model"}', "unexpected answer"),
        (200, b'{"toxics": [{"type": "latency"}]}', "unexpected answer"),
        (500, b"SECRET stack trace", r"refused to read proxy 'model' \(HTTP 500\)$"),
        (302, b"SECRET", "unexpected answer"),
        (418, b'{"error": "SECRET' + b"x" * 5000 + b'"}', "unexpected answer"),
    ],
    ids=["text", "list", "no-toxics", "toxic-without-name", "500", "redirect", "teapot"],
)
async def test_odd_answers_are_clear_errors(status: int, body: bytes, expect: str) -> None:
    """An answer that is not Toxiproxy's is a short ToxiproxyError, never a KeyError or echo."""

    async def answer(request: web.Request) -> web.StreamResponse:
        headers = {"Location": "http://127.0.0.1:1/"} if status == 302 else {}
        return web.Response(status=status, body=body, headers=headers)

    runner = web.ServerRunner(web.Server(answer))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        spec = ToxiproxySection(url=f"http://127.0.0.1:{runner.addresses[0][1]}", proxy="model")
        with pytest.raises(ToxiproxyError, match=expect) as caught:
            await apply_toxiproxy(spec)
        assert "SECRET" not in str(caught.value) and len(str(caught.value)) < 400
    finally:
        await runner.cleanup()


async def test_hung_toxiproxy_times_out(hung: str) -> None:
    """A Toxiproxy that accepts and never answers fails the call after the timeout."""
    start = time.monotonic()
    with pytest.raises(ToxiproxyError, match=r"did not answer within 0\.5 s"):
        await apply_toxiproxy(ToxiproxySection(url=hung, proxy="model"), timeout_s=0.5)
    assert time.monotonic() - start < 3


async def test_refused_swap_keeps_old_profile_and_toxics(
    tp: RunningServer, model_proxy: str, mock: MockServer, proxy_factory: ProxyFactory
) -> None:
    """When Toxiproxy refuses the new toxics: 502, old profile active, old toxics back."""
    first = profile_from_data(
        {"version": 1, "name": "a", "toxiproxy": section(tp).model_dump()}, "<a>"
    )
    assert first.toxiproxy is not None
    proxy = await proxy_factory(mock.url, first)
    control = ControlServer(
        proxy, external=await apply_toxiproxy(first.toxiproxy), toxiproxy_url=tp.url
    )
    await control.start()
    try:
        body = (
            "version: 1\nname: b\nfaults: [{type: disconnect, after_events: 1}]\n"
            "toxiproxy:\n  proxy: model\n  toxics:\n    - {type: latency, name: fine}\n"
            "    - {type: slicer, attributes: {average_size: -1}}\n"
        )
        async with (
            aiohttp.ClientSession() as http,
            http.put(f"{control.url}/chaos/profile", data=body, headers=YAML) as resp,
        ):
            assert resp.status == 502
            error = (await resp.json())["error"]
        assert "refused" in error and "previous profile and its toxics stay active" in error
        assert proxy.profile.name == "a"
        assert toxic_names(tp) == ["chaosstream_latency_downstream"]
    finally:
        await control.close()
    assert toxic_names(tp) == []


async def _start_proxy(*args: str, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """`chaosstream proxy ... --control 127.0.0.1:0` as a subprocess; (process, control URL)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chaosstream",
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--log-format",
        "json",
        *args,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "CHAOSSTREAM_CONTROL_TOKEN": "", **(env or {})},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, f"proxy exited early: {lines}"
        lines.append(line)
        if "control:" in line:
            return proc, line.split()[1]


async def _stop(proc: Any) -> tuple[int, float]:
    """SIGTERM; (exit code, seconds to exit)."""
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.stderr.read(), 30)
    code = await asyncio.wait_for(proc.wait(), 30)
    return code, time.monotonic() - start


async def test_concurrent_swaps_are_serialised_and_nothing_leaks(
    tp: RunningServer, model_proxy: str, tmp_path: Path
) -> None:
    """30 concurrent PUTs: the toxics on Toxiproxy are the active profile's; none after exit."""
    start = tmp_path / "start.yaml"
    start.write_text(f"version: 1\nname: start\ntoxiproxy: {{url: '{tp.url}', proxy: model}}\n")
    proc, control = await _start_proxy("--profile", str(start))
    try:

        async def put(i: int, http: aiohttp.ClientSession) -> int:
            body = (
                f"version: 1\nname: p{i}\ntoxiproxy:\n  url: {tp.url}\n  proxy: model\n"
                f"  toxics:\n    - {{type: latency, name: a{i}}}\n"
                f"    - {{type: bandwidth, name: b{i}, attributes: {{rate: 1000}}}}\n"
            )
            async with http.put(f"{control}/chaos/profile", data=body, headers=YAML) as resp:
                return resp.status

        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(*(put(i, http) for i in range(30)))
            async with http.get(f"{control}/chaos/profile") as resp:
                active = (await resp.json())["name"]
        assert statuses == [200] * 30
        n = active.removeprefix("p")
        assert sorted(toxic_names(tp)) == [f"a{n}", f"b{n}"]
    finally:
        code, _ = await _stop(proc)
    assert code == 0
    assert toxic_names(tp) == []


async def test_sigterm_stops_the_proxy_while_toxiproxy_hangs(hung: str) -> None:
    """With a Toxiproxy that never answers, a PUT ends in 502 and SIGTERM still stops the proxy."""
    proc, control = await _start_proxy(
        "--toxiproxy", hung, env={"CHAOSSTREAM_TOXIPROXY_TIMEOUT_S": "1"}
    )
    body = "version: 1\nname: t\ntoxiproxy: {proxy: model, toxics: [{type: latency}]}\n"
    try:
        async with aiohttp.ClientSession() as http:
            start = time.monotonic()
            async with http.put(f"{control}/chaos/profile", data=body, headers=YAML) as resp:
                assert resp.status == 502
                assert "did not answer within 1 s" in (await resp.json())["error"]
            assert time.monotonic() - start < 10
            # A second PUT is waiting on the hung server when SIGTERM comes.
            pending = asyncio.ensure_future(
                http.put(f"{control}/chaos/profile", data=body, headers=YAML)
            )
            await asyncio.sleep(0.3)
            code, took = await _stop(proc)
            with contextlib.suppress(aiohttp.ClientError):
                (await pending).release()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0 and took < 15, (code, took)
