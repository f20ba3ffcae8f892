"""``match.headers`` regexes on RE2, a linear-time engine.

Python's ``re`` backtracks: ``(a+)+$`` against 29 a's and a ``!`` took 27 s,
on the event loop, so one request froze every stream. We chose ``google-re2``
over the ``regex`` module's ``timeout=``: RE2 runs in time linear in the
input for every pattern, so no request can cost more than another, and
whether a fault fires never depends on how busy the CPU is (a timeout would
make "same seed, same requests, same faults" false under load). The price is
RE2's syntax: Python's without backreferences and lookaround; such a pattern
is refused when the profile loads, with its file and line.
"""

from __future__ import annotations

import functools
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

MAX_HEADER_VALUE_CHARS = 8192
"""A header value is matched on its first 8,192 characters only (aiohttp's own
default limit on a header line is 8,190 bytes), so a match costs at most that."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refused pattern to stderr itself


@functools.lru_cache(maxsize=1024)
def compile_header_regex(pattern: str) -> Any:
    """The compiled RE2 pattern; ValueError (read by pydantic) when RE2 refuses it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        reason = e.args[0].decode("utf-8", "replace") if e.args else str(e)
        raise ValueError(
            f"not a regular expression RE2 can run ({reason[:80]}); "
            "backreferences and lookaround are not supported"
        ) from None


def check_header_regex(pattern: str) -> str:
    """Pydantic validator: ``pattern`` compiles, so it cannot fail on a live request."""
    compile_header_regex(pattern)
    return pattern


def header_matches(pattern: str, value: str) -> bool:
    """True when ``pattern`` is found in the first MAX_HEADER_VALUE_CHARS of ``value``."""
    return compile_header_regex(pattern).search(value[:MAX_HEADER_VALUE_CHARS]) is not None
