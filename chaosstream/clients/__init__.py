"""What runs a client under test: a command, a browser page, the scenario runner."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosstream.clients.browser import PageDriver
    from chaosstream.clients.command import client_env, run_client
    from chaosstream.clients.runner import RunOptions, run_scenarios

__all__ = [
    "PageDriver",
    "RunOptions",
    "client_env",
    "run_client",
    "run_scenarios",
]

_HOME = {
    "PageDriver": "chaosstream.clients.browser",
    "RunOptions": "chaosstream.clients.runner",
    "client_env": "chaosstream.clients.command",
    "run_client": "chaosstream.clients.command",
    "run_scenarios": "chaosstream.clients.runner",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the face loads a module on first use, so `chaosstream --help`
    # and the lower layers do not pay for what they never touch.
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
