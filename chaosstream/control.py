"""The control API of a running proxy: JSON endpoints, Prometheus metrics, Toxiproxy's API.

Native endpoints live under ``/chaos/`` so they never collide with Toxiproxy's
(``/proxies``, ``/reset``, ``/populate``, ``/version``), which share the port when
a :class:`~chaosstream.toxiproxy.ToxiproxyServer` is given. ``docs/control-api.md``
lists every endpoint with an example.

Anyone who can reach the control port can change what the proxy does, so an
address other than loopback needs a token, checked on every request.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from chaosstream.metrics import CONTENT_TYPE, ProxyMetrics
from chaosstream.profile import Profile, builtin_names, load_profile
from chaosstream.proxy import ChaosProxy
from chaosstream.record import Exchange
from chaosstream.toxiproxy_profile import (
    AppliedToxics,
    ToxiproxyError,
    apply_toxiproxy,
    remove_toxiproxy,
)
from chaosstream.yamlfile import InputError, load_text

__all__ = [
    "TOKEN_ENV",
    "ControlError",
    "ControlServer",
    "check_bind",
    "exchange_json",
    "is_loopback",
    "parse_profile",
]

TOKEN_ENV = "CHAOSSTREAM_CONTROL_TOKEN"
"""Environment variable read when ``--control-token`` is not given."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlError(ValueError):
    """The control API cannot start as asked (e.g. exposed without a token)."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs; names that need DNS count as exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the control API beyond loopback without a token."""
    if not token and not is_loopback(host):
        raise ControlError(
            f"the control API on {host} would let anyone who reaches it change the proxy: "
            f"set --control-token (or {TOKEN_ENV}), or listen on 127.0.0.1"
        )


def parse_profile(text: str, source: str = "request body") -> Profile:
    """A profile from a JSON or YAML document, or a built-in name given as a bare string.

    Errors carry ``source`` and the line, like the CLI's (``request body:4: faults[0]...``).
    Only built-in names are looked up: a remote caller must not make the proxy read files.
    """
    stripped = text.strip()
    if stripped and "\n" not in stripped and ":" not in stripped and "{" not in stripped:
        name = stripped.strip("\"'")
        if name not in builtin_names():
            raise InputError(
                f"{source}: unknown built-in profile {name!r} ({', '.join(builtin_names())})"
            )
        return load_profile(name)
    return load_text(Profile, text, source)


def exchange_json(ex: Exchange) -> dict[str, Any]:
    """One recorded exchange for the API: the same record as a line of ``--record`` JSONL."""
    return ex.record()


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=1) + "\n", status=status, content_type="application/json"
    )


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status)


