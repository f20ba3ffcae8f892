"""Mock pacing settings and their per-request overrides."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

MAX_TOKENS = 100_000
# Ten minutes: longer than any client timeout worth testing; a silent upstream
# beyond that is the proxy's ``disconnect`` fault with ``mode: stall``.
MAX_TTFT_MS = 600_000.0
# One token per 100 s at the slowest. Slower values (down to 1e-320) overflow
# 1 / tokens_per_s to inf, and 0 * inf is a NaN deadline that breaks asyncio's
# timer heap for every stream on the loop (issue 10, item 14).
MIN_TOKENS_PER_S = 0.01
# Past a million per second the gap is under the loop clock's resolution: use 0.
MAX_TOKENS_PER_S = 1_000_000.0
# Error messages quote a bad value cut to this many characters.
_QUOTE_CHARS = 80

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


def _check_ttft_ms(value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value <= MAX_TTFT_MS):
        raise ValueError(f"ttft_ms must be from 0 to {MAX_TTFT_MS:g}, got {_quote(value)}")


def _check_tokens_per_s(value: float) -> None:
    if isinstance(value, (int, float)) and (
        value == 0 or value == math.inf or MIN_TOKENS_PER_S <= value <= MAX_TOKENS_PER_S
    ):
        return
    raise ValueError(
        f"tokens_per_s must be 0 or inf (unpaced) or from {MIN_TOKENS_PER_S:g}"
        f" to {MAX_TOKENS_PER_S:g}, got {_quote(value)}"
    )


def _quote(value: Any) -> str:
    """``repr(value)`` cut short: a 5,000-digit header is not echoed whole."""
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "..."


@dataclass(frozen=True)
class MockSettings:
    """How the mock model paces an answer.

    ``ttft_ms`` is the delay before the first token event (0 to 600,000),
    ``tokens_per_s`` the pace of the tokens after it (0.01 to 1,000,000; 0 or
    ``inf``: as fast as possible), ``tokens`` the length of every answer (0 to
    100,000). A value out of range raises ValueError naming the field.
    """

    ttft_ms: float = 50.0
    tokens_per_s: float = 200.0
    tokens: int = 40

    def __post_init__(self) -> None:
        _check_ttft_ms(self.ttft_ms)
        _check_tokens_per_s(self.tokens_per_s)
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int):
            raise ValueError(f"tokens must be an integer, got {_quote(self.tokens)}")
        if not 0 <= self.tokens <= MAX_TOKENS:
            raise ValueError(f"tokens must be from 0 to {MAX_TOKENS}, got {_quote(self.tokens)}")

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
        raise BadOverride(f"{source} must be {kind}, got {_quote(raw)}") from None


SETTINGS: web.AppKey[MockSettings] = web.AppKey("chaosstream_mock_settings", MockSettings)
