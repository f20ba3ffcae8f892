"""Scopes: many tests share one proxy, each with its own profile, seed, counters and records.

A request names its scope by a base-URL prefix, ``/~/<scope>/...`` (stripped
before upstream, so any SDK works through its base-URL variable), optionally
followed by a built-in profile name, ``/~/<scope>/<profile>/...``; or by the
``X-Chaosstream-Scope`` header (never forwarded). Each scope holds what the
unscoped proxy holds once: a :class:`ProxyState` (profile, seed, injector with
its request counters and window clock), a fault log and a recorder. So the
faults a scope sees depend only on its profile, its seed and its own request
sequence, never on other scopes' traffic.

The number of scopes is bounded (:data:`MAX_SCOPES`): past it the least
recently used scope with no open exchange is forgotten; when every scope has
an exchange open, a new scope is refused (503). Scope names are short and
URL-safe (:data:`SCOPE_NAME`), so they pass through paths and headers unescaped.
"""

from __future__ import annotations

import random
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import structlog

from chaosstream.faults import Clock, FaultEvent
from chaosstream.faults.profile import Profile, builtin_names, load_profile
from chaosstream.faults.trigger import Injector
from chaosstream.proxy.record import Exchange, Recorder

__all__ = [
    "MAX_SCOPES",
    "SCOPE_HEADER",
    "SCOPE_KEEP",
    "SCOPE_NAME",
    "SCOPE_PREFIX",
    "SCOPE_RECORD_BUDGET",
    "ProxyState",
    "Scope",
    "ScopeError",
    "Scopes",
    "builtin_profile",
    "check_scope_name",
    "name_seed",
    "split_scope",
]

log = structlog.get_logger("chaosstream.proxy.scopes")

SCOPE_HEADER = "X-Chaosstream-Scope"
"""The request header naming a scope (removed before the request goes upstream)."""
SCOPE_PREFIX = "/~/"
"""The path prefix naming a scope: ``/~/<scope>/[<built-in profile>/]<upstream path>``."""
SCOPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""1 to 64 characters: letters, digits, ``.``, ``_``, ``-``; not starting with a symbol."""
MAX_SCOPES = 1024
"""Scopes held at once (``--max-scopes``); past it the least recently used idle one goes."""
SCOPE_KEEP = 200
"""Finished exchanges a scope's recorder keeps."""
SCOPE_RECORD_BUDGET = 1024 * 1024
"""Bytes of recorded bodies a scope keeps (the newest exchange always whole), so 1,024
scopes hold about 1 GiB at most, not 1,024 times the proxy's own 64 MiB budget."""


class ScopeError(ValueError):
    """A request or control call names a scope badly, or no scope can be made (``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ProxyState:
    """The swappable part of a running proxy: profile, seed and injector."""

    def __init__(self, profile: Profile, seed: int | None, clock: Clock, log_fault: Any) -> None:
        self.profile = profile
        self.seed = (
            seed
            if seed is not None
            else (
                profile.seed if profile.seed is not None else random.SystemRandom().randrange(2**31)
            )
        )
        self.injector = Injector(profile.all_faults(), self.seed, clock, log_fault)


def _cut(text: str, limit: int = 80) -> str:
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def check_scope_name(name: str, field: str = "scope") -> str:
    """``name`` when it is a valid scope name, else :class:`ScopeError` saying why."""
    if not SCOPE_NAME.fullmatch(name):
        raise ScopeError(
            f"{field}: {_cut(name)} is not a scope name (1 to 64 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit)"
        )
    return name


def name_seed(name: str) -> int:
    """The seed of a scope given none: stable across runs and processes (CRC-32 of the name)."""
    # Not hash(): Python salts str hashes per process (PYTHONHASHSEED).
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@lru_cache(maxsize=64)
def _builtin(name: str) -> Profile:
    return load_profile(name)


def builtin_profile(name: str) -> Profile:
    """A private copy of a built-in profile (parsed once): a PATCH on one scope's faults
    must not switch another's."""
    return _builtin(name).model_copy(deep=True)


@lru_cache(maxsize=1)
def _builtin_set() -> frozenset[str]:
    return frozenset(builtin_names())


def split_scope(raw_path: str, header: str | None) -> tuple[str | None, str | None, str]:
    """``(scope, profile, upstream raw path)`` of a request; ``scope`` None when unscoped.

    The segment after the scope is a profile only when it is a built-in profile's
    name (none of them is the first segment of a provider's API path).
    """
    scope: str | None = None
    profile: str | None = None
    path = raw_path
    if raw_path.startswith(SCOPE_PREFIX):
        target, qmark, query = raw_path.partition("?")
        name, _, rest = target[len(SCOPE_PREFIX) :].partition("/")
        scope = check_scope_name(name, "path /~/<scope>/")
        first, _, after = rest.partition("/")
        if first in _builtin_set():
            profile, rest = first, after
        path = "/" + rest + qmark + query
    if header is not None:
        named = check_scope_name(header.strip(), SCOPE_HEADER)
        if scope is not None and named != scope:
            raise ScopeError(
                f"{SCOPE_HEADER}: {_cut(named)} differs from the path's scope {_cut(scope)}"
            )
        scope = named
    return scope, profile, path


