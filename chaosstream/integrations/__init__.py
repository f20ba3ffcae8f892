"""Ways in from outside: the control API, Prometheus metrics, the pytest plugin."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosstream.integrations.control import ControlServer
    from chaosstream.integrations.metrics import ProxyMetrics

__all__ = [
    "ControlServer",
    "ProxyMetrics",
]

_HOME = {
    "ControlServer": "chaosstream.integrations.control",
    "ProxyMetrics": "chaosstream.integrations.metrics",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the face loads a module on first use, so `chaosstream --help`
    # and the lower layers do not pay for what they never touch.
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
