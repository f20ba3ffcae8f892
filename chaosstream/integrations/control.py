"""The control API of a running proxy: JSON endpoints, Prometheus metrics, Toxiproxy's API.

Native endpoints live under ``/chaos/`` so they never collide with Toxiproxy's
(``/proxies``, ``/reset``, ``/populate``, ``/version``), which share the port when
a :class:`~chaosstream.toxiproxy.ToxiproxyServer` is given. ``docs/control-api.md``
lists every endpoint with an example.

Anyone who can reach the control port can change what the proxy does, so an
address other than loopback needs a token, checked on every request. A web page
in the user's browser can reach loopback too, so every request must also name
this server in ``Host`` (against DNS rebinding), and a state-changing one may not
come from another ``Origin`` nor carry a type a page sends without a CORS
preflight (text/plain, forms).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from yarl import URL

from chaosstream.faults.profile import Profile, builtin_names, load_profile
from chaosstream.faults.toxiproxy_section import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    AppliedToxics,
    ToxiproxyError,
    ToxiproxySection,
    apply_toxiproxy,
    remove_toxiproxy,
    same_address,
)
from chaosstream.integrations.metrics import CONTENT_TYPE, ProxyMetrics
from chaosstream.proxy.record import Exchange
from chaosstream.proxy.scopes import Scope, ScopeError, check_scope_name
from chaosstream.proxy.server import ChaosProxy
from chaosstream.verify.scenario import Expect
from chaosstream.yamlfile import InputError, load_text, max_input_bytes

__all__ = [
    "ALLOW_HOST_ENV",
    "TOKEN_ENV",
    "ClientReport",
    "ControlError",
    "ControlServer",
    "VerifyRequest",
    "check_bind",
    "exchange_json",
    "is_loopback",
    "parse_profile",
]

TOKEN_ENV = "CHAOSSTREAM_CONTROL_TOKEN"
"""Environment variable read when ``--control-token`` is not given."""

ALLOW_HOST_ENV = "CHAOSSTREAM_CONTROL_ALLOW_HOST"
"""Extra ``Host`` names the control API answers to (space-separated)."""

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The types a cross-site <form> or fetch(no-cors) sends without a CORS preflight
# (Fetch standard, "CORS-safelisted request-header": Content-Type).
_SIMPLE_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_PORT = re.compile(r"[0-9]{1,5}")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("chaosstream.integrations.control")


class ControlError(ValueError):
    """The control API cannot start as asked (e.g. exposed without a token)."""


class _Refused(Exception):
    """A request answered with a JSON error; raised anywhere below a handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _cut(text: str, limit: int = 80) -> str:
    """``text`` quoted, at most ``limit`` characters of it: messages never echo whole input."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


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
                f"{source}: unknown built-in profile {_cut(name)} ({', '.join(builtin_names())})"
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


def _host_part(value: str) -> str | None:
    """The host of a ``Host`` header value (lower case, no brackets), None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else rest
        return host if sep and (not rest or _PORT.fullmatch(port)) else None
    if value.count(":") > 1:  # a bare IPv6 literal, as non-browser clients may send
        return value
    host, sep, port = value.partition(":")
    return host if host and (not sep or _PORT.fullmatch(port)) else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _whole(raw: str, field: str, digits: int) -> int:
    """A non-negative ASCII integer of at most ``digits`` digits (``²`` and 5,000 digits: no)."""
    if not re.fullmatch(rf"[0-9]{{1,{digits}}}", raw):
        raise _Refused(400, f"{field}: {_cut(raw)} is not a whole number (0 to {digits} digits)")
    return int(raw)