class ControlServer:
    """The control API for one :class:`ChaosProxy`, on its own port.

    ``toxiproxy`` mounts the Toxiproxy-compatible API on the same app.
    ``external`` is the ``toxiproxy:`` section currently applied (by the caller
    at start); replacing the profile swaps it for the new profile's section.
    """

    def __init__(
        self,
        proxy: ChaosProxy,
        *,
        token: str | None = None,
        toxiproxy: Any = None,
        external: AppliedToxics | None = None,
    ) -> None:
        self.proxy = proxy
        self.token = token or None
        self.toxiproxy = toxiproxy
        self.external = external
        self.metrics = ProxyMetrics(proxy.recorder, lambda: proxy.profile.name)
        self.app = web.Application(middlewares=[self._auth], client_max_size=4 * 1024 * 1024)
        r = self.app.router
        r.add_get("/chaos/profile", self.get_profile)
        r.add_put("/chaos/profile", self.put_profile)
        r.add_get("/chaos/faults", self.get_faults)
        r.add_patch("/chaos/faults/{index}", self.patch_fault)
        r.add_post("/chaos/reset", self.post_reset)
        r.add_get("/chaos/exchanges", self.get_exchanges)
        r.add_get("/chaos/fault-log", self.get_fault_log)
        r.add_get("/metrics", self.get_metrics)
        if toxiproxy is not None:
            from chaosstream.toxiproxy import add_toxiproxy_routes

            add_toxiproxy_routes(self.app, toxiproxy)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` and return the base URL; :class:`ControlError` if exposed
        without a token."""
        check_bind(host, self.token)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        bound_host, bound_port = self._runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    async def close(self) -> None:
        """Stop serving; Toxiproxy listeners are closed too."""
        self.metrics.close()
        if self.toxiproxy is not None:
            await self.toxiproxy.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- auth ------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if self.token is not None:
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer":
                value = request.headers.get("X-Chaosstream-Token", "")
            # Compare bytes in constant time so the token can't be guessed by timing.
            if not hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return web.Response(
                    status=401,
                    text=json.dumps({"error": "missing or wrong control token"}) + "\n",
                    content_type="application/json",
                    headers={"WWW-Authenticate": 'Bearer realm="chaosstream"'},
                )
        return await handler(request)

    # -- profile ---------------------------------------------------------------

    def _profile_json(self) -> dict[str, Any]:
        profile = self.proxy.profile
        data = {"version": 1, **profile.model_dump(mode="json", exclude_unset=True)}
        return {"name": profile.name, "seed": self.proxy.seed, "profile": data}

    async def get_profile(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/profile``: the active profile and the seed in use."""
        return _json(self._profile_json())

    async def put_profile(self, request: web.Request) -> web.StreamResponse:
        """``PUT /chaos/profile[?seed=N]``: replace the profile (JSON, YAML or a built-in name)."""
        try:
            seed = _seed(request.query.get("seed"))
            profile = parse_profile(await request.text())
        except InputError as e:
            return _error(str(e), 400)
        try:
            await self._swap_external(profile)
        except ToxiproxyError as e:
            return _error(str(e), 502)
        self.proxy.set_profile(profile, seed)
        return _json(self._profile_json())

    async def _swap_external(self, profile: Profile) -> None:
        if self.external is not None:
            await remove_toxiproxy(self.external)
            self.external = None
        if profile.toxiproxy is not None:
            self.external = await apply_toxiproxy(profile.toxiproxy)

    # -- faults ----------------------------------------------------------------

    def _fault_json(self, index: int) -> dict[str, Any]:
        fault = self.proxy.profile.faults[index]
        return {
            "index": index,
            "type": fault.type,
            "enabled": fault.enabled,
            "fault": fault.model_dump(mode="json", exclude_unset=True),
        }

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/faults``: the profile's faults with their index and state."""
        return _json([self._fault_json(i) for i in range(len(self.proxy.profile.faults))])

    async def patch_fault(self, request: web.Request) -> web.StreamResponse:
        """``PATCH /chaos/faults/{index}`` with ``{"enabled": false}``: switch one fault."""
        faults = self.proxy.profile.faults
        raw = request.match_info["index"]
        if not raw.isdigit() or int(raw) >= len(faults):
            return _error(f"no fault {raw!r}: the profile has {len(faults)} (index from 0)", 404)
        try:
            body = json.loads(await request.text() or "null")
        except ValueError as e:
            return _error(f"request body: invalid JSON: {e}", 400)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("enabled"), bool)
            or len(body) != 1
        ):
            return _error('request body: expected {"enabled": true|false}', 400)
        # The injector reads ``enabled`` on every exchange, so this takes effect at once.
        faults[int(raw)].enabled = body["enabled"]
        return _json(self._fault_json(int(raw)))

    async def post_reset(self, request: web.Request) -> web.StreamResponse:
        """``POST /chaos/reset`` with optional ``{"seed": N, "exchanges": true}``."""
        text = await request.text()
        try:
            body = json.loads(text) if text.strip() else {}
        except ValueError as e:
            return _error(f"request body: invalid JSON: {e}", 400)
        if not isinstance(body, dict) or set(body) - {"seed", "exchanges"}:
            return _error('request body: expected {"seed": N, "exchanges": true|false}', 400)
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            return _error("request body: seed: must be an integer", 400)
        self.proxy.reset(seed)
        if body.get("exchanges") is True:
            self.proxy.recorder.clear()
        return _json({"seed": self.proxy.seed})

    # -- what happened ---------------------------------------------------------

    async def get_exchanges(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/exchanges[?limit=N]``: the most recent finished exchanges, oldest first."""
        raw = request.query.get("limit", "100")
        if not raw.isdigit():
            return _error(f"limit: {raw!r} is not a whole number", 400)
        recent = list(self.proxy.recorder.exchanges)[-int(raw) :] if int(raw) else []
        return _json({"exchanges": [exchange_json(ex) for ex in recent]})

    async def get_fault_log(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/fault-log``: every fault event since the last reset."""
        return _json({"faults": [f.as_dict() for f in self.proxy.fault_log]})

    async def get_metrics(self, request: web.Request) -> web.StreamResponse:
        """``GET /metrics``: Prometheus text format, this proxy's registry only."""
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def _seed(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"seed: {raw!r} is not an integer") from None
