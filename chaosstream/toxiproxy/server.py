"""The proxy registry: named proxies, their listeners, toxics and live connections.

Mirrors Toxiproxy's ``ProxyCollection``/``Proxy``/``ToxicCollection``; every error
is an :class:`ApiError` carrying the status and text Toxiproxy would answer with.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from typing import Any

from chaosstream.toxiproxy.tcp import DIRECTIONS, Connection, split_host_port
from chaosstream.toxiproxy.toxics import (
    TOXIC_TYPES,
    ToxicAttributeError,
    ToxicEntry,
    build_toxic,
)

__all__ = ["ApiError", "Proxy", "ToxiproxyServer"]


class ApiError(Exception):
    """An API failure: Toxiproxy's ``{"error": message, "status": status}``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, object]:
        """The error body."""
        return {"error": self.message, "status": self.status}


def bad_body(detail: str) -> ApiError:
    """Toxiproxy's ``bad request body: <detail>`` (400)."""
    return ApiError(f"bad request body: {detail}", 400)


async def _resolve_listen(listen: str) -> tuple[str, int]:
    """(ip, port) for a listen address; ``localhost`` means 127.0.0.1."""
    try:
        host, port = split_host_port(listen)
    except ValueError as exc:
        raise ApiError(f"listen {listen}: {exc}", 400) from None
    if host in ("", "localhost"):
        return ("0.0.0.0" if host == "" else "127.0.0.1"), port
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ApiError(f"listen tcp {listen}: {exc}", 500) from None
    return str(infos[0][4][0]), port


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Proxy:
    """One named proxy: a TCP listener forwarding to ``upstream`` through its toxics."""

    def __init__(self, owner: ToxiproxyServer, name: str, listen: str, upstream: str) -> None:
        self._owner = owner
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.chains: dict[str, list[ToxicEntry]] = {d: [] for d in DIRECTIONS}
        self.connections: set[Connection] = set()
        self._listener: asyncio.base_events.Server | None = None

    def to_json(self) -> dict[str, object]:
        """Toxiproxy's proxy JSON, toxics included."""
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": self.toxics_json(),
        }

    def toxics_json(self) -> list[dict[str, object]]:
        """Upstream toxics first, then downstream, each in the order added."""
        return [e.to_json() for d in DIRECTIONS for e in self.chains[d]]

    async def start(self) -> None:
        """Listen (no-op when already enabled); the real port replaces a 0."""
        if self.enabled:
            return
        host, port = await _resolve_listen(self.listen)
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(self._accept, host, port, reuse_address=True)
        except OSError as exc:
            raise ApiError(f"listen tcp {self.listen}: {exc.strerror or exc}", 500) from None
        sockname = self._listener.sockets[0].getsockname()
        self.listen = _format(sockname[0], sockname[1])
        self.enabled = True

    def _accept(self) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        conn = Connection(
            loop,
            self.upstream,
            self._owner.connection_seed(),
            self.chains,
            self.connections.discard,
        )
        self.connections.add(conn)
        return conn.client

    async def stop(self) -> None:
        """Stop listening and drop every connection (no-op when disabled)."""
        self.enabled = False
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        conns = list(self.connections)
        for conn in conns:
            conn.close(abort=True)
        for conn in conns:
            await conn.wait_closed()
        if listener is not None:
            await listener.wait_closed()

    async def differs(self, listen: str, upstream: str) -> bool:
        """Toxiproxy's ``Differs``: another listen address or upstream."""
        host, port = await _resolve_listen(listen)
        return _format(host, port) != self.listen or upstream != self.upstream

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Apply new fields: a new address restarts the listener."""
        if await self.differs(listen, upstream):
            was_enabled = self.enabled
            await self.stop()
            self.listen, self.upstream = listen, upstream
            if was_enabled and enabled:
                await self.start()
        if enabled and not self.enabled:
            await self.start()
        elif not enabled and self.enabled:
            await self.stop()

    # -- toxics --
    def find_toxic(self, name: str) -> ToxicEntry:
        """The toxic called ``name``; 404 when there is none."""
        for chain in self.chains.values():
            for entry in chain:
                if entry.name == name:
                    return entry
        raise ApiError("toxic not found", 404)

    def add_toxic(self, body: Any) -> ToxicEntry:
        """Create a toxic from Toxiproxy's toxic JSON."""
        if not isinstance(body, dict):
            raise bad_body("expected a JSON object")
        stream = body.get("stream", "downstream")
        if not isinstance(stream, str) or stream.lower() not in DIRECTIONS:
            raise ApiError("stream was invalid, can be either upstream or downstream", 400)
        stream = stream.lower()
        type_name = body.get("type", "")
        name = body.get("name") or f"{type_name}_{stream}"
        if not isinstance(name, str):
            raise bad_body("name must be a string")
        if not isinstance(type_name, str) or type_name not in TOXIC_TYPES:
            raise ApiError("invalid toxic type", 400)
        try:
            self.find_toxic(name)
        except ApiError:
            pass
        else:
            raise ApiError("toxic already exists", 409)
        toxicity = _toxicity(body.get("toxicity", 1.0))
        try:
            toxic = build_toxic(type_name, body.get("attributes"))
        except ToxicAttributeError as exc:
            raise bad_body(str(exc)) from None
        entry = ToxicEntry(name, type_name, stream, toxicity, toxic)
        self.chains[stream].append(entry)
        self._push(entry, removed=False)
        return entry

    def update_toxic(self, name: str, body: Any) -> ToxicEntry:
        """Merge new attributes/toxicity into a toxic; live links restart it."""
        entry = self.find_toxic(name)
        if not isinstance(body, dict):
            raise bad_body("expected a JSON object")
        toxicity = _toxicity(body.get("toxicity", entry.toxicity))
        try:
            toxic = build_toxic(entry.type, body.get("attributes"), base=entry.toxic)
        except ToxicAttributeError as exc:
            raise bad_body(str(exc)) from None
        entry.toxic, entry.toxicity = toxic, toxicity
        entry.revision += 1
        self._push(entry, removed=False)
        return entry

    def remove_toxic(self, name: str) -> None:
        """Remove a toxic; data it held goes on at once."""
        entry = self.find_toxic(name)
        self.chains[entry.stream].remove(entry)
        self._push(entry, removed=True)

    def reset_toxics(self) -> None:
        """Remove every toxic."""
        for chain in self.chains.values():
            for entry in list(chain):
                self.remove_toxic(entry.name)

    def _push(self, entry: ToxicEntry, removed: bool) -> None:
        for conn in list(self.connections):
            conn.links[entry.stream].sync(self.chains[entry.stream], entry, removed)


