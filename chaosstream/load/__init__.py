"""Streaming load under chaos: many users on bad networks, run by Locust.

The faults of a profile act on each simulated user's own socket (a slow
reader, a cut, a stall), so the server under load meets real bad clients.
``engine`` imports Locust (which monkey-patches the process for gevent) and is
loaded only by ``chaosstream load``; the other modules are plain Python.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosstream.load.client import stream_attempt
    from chaosstream.load.metrics import Answer, Attempt, Histogram, LoadStats, ProfileStats
    from chaosstream.load.plan import LoadPlan, MixEntry, RetryPolicy, parse_mix
    from chaosstream.load.report import Objectives, check_objectives, load_document

__all__ = [
    "Answer",
    "Attempt",
    "Histogram",
    "LoadPlan",
    "LoadStats",
    "MixEntry",
    "Objectives",
    "ProfileStats",
    "RetryPolicy",
    "check_objectives",
    "load_document",
    "parse_mix",
    "stream_attempt",
]

_HOME = {
    "Answer": "chaosstream.load.metrics",
    "Attempt": "chaosstream.load.metrics",
    "Histogram": "chaosstream.load.metrics",
    "LoadStats": "chaosstream.load.metrics",
    "ProfileStats": "chaosstream.load.metrics",
    "LoadPlan": "chaosstream.load.plan",
    "MixEntry": "chaosstream.load.plan",
    "RetryPolicy": "chaosstream.load.plan",
    "parse_mix": "chaosstream.load.plan",
    "Objectives": "chaosstream.load.report",
    "check_objectives": "chaosstream.load.report",
    "load_document": "chaosstream.load.report",
    "stream_attempt": "chaosstream.load.client",
}


def __getattr__(name: str) -> Any:
    # PEP 562: nothing is imported until used, and never the Locust engine.
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