class ControlServer:
    """The control API for one :class:`ChaosProxy`, on its own port.

    ``toxiproxy`` mounts the Toxiproxy-compatible API on the same app.
    ``external`` is the ``toxiproxy:`` section currently applied (by the caller
    at start); replacing the profile swaps it for the new profile's section, and
    :meth:`close` removes it. ``toxiproxy_url`` is the only Toxiproxy address a
    pushed profile may use (it comes from the command line, never from a request).
    ``allow_hosts`` adds ``Host`` names beyond loopback and the bound address
    (``*`` turns the check off).
    """

    def __init__(
        self,
        proxy: ChaosProxy,
        *,
        token: str | None = None,
        toxiproxy: Any = None,
        external: AppliedToxics | None = None,
        toxiproxy_url: str = DEFAULT_URL,
        toxiproxy_timeout_s: float = DEFAULT_TIMEOUT_S,
        allow_hosts: Iterable[str] = (),
        max_body_bytes: int | None = None,
    ) -> None:
        self.proxy = proxy
        self.token = token or None
        self.toxiproxy = toxiproxy
        self.external = external
        self.toxiproxy_url = toxiproxy_url
        self.toxiproxy_timeout_s = toxiproxy_timeout_s
        # The input cap profile files have (1 MiB, CHAOSSTREAM_MAX_INPUT_BYTES): a YAML
        # profile parses at about 0.1 MB/s, so one PUT costs a worker thread seconds at most.
        self.max_body_bytes = max_body_bytes or max_input_bytes()
        env_hosts = os.environ.get(ALLOW_HOST_ENV, "").split()
        self._hosts = set(_LOOPBACK_NAMES) | {h.lower() for h in (*allow_hosts, *env_hosts)}
        self._any_ip = False
        # One swap at a time: two interleaved swaps each removed the other's toxics
        # half-way and left the rest on the external server after exit.
        self._swap_lock = asyncio.Lock()
        self._closing = False
        self.metrics = ProxyMetrics(proxy.recorder, lambda: proxy.profile.name, proxy.scopes)
        self.app = web.Application(
            middlewares=[self._guard, self._auth], client_max_size=self.max_body_bytes
        )
        r = self.app.router
        # Every native route twice: for the unscoped proxy, and per scope with the same bodies.
        for base in ("/chaos", "/chaos/scopes/{scope}"):
            r.add_get(f"{base}/profile", self.get_profile)
            r.add_put(f"{base}/profile", self.put_profile)
            r.add_get(f"{base}/faults", self.get_faults)
            r.add_patch(f"{base}/faults/{{index}}", self.patch_fault)
            r.add_post(f"{base}/reset", self.post_reset)
            r.add_get(f"{base}/exchanges", self.get_exchanges)
            r.add_get(f"{base}/fault-log", self.get_fault_log)
            r.add_post(f"{base}/verify", self.post_verify)
        r.add_get("/chaos/scopes", self.get_scopes)
        r.add_get("/chaos/scopes/{scope}", self.get_scope)
        r.add_delete("/chaos/scopes/{scope}", self.delete_scope)
        r.add_get("/chaos/health", self.get_health)
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
        self._hosts.add(host.strip("[]").lower())
        self._hosts.add(str(bound_host).lower())
        # Bound to every address: any IP literal names this server (a DNS-rebinding
        # page needs a name, and names still have to be allowed).
        self._any_ip = bound_host in ("0.0.0.0", "::")
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    async def close(self) -> None:
        """Stop serving, then take the external Toxiproxy's toxics off; Toxiproxy
        listeners are closed too."""
        self._closing = True
        self.metrics.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        async with self._swap_lock:
            external, self.external = self.external, None
            if external is not None:
                try:
                    await remove_toxiproxy(external)
                except ToxiproxyError as e:
                    log.warning("toxics left on the external Toxiproxy: %s", e)
        if self.toxiproxy is not None:
            await self.toxiproxy.close()

    # -- guards ----------------------------------------------------------------

    def _host_allowed(self, host: str | None) -> bool:
        if host is None:
            return False
        return host in self._hosts or "*" in self._hosts or (self._any_ip and _is_ip(host))

    @web.middleware
    async def _guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            self._check_browser_rules(request)
            return await handler(request)
        except _Refused as e:
            response = _error(e.message, e.status)
            if e.status == 413:
                # Do not read the rest of a body we refused for its size.
                response.force_close()
            return response

    def _check_browser_rules(self, request: web.Request) -> None:
        """DNS rebinding and cross-site requests (a page in the user's browser)."""
        for value in request.headers.getall("Host", []):
            if not self._host_allowed(_host_part(value)):
                raise _Refused(
                    403,
                    f"Host {_cut(value)} does not name this control API (DNS rebinding?); "
                    "allowed: localhost, 127.0.0.1, [::1] and the bound address; "
                    "add names with --control-allow-host",
                )
        if request.method not in _STATE_CHANGING:
            return
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            raise _Refused(
                403, f"Origin {_cut(origin)} may not change this proxy (cross-site request)"
            )
        ctype = request.headers.get("Content-Type")
        if ctype is not None and ctype.partition(";")[0].strip().lower() in _SIMPLE_TYPES:
            raise _Refused(
                415,
                f"Content-Type {_cut(ctype)} is refused for {request.method}: any web page can "
                "send it cross-site; send application/json or application/yaml",
            )

    def _origin_allowed(self, origin: str) -> bool:
        try:
            url = URL(origin)
        except ValueError:
            return False
        return url.scheme in ("http", "https") and self._host_allowed((url.host or "").lower())

    @web.middleware
    async def _auth(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if self.token is not None:
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer":
                value = request.headers.get("X-Chaosstream-Token", "")
            # aiohttp keeps header bytes that are not UTF-8 as surrogates: encode them
            # back as they came, so they compare (unequal) instead of raising.
            # Compare bytes in constant time so the token can't be guessed by timing.
            sent = value.strip().encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(sent, self.token.encode()):
                return web.Response(
                    status=401,
                    text=json.dumps({"error": "missing or wrong control token"}) + "\n",
                    content_type="application/json",
                    headers={"WWW-Authenticate": 'Bearer realm="chaosstream"'},
                )
        return await handler(request)

    # -- request bodies --------------------------------------------------------

    async def _text(self, request: web.Request) -> str:
        """The body as text: at most ``max_body_bytes`` (413 past it, unread), UTF-8."""
        cap = self.max_body_bytes
        too_big = _Refused(413, f"request body: larger than the {cap}-byte cap")
        if request.content_length is not None and request.content_length > cap:
            raise too_big
        charset = request.charset
        if charset is not None and charset.lower() not in _UTF8:
            raise _Refused(415, f"charset {_cut(charset)} is not supported: send UTF-8")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > cap:
                raise too_big
            chunks.append(chunk)
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Refused(400, f"request body: not valid UTF-8 (byte {e.start})") from None

    async def _json_body(self, request: web.Request, default: object) -> Any:
        text = await self._text(request)
        if not text.strip():
            return default
        try:
            return json.loads(text)
        except RecursionError:
            raise _Refused(400, "request body: invalid JSON: nested too deeply") from None
        except ValueError as e:
            raise _Refused(400, f"request body: invalid JSON: {_cut(str(e), 120)}") from None

    # -- profile ---------------------------------------------------------------

    # -- scopes ----------------------------------------------------------------

    def _target(self, request: web.Request, create: bool = False) -> ChaosProxy | Scope:
        """The unscoped proxy, or the scope ``{scope}`` in the route names (404 if none)."""
        name = _scope_name(request)
        if name is None:
            return self.proxy
        scope = self.proxy.scopes.get(name)
        if scope is None and create:
            try:
                scope = self.proxy.scopes.create(name)
            except ScopeError as e:
                raise _Refused(e.status, str(e)) from None
        if scope is None:
            raise _Refused(
                404,
                f"no scope {_cut(name)}: it has had no request yet, was deleted, or was "
                "forgotten under --max-scopes (PUT its profile to make it)",
            )
        return scope

    def _scope_json(self, scope: Scope) -> dict[str, Any]:
        return {
            "scope": scope.name,
            "profile": scope.profile.name,
            "seed": scope.seed,
            "exchanges": len(scope.recorder.exchanges),
            "open": len(scope.recorder.open),
            "faults_fired": len(scope.fault_log),
        }

    async def get_scopes(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/scopes``: every live scope, least recently used first."""
        scopes = self.proxy.scopes
        return _json(
            {
                "max_scopes": scopes.cap,
                "evicted": scopes.evicted,
                "scopes": [self._scope_json(s) for s in scopes.all()],
            }
        )

    async def get_scope(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/scopes/{id}``: one scope's profile name, seed and counts."""
        target = self._target(request)
        assert isinstance(target, Scope)
        return _json(self._scope_json(target))

    async def delete_scope(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /chaos/scopes/{id}``: forget a scope (a test that ended frees its room)."""
        target = self._target(request)
        assert isinstance(target, Scope)
        self.proxy.scopes.remove(target.name)
        return _json({"deleted": target.name})

    async def get_health(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/health``: 200 while the proxy serves (readiness and liveness probes)."""
        return _json({"status": "ok", "proxy": self.proxy.url, "scopes": len(self.proxy.scopes)})

    # -- profile ---------------------------------------------------------------

    def _profile_json(self, target: ChaosProxy | Scope) -> dict[str, Any]:
        profile = target.profile
        data = {"version": 1, **profile.model_dump(mode="json", exclude_unset=True)}
        return {"name": profile.name, "seed": target.seed, "profile": data}

    async def _profile_response(self, target: ChaosProxy | Scope) -> web.Response:
        # A profile near the body cap dumps to 1.4 MB of JSON in 0.25 s: not on the loop.
        text = await asyncio.to_thread(lambda: json.dumps(self._profile_json(target), indent=1))
        return web.Response(text=text + "\n", content_type="application/json")

    async def get_profile(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/profile``: the active profile and the seed in use."""
        return await self._profile_response(self._target(request))

    async def put_profile(self, request: web.Request) -> web.StreamResponse:
        """``PUT /chaos/profile[?seed=N]``: replace the profile (JSON, YAML or a built-in name)."""
        seed = _seed(request.query.get("seed"))
        scoped = "scope" in request.match_info
        if scoped:
            _scope_name(request)  # a bad name is refused before the body is read
        text = await self._text(request)
        try:
            # YAML parsing is pure Python: in a worker thread, streams keep flowing.
            profile = await asyncio.to_thread(parse_profile, text)
        except InputError as e:
            return _error(_cut_lines(str(e)), 400)
        if scoped:
            if profile.toxiproxy is not None:
                return _error(
                    "toxiproxy: a scope's profile cannot carry a toxiproxy: section (it would "
                    "change the Toxiproxy every scope shares); PUT it on /chaos/profile",
                    400,
                )
            target = self._target(request, create=True)
            target.set_profile(profile, seed)
            return await self._profile_response(target)
        section = self._own_section(profile.toxiproxy)
        if section is not profile.toxiproxy:
            profile = profile.model_copy(update={"toxiproxy": section})
        # Shielded: a client that hangs up must not stop a swap half-way.
        swap = asyncio.ensure_future(self._swap(profile, seed))
        swap.add_done_callback(_retrieve)
        await asyncio.shield(swap)
        return await self._profile_response(self.proxy)

    def _own_section(self, section: ToxiproxySection | None) -> ToxiproxySection | None:
        """The pushed section aimed at our Toxiproxy; 403 if it names another address."""
        if section is None:
            return None
        if "url" in section.model_fields_set and not same_address(section.url, self.toxiproxy_url):
            raise _Refused(
                403,
                f"toxiproxy.url: {_cut(section.url)} is not this proxy's Toxiproxy "
                f"({self.toxiproxy_url}); a pushed profile cannot choose the address "
                "(set it with chaosstream proxy --toxiproxy URL)",
            )
        return section.model_copy(update={"url": self.toxiproxy_url})

    async def _swap(self, profile: Profile, seed: int | None) -> None:
        """All or nothing: the new profile and its toxics, or the old ones back and a 502."""
        async with self._swap_lock:
            if self._closing:
                raise _Refused(503, "the proxy is shutting down")
            old = self.external
            try:
                if old is not None:
                    await remove_toxiproxy(old)
                new = None
                if profile.toxiproxy is not None:
                    new = await apply_toxiproxy(profile.toxiproxy, self.toxiproxy_timeout_s)
            except ToxiproxyError as e:
                restored = await self._restore(old)
                raise _Refused(502, f"{e}; {restored}") from None
            self.external = new
            self.proxy.set_profile(profile, seed)

    async def _restore(self, old: AppliedToxics | None) -> str:
        """Put the old profile's toxics back after a failed swap; says how that went."""
        if old is None:
            return "the previous profile stays active"
        try:
            self.external = await apply_toxiproxy(old.section, old.timeout_s)
        except ToxiproxyError as e:
            # Keep the record: what is still on the server is removed at exit.
            self.external = old
            return f"the previous profile stays active, but its toxics could not be restored: {e}"
        return "the previous profile and its toxics stay active"

    # -- faults ----------------------------------------------------------------

    def _fault_json(self, target: ChaosProxy | Scope, index: int) -> dict[str, Any]:
        fault = target.profile.faults[index]
        return {
            "index": index,
            "type": fault.type,
            "enabled": fault.enabled,
            "fault": fault.model_dump(mode="json", exclude_unset=True),
        }

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/faults``: the profile's faults with their index and state."""
        target = self._target(request)
        return _json([self._fault_json(target, i) for i in range(len(target.profile.faults))])

    async def patch_fault(self, request: web.Request) -> web.StreamResponse:
        """``PATCH /chaos/faults/{index}`` with ``{"enabled": false}``: switch one fault."""
        target = self._target(request)
        faults = target.profile.faults
        raw = request.match_info["index"]
        if not re.fullmatch(r"[0-9]{1,6}", raw) or int(raw) >= len(faults):
            return _error(
                f"no fault {_cut(raw)}: the profile has {len(faults)} (index from 0)", 404
            )
        body = await self._json_body(request, None)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("enabled"), bool)
            or len(body) != 1
        ):
            return _error('request body: expected {"enabled": true|false}', 400)
        # The injector reads ``enabled`` on every exchange, so this takes effect at once.
        faults[int(raw)].enabled = body["enabled"]
        return _json(self._fault_json(target, int(raw)))

    async def post_reset(self, request: web.Request) -> web.StreamResponse:
        """``POST /chaos/reset`` with optional ``{"seed": N, "exchanges": true}``."""
        target = self._target(request)
        body = await self._json_body(request, {})
        if not isinstance(body, dict) or set(body) - {"seed", "exchanges"}:
            return _error('request body: expected {"seed": N, "exchanges": true|false}', 400)
        seed = body.get("seed")
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or abs(seed) >= 2**64
        ):
            return _error("request body: seed: must be an integer below 2**64", 400)
        target.reset(seed)
        if body.get("exchanges") is True:
            target.recorder.clear()
        return _json({"seed": target.seed})

    # -- what happened ---------------------------------------------------------

    async def get_exchanges(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/exchanges[?limit=N]``: the most recent finished exchanges, oldest first."""
        target = self._target(request)
        limit = _whole(request.query.get("limit", "100"), "limit", 9)
        recent = list(target.recorder.exchanges)[-limit:] if limit else []
        return _json({"exchanges": [exchange_json(ex) for ex in recent]})

    async def get_fault_log(self, request: web.Request) -> web.StreamResponse:
        """``GET /chaos/fault-log``: every fault event since the last reset."""
        target = self._target(request)
        return _json({"faults": [f.as_dict() for f in target.fault_log]})

    async def post_verify(self, request: web.Request) -> web.StreamResponse:
        """``POST /chaos/verify`` (or a scope's) with expectations: verdicts over its exchanges.

        Body: ``{"expect": [...], "client": {"exit_code", "stdout", "stderr", "error"},
        "answer": "..."}``; only ``expect`` is required. The verifier of ``chaosstream run``
        judges the recorded exchanges and what the client reports it did.
        """
        target = self._target(request)
        body = await self._json_body(request, None)
        try:
            asked = VerifyRequest.model_validate(body)
        except ValidationError as e:
            return _error(_cut_lines(_validation_message(e)), 400)
        # An exchange whose last byte the client just read may still be closing.
        for _ in range(100):
            if not target.recorder.open:
                break
            await asyncio.sleep(0.01)
        result = await asyncio.to_thread(_verdicts, asked, list(target.recorder.exchanges), target)
        return _json(result)

    async def get_metrics(self, request: web.Request) -> web.StreamResponse:
        """``GET /metrics``: Prometheus text format, this proxy's registry only."""
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def _scope_name(request: web.Request) -> str | None:
    """The ``{scope}`` of the route, checked (400); None on an unscoped route."""
    name = request.match_info.get("scope")
    if name is None:
        return None
    try:
        return check_scope_name(name)
    except ScopeError as e:
        raise _Refused(400, str(e)) from None


def _expect_item(value: Any) -> Any:
    # As in scenario files: `"completes"` is short for `{"completes": {}}`; null options are none.
    if isinstance(value, str):
        return {value: {}}
    if isinstance(value, dict):
        return {k: ({} if v is None else v) for k, v in value.items()}
    return value


class ClientReport(BaseModel):
    """What the client under test did, as it tells the verifier."""

    model_config = ConfigDict(extra="forbid")

    exit_code: int | None = Field(0, description="Its exit code (None: killed at a timeout).")
    stdout: str = Field("", description="What it showed its user (the answer text, if any).")
    stderr: str = ""
    error: str | None = Field(None, description="The error it raised or showed, if any.")
    timed_out: bool = False
    duration_s: float = Field(0.0, ge=0)


class VerifyRequest(BaseModel):
    """The body of ``POST /chaos/verify``: expectations as in a scenario file."""

    model_config = ConfigDict(extra="forbid")

    expect: list[Annotated[Expect, BeforeValidator(_expect_item)]] = Field(min_length=1)
    client: ClientReport = Field(default_factory=lambda: ClientReport())
    answer: str | None = Field(
        None, description="The full answer; default: the whole answer upstream sent."
    )


def _validation_message(e: ValidationError) -> str:
    lines = []
    for err in e.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        lines.append(f"request body: {where}: {err['msg']}")
    return "\n".join(lines)


def _verdicts(
    asked: VerifyRequest, exchanges: list[Exchange], target: ChaosProxy | Scope
) -> dict[str, Any]:
    """The verdicts of ``chaosstream run`` for these exchanges (off the loop: it parses bodies)."""
    from chaosstream.clients.runner import expected_answer
    from chaosstream.verify.expectations import ClientRun, Evidence, evaluate

    c = asked.client
    stderr = c.stderr if c.error is None else f"{c.stderr}\n{c.error}".strip()
    client = ClientRun(
        command=["<http>"],
        exit_code=c.exit_code,
        timed_out=c.timed_out,
        stdout=c.stdout,
        stderr=stderr,
        duration_s=c.duration_s,
    )
    answer = asked.answer if asked.answer is not None else expected_answer(exchanges, None)
    observed, verdicts = evaluate(
        Evidence(client=client, exchanges=exchanges, answer=answer, profile=target.profile),
        list(asked.expect),
    )
    return {
        "scope": target.name if isinstance(target, Scope) else None,
        "passed": all(v.verdict == "pass" for v in verdicts),
        "observed": observed.as_dict(),
        "expectations": [v.as_dict() for v in verdicts],
    }


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark a shielded swap's outcome seen when its request was gone before it ended."""
    if not task.cancelled():
        task.exception()


def _cut_lines(message: str, lines: int = 20) -> str:
    """At most ``lines`` lines of a validation report (a huge profile can fail everywhere)."""
    parts = message.splitlines()
    if len(parts) <= lines:
        return message
    return "\n".join([*parts[:lines], f"... and {len(parts) - lines} more"])


def _seed(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,20}", raw):
        raise _Refused(400, f"seed: {_cut(raw)} is not an integer (at most 20 digits)")
    return int(raw)
