"""Toxiproxy's HTTP API on an aiohttp app: same routes, JSON shapes, codes and errors.

Handlers are serialised by the server's lock, as Toxiproxy's collection mutex does,
so two requests never interleave halfway through a listener restart.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from chaosstream._version import __version__
from chaosstream.toxiproxy.server import ApiError, ToxiproxyServer, bad_body

__all__ = ["add_toxiproxy_routes"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except RecursionError:
        raise bad_body("nested too deeply") from None
    except ValueError as exc:
        raise bad_body(str(exc) if raw.strip() else "EOF") from None


def _text(body: dict[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise bad_body(f"field {key} must be a string")
    return value


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_body(f"field {key} must be true or false")
    return value


def _proxy_fields(body: Any, where: str = "") -> tuple[str, str, str, bool]:
    """name, listen, upstream, enabled from a proxy JSON object; 400 when incomplete."""
    if not isinstance(body, dict):
        raise bad_body("expected a JSON object")
    name, upstream = _text(body, "name"), _text(body, "upstream")
    if not name:
        raise ApiError(f"missing required field: name{where}", 400)
    if not upstream:
        raise ApiError(f"missing required field: upstream{where}", 400)
    # Toxiproxy would listen on every interface for an empty listen; loopback is safer.
    listen = _text(body, "listen") or "127.0.0.1:0"
    return name, listen, upstream, _flag(body, "enabled", True)


class _Api:
    def __init__(self, server: ToxiproxyServer) -> None:
        self.server = server

    def guard(self, handler: _Handler) -> _Handler:
        """Refuse browsers (as Toxiproxy does), serialise, and render ApiErrors."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            if request.headers.get("User-Agent", "").startswith("Mozilla/"):
                return web.Response(status=403, text="User agent not allowed\n")
            try:
                async with self.server.lock:
                    return await handler(request)
            except ApiError as err:
                return _json(err.to_json(), err.status)

        return wrapped

    async def proxy_index(self, request: web.Request) -> web.StreamResponse:
        return _json({name: p.to_json() for name, p in self.server.proxies.items()})

    async def proxy_create(self, request: web.Request) -> web.StreamResponse:
        proxy = await self.server.create(*_proxy_fields(await _body(request)))
        return _json(proxy.to_json(), 201)

    async def populate(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        if not isinstance(body, list):
            raise bad_body("expected a JSON array of proxies")
        # Check every entry before touching anything, like Toxiproxy.
        fields = [_proxy_fields(item, f" at proxy {i}") for i, item in enumerate(body, 1)]
        done: list[dict[str, object]] = []
        for name, listen, upstream, enabled in fields:
            try:
                proxy = await self.server.add_or_replace(name, listen, upstream, enabled)
            except ApiError as err:
                return _json({**err.to_json(), "proxies": done}, err.status)
            done.append(proxy.to_json())
        return _json({"proxies": done}, 201)

    async def proxy_show(self, request: web.Request) -> web.StreamResponse:
        return _json(self.server.get(request.match_info["proxy"]).to_json())

    async def proxy_update(self, request: web.Request) -> web.StreamResponse:
        proxy = self.server.get(request.match_info["proxy"])
        body = await _body(request)
        if not isinstance(body, dict):
            raise bad_body("expected a JSON object")
        # Fields left out keep their current values.
        await proxy.update(
            _text(body, "listen", proxy.listen) or proxy.listen,
            _text(body, "upstream", proxy.upstream) or proxy.upstream,
            _flag(body, "enabled", proxy.enabled),
        )
        return _json(proxy.to_json())

    async def proxy_delete(self, request: web.Request) -> web.StreamResponse:
        await self.server.remove(request.match_info["proxy"])
        return web.Response(status=204)

    async def toxic_index(self, request: web.Request) -> web.StreamResponse:
        return _json(self.server.get(request.match_info["proxy"]).toxics_json())

    async def toxic_create(self, request: web.Request) -> web.StreamResponse:
        proxy = self.server.get(request.match_info["proxy"])
        # Toxiproxy answers 200 here, not 201.
        return _json(proxy.add_toxic(await _body(request)).to_json())

    async def toxic_show(self, request: web.Request) -> web.StreamResponse:
        proxy = self.server.get(request.match_info["proxy"])
        return _json(proxy.find_toxic(request.match_info["toxic"]).to_json())

    async def toxic_update(self, request: web.Request) -> web.StreamResponse:
        proxy = self.server.get(request.match_info["proxy"])
        entry = proxy.update_toxic(request.match_info["toxic"], await _body(request))
        return _json(entry.to_json())

    async def toxic_delete(self, request: web.Request) -> web.StreamResponse:
        proxy = self.server.get(request.match_info["proxy"])
        proxy.remove_toxic(request.match_info["toxic"])
        return web.Response(status=204)

    async def reset(self, request: web.Request) -> web.StreamResponse:
        await self.server.reset()
        return web.Response(status=204)

    async def version(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=json.dumps({"version": __version__}) + "\n",
            content_type="application/json",
            charset="utf-8",
        )


def add_toxiproxy_routes(app: web.Application, server: ToxiproxyServer) -> None:
    """Register Toxiproxy's HTTP API (``/proxies``, ``/populate``, ``/reset``,
    ``/version``) on ``app``, backed by ``server``."""
    api = _Api(server)
    g = api.guard
    r = app.router
    r.add_get("/proxies", g(api.proxy_index))
    r.add_post("/proxies", g(api.proxy_create))
    r.add_post("/populate", g(api.populate))
    r.add_get("/proxies/{proxy}", g(api.proxy_show))
    r.add_post("/proxies/{proxy}", g(api.proxy_update))
    r.add_patch("/proxies/{proxy}", g(api.proxy_update))
    r.add_delete("/proxies/{proxy}", g(api.proxy_delete))
    r.add_get("/proxies/{proxy}/toxics", g(api.toxic_index))
    r.add_post("/proxies/{proxy}/toxics", g(api.toxic_create))
    r.add_get("/proxies/{proxy}/toxics/{toxic}", g(api.toxic_show))
    r.add_post("/proxies/{proxy}/toxics/{toxic}", g(api.toxic_update))
    r.add_patch("/proxies/{proxy}/toxics/{toxic}", g(api.toxic_update))
    r.add_delete("/proxies/{proxy}/toxics/{toxic}", g(api.toxic_delete))
    r.add_post("/reset", g(api.reset))
    r.add_get("/version", g(api.version))
