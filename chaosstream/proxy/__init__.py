"""The data path: the reverse proxy, its WebSocket twin, header rules and the recorder."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosstream.proxy.record import Exchange, JsonlSink, Recorder
    from chaosstream.proxy.server import ChaosProxy

__all__ = [
    "ChaosProxy",
    "Exchange",
    "JsonlSink",
    "Recorder",
]

_HOME = {
    "ChaosProxy": "chaosstream.proxy.server",
    "Exchange": "chaosstream.proxy.record",
    "JsonlSink": "chaosstream.proxy.record",
    "Recorder": "chaosstream.proxy.record",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the face loads a module on first use, so `chaosstream --help`
    # and the lower layers do not pay for what they never touch.
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