def _toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise bad_body(f"toxicity must be a number from 0 to 1, got {value!r}")
    return float(value)


class ToxiproxyServer:
    """State behind the Toxiproxy API: named proxies and a seeded random source.

    ``seed`` fixes every toxicity draw (and jitter/slicer sizes): the same seed and
    the same order of connections replay the same decisions.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.proxies: dict[str, Proxy] = {}
        self._rng = random.Random(seed)
        self.lock = asyncio.Lock()

    def connection_seed(self) -> int:
        """A fresh seed for the next accepted connection, in accept order."""
        return self._rng.getrandbits(64)

    def get(self, name: str) -> Proxy:
        """The proxy called ``name``; 404 when there is none."""
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError("proxy not found", 404) from None

    async def create(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        """Add a proxy (409 when the name is taken) and start it if enabled."""
        if name in self.proxies:
            raise ApiError("proxy already exists", 409)
        proxy = Proxy(self, name, listen, upstream)
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    async def add_or_replace(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        """Populate's rule: keep an identical proxy, replace one that differs."""
        existing = self.proxies.get(name)
        if existing is not None:
            if not await existing.differs(listen, upstream):
                return existing
            await existing.stop()
            del self.proxies[name]
        return await self.create(name, listen, upstream, enabled)

    async def remove(self, name: str) -> None:
        """Stop and forget a proxy."""
        proxy = self.get(name)
        await proxy.stop()
        del self.proxies[name]

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        for proxy in list(self.proxies.values()):
            await proxy.start()
            proxy.reset_toxics()

    async def close(self) -> None:
        """Stop every listener and connection; the proxies stay registered, disabled."""
        for proxy in list(self.proxies.values()):
            await proxy.stop()
