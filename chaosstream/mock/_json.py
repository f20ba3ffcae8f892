"""Parsing JSON a client sent, with a cap on nesting (issue 10, item 9)."""

from __future__ import annotations

import json
from typing import Any

# Real requests nest about ten levels (messages, content parts, tool schemas a few
# more). The cap stays far under Python's recursion limit (1000), so json.loads
# and every json.dumps of a parsed body afterwards (prompt_key) cannot raise
# RecursionError, which aiohttp would answer with a 500.
MAX_JSON_DEPTH = 128


class JsonTooDeep(ValueError):
    """The JSON nests deeper than :data:`MAX_JSON_DEPTH`."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is nested too deeply (more than {MAX_JSON_DEPTH} levels)")


def loads_bounded(raw: bytes | str, what: str = "request body") -> Any:
    """``json.loads`` that raises ValueError (never RecursionError) past the depth cap."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JsonTooDeep(what) from None
    if not _depth_within(value, MAX_JSON_DEPTH):
        raise JsonTooDeep(what)
    return value


def _depth_within(value: Any, limit: int) -> bool:
    # Iterative, so checking a deep value cannot itself recurse too far.
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True
