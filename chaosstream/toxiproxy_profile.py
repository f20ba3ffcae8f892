"""A profile's ``toxiproxy:`` section: toxics applied to an external Toxiproxy server.

Teams whose stack already runs Toxiproxy (a docker-compose file, a CI service)
keep it: chaosstream adds the section's toxics through ``toxiproxy-python`` when
it starts and removes them when it exits, so TCP-level chaos below the proxy and
SSE-level chaos in it come from one profile.

``toxiproxy-python`` is synchronous (``requests``) and keeps the server address
in class attributes, so every call here runs in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from yarl import URL

ToxicType = Literal[
    "latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data"
]

# toxiproxy-python points all its calls at one class-level host:port.
_CLIENT_LOCK = threading.Lock()


class ToxiproxyError(Exception):
    """The external Toxiproxy server refused or could not be reached."""


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

    @property
    def toxic_name(self) -> str:
        """The name the toxic gets on the server."""
        return self.name or f"chaosstream_{self.type}_{self.stream}"


class ToxiproxySection(BaseModel):
    """Toxics to apply to a proxy on an external Toxiproxy server while chaosstream runs."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str = Field(
        "http://127.0.0.1:8474", description="Toxiproxy API address (http://HOST:PORT)."
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

    @field_validator("url")
    @classmethod
    def _http_host_port(cls, value: str) -> str:
        url = URL(value)
        if url.scheme != "http" or not url.host or url.path not in ("", "/"):
            raise ValueError("must be http://HOST:PORT (toxiproxy-python speaks plain HTTP)")
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        """Host and port of the API, as toxiproxy-python wants them."""
        url = URL(self.url)
        assert url.host is not None
        return url.host, url.port or 8474


class AppliedToxics:
    """Toxics this process added to an external Toxiproxy; :meth:`remove` takes them off."""

    def __init__(self, section: ToxiproxySection) -> None:
        self.section = section
        self.added: list[str] = []
        self.created_proxy = False

    def apply(self) -> AppliedToxics:
        """Add every toxic of the section (blocking: call it from a worker thread)."""
        with _CLIENT_LOCK:
            proxy = self._proxy()
            for spec in self.section.toxics:
                name = spec.toxic_name
                if proxy.get_toxic(name) is not None:
                    # Left over from a run that did not exit cleanly: ours to replace.
                    proxy.destroy_toxic(name)
                proxy.add_toxic(
                    type=spec.type,
                    name=name,
                    stream=spec.stream,
                    toxicity=spec.toxicity,
                    attributes=spec.attributes,
                )
                self.added.append(name)
        return self

    def remove(self) -> None:
        """Remove what :meth:`apply` added (blocking); a proxy it created is deleted."""
        with _CLIENT_LOCK:
            client = self._client()
            proxy = client.get_proxy(self.section.proxy)
            if proxy is None:
                return
            if self.created_proxy:
                proxy.destroy()
            else:
                for name in self.added:
                    proxy.destroy_toxic(name)
            self.added.clear()

    def _client(self) -> Any:
        import toxiproxy

        client = toxiproxy.Toxiproxy()
        client.update_api_consumer(*self.section.host_port)
        return client

    def _proxy(self) -> Any:
        section = self.section
        client = self._client()
        proxy = client.get_proxy(section.proxy)
        if proxy is None:
            if section.upstream is None:
                raise ToxiproxyError(
                    f"toxiproxy at {section.url} has no proxy {section.proxy!r}; "
                    "create it there or give toxiproxy.upstream so chaosstream creates it"
                )
            proxy = client.create(
                upstream=section.upstream, name=section.proxy, listen=section.listen
            )
            self.created_proxy = True
        return proxy


def _call(section: ToxiproxySection, action: str, fn: Any) -> Any:
    """Run a blocking toxiproxy-python call, turning its errors into :class:`ToxiproxyError`."""
    import requests
    from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

    try:
        return fn()
    except requests.RequestException as e:
        raise ToxiproxyError(f"cannot reach toxiproxy at {section.url} to {action}: {e}") from None
    except (InvalidToxic, NotFound, ProxyExists) as e:
        detail = e.args[0] if e.args else e
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace").strip()
        raise ToxiproxyError(f"toxiproxy at {section.url} refused to {action}: {detail}") from None


async def apply_toxiproxy(section: ToxiproxySection) -> AppliedToxics:
    """Add the section's toxics from a worker thread (never block the event loop)."""
    applied = AppliedToxics(section)
    try:
        await asyncio.to_thread(_call, section, "add toxics", applied.apply)
    except BaseException:
        # Half-applied is worse than none: take off what did land.
        await asyncio.to_thread(_quiet_remove, applied)
        raise
    return applied


async def remove_toxiproxy(applied: AppliedToxics) -> None:
    """Remove the toxics :func:`apply_toxiproxy` added, from a worker thread."""
    await asyncio.to_thread(_call, applied.section, "remove toxics", applied.remove)


def _quiet_remove(applied: AppliedToxics) -> None:
    with contextlib.suppress(ToxiproxyError):
        _call(applied.section, "remove toxics", applied.remove)
