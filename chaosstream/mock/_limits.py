"""Caps and timeouts that keep the mock alive under hostile clients (issue 10)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from aiohttp import web

# A request head arrives in microseconds on loopback; even a 1 KiB head through a
# chaos profile's 8 kbit/s uplink takes about one second. nginx and Node.js allow 60 s.
HEAD_TIMEOUT_S = 30.0
# Longer than aiohttp's client pool keeps an idle connection (15 s), so a client
# never reuses a socket the mock is closing; nginx's keepalive_timeout is 75 s.
IDLE_TIMEOUT_S = 75.0
# A /ws prompt is text; 1 MiB is far above any real prompt and a quarter of
# aiohttp's 4 MiB default.
WS_MAX_MSG_BYTES = 1024 * 1024
# Prompts waiting on one /ws socket while an answer streams; then the mock stops reading.
WS_QUEUE = 8

# A day: a timeout is a bound, not a way to switch one off.
MAX_TIMEOUT_S = 86_400.0

_ENV_PREFIX = "CHAOSSTREAM_MOCK_"


@dataclass(frozen=True)
class MockLimits:
    """How long the mock waits for a client and how much one /ws socket may queue.

    ``head_timeout_s``: a connection must deliver a complete request head within this
    long of opening (or of its first byte after an answer), else it is closed.
    ``idle_timeout_s``: a kept-alive connection with no new request is closed after
    this long. Neither cuts an answer that is streaming. ``ws_max_msg_bytes``: a
    larger /ws message closes the socket with 1009. ``ws_queue``: prompts queued per
    /ws socket before the mock stops reading it (TCP pushes back on the client).
    """

    head_timeout_s: float = HEAD_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    ws_max_msg_bytes: int = WS_MAX_MSG_BYTES
    ws_queue: int = WS_QUEUE

    def __post_init__(self) -> None:
        for name in ("head_timeout_s", "idle_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= MAX_TIMEOUT_S):
                raise ValueError(f"{name} must be above 0 and at most {MAX_TIMEOUT_S:g} s")
        for name in ("ws_max_msg_bytes", "ws_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MockLimits:
        """Read ``CHAOSSTREAM_MOCK_HEAD_TIMEOUT_S`` and the like; unset ones keep defaults.

        A bad value raises ValueError naming the variable.
        """
        env = os.environ if environ is None else environ
        changes: dict[str, float | int] = {}
        for item in fields(cls):
            var = _ENV_PREFIX + item.name.upper()
            raw = env.get(var)
            if raw is None:
                continue
            try:
                changes[item.name] = float(raw) if item.name.endswith("_s") else int(raw)
                cls(**{item.name: changes[item.name]})  # type: ignore[arg-type]
            except ValueError as exc:
                raise ValueError(f"{var}={raw[:80]!r}: {exc}") from None
        return cls(**changes)  # type: ignore[arg-type]


LIMITS: web.AppKey[MockLimits] = web.AppKey("chaosstream_mock_limits", MockLimits)
