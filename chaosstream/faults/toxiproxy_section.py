"""A profile's ``toxiproxy:`` section: toxics applied to an external Toxiproxy server.

Teams whose stack already runs Toxiproxy (a docker-compose file, a CI service)
keep it: chaosstream adds the section's toxics over Toxiproxy's HTTP API when it
starts and removes them when it exits, so TCP-level chaos below the proxy and
SSE-level chaos in it come from one profile.

The calls go through aiohttp, not ``toxiproxy-python``: that client blocks
(``requests`` without a timeout) in a thread nothing can cancel, so a Toxiproxy
that never answers held a profile swap, and the interpreter's exit, forever.
Here every call has a timeout, names are escaped into the URL, redirects are not
followed, and an answer is read up to a cap and never echoed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from typing import Literal
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator
from yarl import URL

__all__ = [
    "DEFAULT_URL",
    "TIMEOUT_ENV",
    "AppliedToxics",
    "ToxicSpec",
    "ToxiproxyError",
    "ToxiproxySection",
    "apply_toxiproxy",
    "check_url",
    "remove_toxiproxy",
    "same_address",
    "timeout_from_env",
]

ToxicType = Literal[
    "latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data"
]

DEFAULT_URL = "http://127.0.0.1:8474"
"""Toxiproxy's own default API address (``toxiproxy-server -port 8474``)."""

TIMEOUT_ENV = "CHAOSSTREAM_TOXIPROXY_TIMEOUT_S"
"""Seconds each call to Toxiproxy may take (connect, answer and body)."""

DEFAULT_TIMEOUT_S = 5.0
"""A local Toxiproxy answers in milliseconds; 5 s covers a loaded CI host."""

_MAX_ANSWER_BYTES = 1024 * 1024
"""Longest answer read from Toxiproxy; its proxy objects are a few hundred bytes."""

_MAX_NAME = 200


class ToxiproxyError(Exception):
    """The external Toxiproxy server refused, did not answer, or answered oddly."""


