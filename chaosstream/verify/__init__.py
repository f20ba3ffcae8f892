"""From recorded exchanges and client signals to verdicts and reports."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosstream.verify.battery import battery
    from chaosstream.verify.expectations import (
        ClientRun,
        Evidence,
        Observed,
        Verdict,
        evaluate,
        observe,
    )
    from chaosstream.verify.results import RunReport, ScenarioResult
    from chaosstream.verify.scenario import Scenario, load_scenarios

__all__ = [
    "ClientRun",
    "Evidence",
    "Observed",
    "RunReport",
    "Scenario",
    "ScenarioResult",
    "Verdict",
    "battery",
    "evaluate",
    "load_scenarios",
    "observe",
]

_HOME = {
    "ClientRun": "chaosstream.verify.expectations",
    "Evidence": "chaosstream.verify.expectations",
    "Observed": "chaosstream.verify.expectations",
    "RunReport": "chaosstream.verify.results",
    "Scenario": "chaosstream.verify.scenario",
    "ScenarioResult": "chaosstream.verify.results",
    "Verdict": "chaosstream.verify.expectations",
    "battery": "chaosstream.verify.battery",
    "evaluate": "chaosstream.verify.expectations",
    "load_scenarios": "chaosstream.verify.scenario",
    "observe": "chaosstream.verify.expectations",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the face loads a module on first use, so `chaosstream --help`
    # and the lower layers do not pay for what they never touch.
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
