"""Mock pacing settings and their per-request overrides."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

MAX_TOKENS = 100_000

HEADER_TOKENS = "x-chaosstream-mock-tokens"
HEADER_TTFT_MS = "x-chaosstream-mock-ttft-ms"
HEADER_TOKENS_PER_S = "x-chaosstream-mock-tokens-per-s"

_HEADERS = {
    "tokens": HEADER_TOKENS,
    "ttft_ms": HEADER_TTFT_MS,
    "tokens_per_s": HEADER_TOKENS_PER_S,
}


class BadOverride(ValueError):
    """A per-request override (header, query or message field) has a bad value."""


@dataclass(frozen=True)
class MockSettings:
    """How the mock model paces an answer.

    ``ttft_ms`` is the delay before the first token event, ``tokens_per_s`` the pace
    of the tokens after it (0 or ``inf``: as fast as possible), ``tokens`` the
    length of every answer.
    """

    ttft_ms: float = 50.0
    tokens_per_s: float = 200.0
    tokens: int = 40

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ttft_ms) and self.ttft_ms >= 0):
            raise ValueError(f"ttft_ms must be a finite number >= 0, got {self.ttft_ms}")
        if math.isnan(self.tokens_per_s) or self.tokens_per_s < 0:
            raise ValueError(f"tokens_per_s must be >= 0, got {self.tokens_per_s}")
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int):
            raise ValueError(f"tokens must be an integer, got {self.tokens!r}")
        if not 0 <= self.tokens <= MAX_TOKENS:
            raise ValueError(f"tokens must be between 0 and {MAX_TOKENS}, got {self.tokens}")

    @property
    def interval_s(self) -> float:
        """Seconds between two token events after the first (0 when unpaced)."""
        if self.tokens_per_s == 0 or math.isinf(self.tokens_per_s):
            return 0.0
        return 1.0 / self.tokens_per_s

    def token_offset_s(self, index: int) -> float:
        """Seconds from the request's start until token ``index`` (0-based) is due."""
        return self.ttft_ms / 1000.0 + index * self.interval_s


DEFAULT_SETTINGS = MockSettings()


def with_overrides(
    settings: MockSettings,
    headers: Mapping[str, str],
    fields: Mapping[str, Any] | None = None,
) -> MockSettings:
    """Apply ``x-chaosstream-mock-*`` headers, then ``fields`` (query or message) on top.

    Raises :class:`BadOverride` naming the header or field when a value is invalid.
    """
    changes: dict[str, Any] = {}
    for name, header in _HEADERS.items():
        if header in headers:
            changes[name] = _parse(name, headers[header], header)
    for name in _HEADERS:
        if fields is not None and name in fields and fields[name] is not None:
            changes[name] = _parse(name, fields[name], name)
    if not changes:
        return settings
    try:
        return dataclasses.replace(settings, **changes)
    except ValueError as exc:
        raise BadOverride(str(exc)) from exc


def _parse(name: str, raw: Any, source: str) -> float | int:
    try:
        if name == "tokens":
            if isinstance(raw, (bool, float)):
                raise ValueError
            return int(raw)
        if isinstance(raw, bool):
            raise ValueError
        return float(raw)
    except (TypeError, ValueError):
        kind = "an integer" if name == "tokens" else "a number"
        raise BadOverride(f"{source} must be {kind}, got {raw!r}") from None


SETTINGS: web.AppKey[MockSettings] = web.AppKey("chaosstream_mock_settings", MockSettings)
