"""Event-loop choice shared by the benchmark processes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, Any], use_uvloop: bool) -> Any:
    """Run ``main`` on uvloop when asked (and installed), else on asyncio's default loop."""
    if use_uvloop:
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def have_uvloop() -> bool:
    """True where uvloop is installed (a dependency of chaosstream everywhere but Windows)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