class Scope:
    """One scope: what an unscoped proxy holds once, kept per scope name.

    It answers to the names the control API and the plugin use on
    :class:`~chaosstream.proxy.server.ChaosProxy` (``profile``, ``seed``,
    ``set_profile``, ``reset``, ``recorder``, ``fault_log``), so the same code
    serves both.
    """

    def __init__(
        self,
        name: str,
        profile: Profile,
        clock: Clock,
        *,
        seed: int | None = None,
        base_seed: int | None = None,
        recorder: Recorder | None = None,
        profile_from_path: str | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.base_seed = base_seed
        self.recorder = recorder or Recorder(
            keep=SCOPE_KEEP, budget_bytes=SCOPE_RECORD_BUDGET, scope=name
        )
        self.fault_log: list[FaultEvent] = []
        #: The built-in profile the path last named (None when set otherwise).
        self.profile_from_path = profile_from_path
        self.state = ProxyState(profile, self._seed(profile, seed), clock, self._log_fault)

    def _seed(self, profile: Profile, seed: int | None) -> int:
        # Given > the proxy's --seed > the profile's > one from the name: never random,
        # so a scope replays the same way in every run and on every worker.
        for candidate in (seed, self.base_seed, profile.seed):
            if candidate is not None:
                return candidate
        return name_seed(self.name)

    @property
    def seed(self) -> int:
        return self.state.seed

    @property
    def profile(self) -> Profile:
        return self.state.profile

    @property
    def idle(self) -> bool:
        """No exchange of this scope is open (it may be forgotten)."""
        return not self.recorder.open

    def set_profile(self, profile: Profile, seed: int | None = None) -> None:
        """Switch profile; request counters and the window clock start over."""
        self.profile_from_path = None
        self.state = ProxyState(profile, self._seed(profile, seed), self.clock, self._log_fault)

    def reset(self, seed: int | None = None) -> None:
        """Start request counters, windows and (optionally) the seed over."""
        self.state.injector.reset(seed)
        if seed is not None:
            self.state.seed = seed
        self.fault_log.clear()

    def _log_fault(self, event: FaultEvent) -> None:
        # The exchange's record got it already (Injector.arm's record list).
        self.fault_log.append(event)
        log.info("fault", scope=self.name, seed=self.state.seed, **event.as_dict())


ScopeListener = Callable[[Scope, Exchange], None]


class Scopes:
    """The live scopes of one proxy, least recently used first, at most ``cap`` of them.

    ``default_profile`` gives a new scope its profile (a private copy);
    ``listeners`` hear of every finished scoped exchange with its scope.
    """

    def __init__(
        self,
        default_profile: Callable[[], Profile],
        clock: Clock,
        *,
        cap: int = MAX_SCOPES,
        base_seed: int | None = None,
        body_limit: int | None = None,
    ) -> None:
        if cap < 1:
            raise ValueError(f"max scopes must be at least 1, got {cap}")
        self.default_profile = default_profile
        self.clock = clock
        self.cap = cap
        self.base_seed = base_seed
        self.body_limit = body_limit
        self.listeners: list[ScopeListener] = []
        #: Scopes forgotten to make room since start.
        self.evicted = 0
        self._scopes: OrderedDict[str, Scope] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scopes)

    def __contains__(self, name: object) -> bool:
        return name in self._scopes

    def names(self) -> list[str]:
        """Scope names, least recently used first."""
        return list(self._scopes)

    def all(self) -> list[Scope]:
        """Every live scope, least recently used first."""
        return list(self._scopes.values())

    def get(self, name: str) -> Scope | None:
        """The scope called ``name``, if it lives (does not count as a use)."""
        return self._scopes.get(name)

    def remove(self, name: str) -> bool:
        """Forget a scope; False when there was none."""
        return self._scopes.pop(name, None) is not None

    def clear(self) -> None:
        """Forget every scope."""
        self._scopes.clear()

    def use(self, name: str, profile_name: str | None = None) -> Scope:
        """The scope for a request: made on first use, marked most recently used.

        ``profile_name`` (a built-in, named in the path) switches the scope to it
        unless the path already named that profile for this scope.
        """
        scope = self._scopes.get(name)
        if scope is None:
            scope = self.create(name, builtin_profile(profile_name) if profile_name else None)
            scope.profile_from_path = profile_name
        else:
            self._scopes.move_to_end(name)
            if profile_name is not None and scope.profile_from_path != profile_name:
                scope.set_profile(builtin_profile(profile_name))
                scope.profile_from_path = profile_name
        return scope

    def create(self, name: str, profile: Profile | None = None, seed: int | None = None) -> Scope:
        """A fresh scope called ``name`` (replacing one of that name), room made if needed."""
        check_scope_name(name)
        self._scopes.pop(name, None)
        if len(self._scopes) >= self.cap:
            self._evict()
        if profile is None:
            profile = self.default_profile().model_copy(deep=True)
        recorder = Recorder(keep=SCOPE_KEEP, budget_bytes=SCOPE_RECORD_BUDGET, scope=name)
        if self.body_limit is not None:
            recorder.body_limit = self.body_limit
        scope = Scope(
            name, profile, self.clock, seed=seed, base_seed=self.base_seed, recorder=recorder
        )
        recorder.listeners.append(lambda ex: self._finished(scope, ex))
        self._scopes[name] = scope
        return scope

    def _evict(self) -> None:
        for old_name, old in self._scopes.items():
            if old.idle:
                del self._scopes[old_name]
                self.evicted += 1
                log.info("scope_evicted", scope=old_name, scopes=len(self._scopes))
                return
        raise ScopeError(
            f"all {self.cap} scopes have exchanges open: no room for another "
            "(raise --max-scopes, or DELETE /chaos/scopes/{id} when a test ends)",
            503,
        )

    def _finished(self, scope: Scope, exchange: Exchange) -> None:
        for listener in self.listeners:
            listener(scope, exchange)