def _cut(text: str, limit: int = 80) -> str:
    """``text`` quoted, at most ``limit`` characters of it (error messages never echo whole)."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def _name(value: str | None) -> str | None:
    # Toxiproxy accepts any name; ours go into a URL path, escaped, so only what
    # would still be ambiguous there is refused ("." and ".." are path steps).
    if value is None:
        return None
    if not 1 <= len(value) <= _MAX_NAME or value in (".", "..") or not value.isprintable():
        raise ValueError(f"must be 1-{_MAX_NAME} printable characters, not '.' or '..'")
    return value


class ToxicSpec(BaseModel):
    """One Toxiproxy toxic, in Toxiproxy's own terms (attribute names as its docs)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: ToxicType = Field(description="Toxiproxy toxic type.")
    name: str | None = Field(
        None, description="Toxic name; default ``chaosstream_<type>_<stream>``."
    )
    stream: Literal["upstream", "downstream"] = Field(
        "downstream", description="Direction: downstream = server -> client."
    )
    toxicity: float = Field(
        1.0, ge=0, le=1, description="Share of connections the toxic applies to."
    )
    attributes: dict[str, int] = Field(
        default_factory=dict,
        description="The toxic's attributes, e.g. ``{latency: 300, jitter: 40}``.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        return _name(value)

    @property
    def toxic_name(self) -> str:
        """The name the toxic gets on the server."""
        return self.name or f"chaosstream_{self.type}_{self.stream}"


class ToxiproxySection(BaseModel):
    """Toxics to apply to a proxy on an external Toxiproxy server while chaosstream runs."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str = Field(
        DEFAULT_URL,
        description="Toxiproxy API address (http://HOST:PORT). `chaosstream proxy "
        "--toxiproxy URL` overrides it; a profile pushed over the control API may not "
        "name another address.",
    )
    proxy: str = Field(description="Name of the Toxiproxy proxy that gets the toxics.")
    upstream: str | None = Field(
        None,
        description="HOST:PORT the proxy forwards to. When given and the proxy does not "
        "exist, chaosstream creates it (and deletes it at exit).",
    )
    listen: str = Field(
        "127.0.0.1:0", description="Listen address for a proxy chaosstream creates."
    )
    toxics: list[ToxicSpec] = Field(default_factory=list, description="Toxics to add.")

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str) -> str:
        return _name(value) or value

    @field_validator("url")
    @classmethod
    def _http_host_port(cls, value: str) -> str:
        return check_url(value)


def check_url(value: str) -> str:
    """``value`` if it is ``http://HOST[:PORT]``, else :class:`ValueError` naming the form."""
    try:
        url = URL(value)
        ok = url.scheme == "http" and bool(url.host) and url.path in ("", "/") and not url.query
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{_cut(value)} must be http://HOST:PORT (Toxiproxy speaks plain HTTP)")
    return value


def same_address(a: str, b: str) -> bool:
    """Whether two ``http://HOST:PORT`` URLs name the same API (case, slash, default port)."""
    ua, ub = URL(a), URL(b)
    return (ua.host or "").lower() == (ub.host or "").lower() and ua.port == ub.port


def timeout_from_env() -> float:
    """Seconds per Toxiproxy call from ``CHAOSSTREAM_TOXIPROXY_TIMEOUT_S`` (default 5)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 600:
        raise ValueError(f"{TIMEOUT_ENV}={_cut(raw)}: expected seconds, more than 0 up to 600")
    return value


class _Api:
    """Toxiproxy's HTTP API at one address: each call bounded by ``timeout_s``."""

    def __init__(self, base: str, timeout_s: float) -> None:
        self.base = base.rstrip("/")
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> _Api:
        # trust_env off: an HTTP_PROXY variable must not route these calls elsewhere.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s), trust_env=False
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def call(
        self, method: str, parts: tuple[str, ...], action: str, body: object = None
    ) -> tuple[int, bytes]:
        """(status, answer) of one call; names in ``parts`` are escaped whole (``/`` too)."""
        assert self._session is not None
        path = "".join("/" + quote(part, safe="") for part in parts)
        url = URL(self.base + path, encoded=True)
        try:
            async with self._session.request(method, url, json=body, allow_redirects=False) as resp:
                return resp.status, await _read_capped(resp)
        except asyncio.TimeoutError:
            raise ToxiproxyError(
                f"toxiproxy at {self.base} did not answer within {self.timeout_s:g} s "
                f"to {action} (set {TIMEOUT_ENV} for more)"
            ) from None
        except aiohttp.ClientError as e:
            raise ToxiproxyError(
                f"cannot reach toxiproxy at {self.base} to {action}: {_cut(str(e), 160)}"
            ) from None

    def refused(self, action: str, status: int, answer: bytes) -> ToxiproxyError:
        """A refusal naming Toxiproxy's own ``error`` text (cut), never the raw answer."""
        detail = ""
        with contextlib.suppress(ValueError, RecursionError):
            data = json.loads(answer)
            if isinstance(data, dict) and isinstance(data.get("error"), str):
                detail = f": {_cut(data['error'], 160)}"
        return ToxiproxyError(
            f"toxiproxy at {self.base} refused to {action} (HTTP {status}){detail}"
        )

    def odd(self, action: str, status: int, answer: bytes) -> ToxiproxyError:
        """An answer that is not Toxiproxy's: say so, with its size, not its bytes."""
        return ToxiproxyError(
            f"toxiproxy at {self.base} gave an unexpected answer to {action} "
            f"(HTTP {status}, {len(answer)} bytes): is it Toxiproxy's API?"
        )

    async def toxic_names(self, proxy: str) -> list[str] | None:
        """Names of the proxy's toxics, or None when there is no such proxy."""
        action = f"read proxy {_cut(proxy)}"
        status, answer = await self.call("GET", ("proxies", proxy), action)
        if status == 404:
            return None
        if status != 200:
            raise self.failed(action, status, answer)
        try:
            data = json.loads(answer)
            toxics = data["toxics"] if isinstance(data, dict) else None
            names = [t["name"] for t in toxics] if isinstance(toxics, list) else None
        except (ValueError, RecursionError, KeyError, TypeError):
            names = None
        if names is None or not all(isinstance(n, str) for n in names):
            raise self.odd(action, status, answer)
        return names

    async def expect(
        self, method: str, parts: tuple[str, ...], action: str, body: object = None
    ) -> None:
        """One call that must answer 2xx (404 counts as done for DELETE)."""
        status, answer = await self.call(method, parts, action, body)
        if 200 <= status < 300 or (method == "DELETE" and status == 404):
            return
        raise self.failed(action, status, answer)

    def failed(self, action: str, status: int, answer: bytes) -> ToxiproxyError:
        """A refusal for the codes Toxiproxy answers with, an odd answer for any other."""
        if status in (400, 404, 409, 500):
            return self.refused(action, status, answer)
        return self.odd(action, status, answer)


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """The answer's body, at most ``_MAX_ANSWER_BYTES`` of it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > _MAX_ANSWER_BYTES:
            break
    return b"".join(chunks)[:_MAX_ANSWER_BYTES]


class AppliedToxics:
    """Toxics this process added to an external Toxiproxy; :meth:`remove` takes them off."""

    def __init__(self, section: ToxiproxySection, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.section = section
        self.timeout_s = timeout_s
        self.added: list[str] = []
        self.created_proxy = False

    async def apply(self) -> AppliedToxics:
        """Add every toxic of the section (creating the proxy when asked)."""
        section = self.section
        async with _Api(section.url, self.timeout_s) as api:
            present = await api.toxic_names(section.proxy)
            if present is None:
                present = await self._create(api)
            for spec in section.toxics:
                name = spec.toxic_name
                where = ("proxies", section.proxy, "toxics")
                if name in present:
                    # Left over from a run that did not exit cleanly: ours to replace.
                    await api.expect("DELETE", (*where, name), f"replace toxic {_cut(name)}")
                body = {
                    "type": spec.type,
                    "name": name,
                    "stream": spec.stream,
                    "toxicity": spec.toxicity,
                    "attributes": spec.attributes,
                }
                await api.expect("POST", where, f"add toxic {_cut(name)}", body)
                self.added.append(name)
        return self

    async def _create(self, api: _Api) -> list[str]:
        section = self.section
        if section.upstream is None:
            raise ToxiproxyError(
                f"toxiproxy at {section.url} has no proxy {section.proxy!r}; "
                "create it there or give toxiproxy.upstream so chaosstream creates it"
            )
        body = {
            "name": section.proxy,
            "upstream": section.upstream,
            "listen": section.listen,
            "enabled": True,
        }
        await api.expect("POST", ("proxies",), f"create proxy {_cut(section.proxy)}", body)
        self.created_proxy = True
        return []

    async def remove(self) -> None:
        """Remove what :meth:`apply` added; a proxy it created is deleted."""
        proxy = self.section.proxy
        async with _Api(self.section.url, self.timeout_s) as api:
            if self.created_proxy:
                await api.expect("DELETE", ("proxies", proxy), f"delete proxy {_cut(proxy)}")
                self.created_proxy = False
                self.added.clear()
                return
            # One at a time, forgetting each once gone: a failure halfway leaves
            # ``added`` naming exactly what is still on the server.
            for name in list(self.added):
                where = ("proxies", proxy, "toxics", name)
                await api.expect("DELETE", where, f"remove toxic {_cut(name)}")
                self.added.remove(name)


async def apply_toxiproxy(
    section: ToxiproxySection, timeout_s: float = DEFAULT_TIMEOUT_S
) -> AppliedToxics:
    """Add the section's toxics; on any failure, take off what did land, then raise."""
    applied = AppliedToxics(section, timeout_s)
    try:
        await applied.apply()
    except BaseException:
        # Half-applied is worse than none.
        with contextlib.suppress(ToxiproxyError):
            await applied.remove()
        raise
    return applied


async def remove_toxiproxy(applied: AppliedToxics) -> None:
    """Remove the toxics :func:`apply_toxiproxy` added."""
    await applied.remove()
